"""The 0.4.0 README's HealthChecker examples and API, verbatim, against real backends."""

from __future__ import annotations

import pytest
from frp_testing import unused_port

from frp_health import HealthChecker


def test_readme_standard_mode_constructs_verbatim() -> None:
    checker = HealthChecker(["http://localhost:8080", "http://localhost:8081"])
    assert checker.targets == ["http://localhost:8080", "http://localhost:8081"]
    assert checker.ping_path == "/"
    assert checker.target_configs == {"http://localhost:8080": {}, "http://localhost:8081": {}}

    checker = HealthChecker(["http://a", "http://b"], ping_path="/health")
    assert checker.ping_path == "/health"
    checker.ping_path = "/ready"
    assert checker.ping_path == "/ready"
    assert checker.is_personalized is False


def test_readme_personalized_mode_constructs_verbatim() -> None:
    checker = HealthChecker([
        {"host": "http://api-1", "pingpath": "/v1/status", "maxrequests": 100},
        {"host": "http://api-2", "pingpath": "/health"}
    ])  # fmt: skip
    assert checker.targets == ["http://api-1", "http://api-2"]
    assert checker.target_configs["http://api-1"]["maxrequests"] == 100
    assert "maxrequests" not in checker.target_configs["http://api-2"]
    assert checker.is_personalized is True
    with pytest.raises(RuntimeError, match="personalized"):
        _ = checker.ping_path
    with pytest.raises(RuntimeError, match="personalized"):
        checker.ping_path = "/x"


async def test_async_with_checks_immediately_in_the_0_4_0_shape(backend) -> None:
    up, failing = backend(), backend()
    failing.mode = "fail"
    down = f"http://127.0.0.1:{unused_port()}"
    checker = HealthChecker([up.url, failing.url, down], ping_path="/health")
    async with checker:
        status = checker.status
        assert isinstance(status[up.url], float)
        assert status[up.url] > 0
        assert status[failing.url] is False
        assert status[down] is False
        assert checker.get_healthy_targets() == [up.url]
        assert list(checker.get_response_times()) == [up.url]
        assert checker.get_fastest() == up.url
        assert checker.is_healthy(up.url)
        assert not checker.is_healthy(failing.url)
        assert not checker.is_healthy("http://127.0.0.1:1/not-a-target")
    assert up.requests[0][:2] == ("HEAD", "/health")


async def test_personalized_mode_probes_each_pingpath(backend) -> None:
    one, two = backend(), backend()
    checker = HealthChecker(
        [
            {"host": one.url, "pingpath": "/v1/status", "maxrequests": 100},
            {"host": two.url, "pingpath": "/health"},
        ]
    )
    async with checker:
        assert checker.get_healthy_targets() == [one.url, two.url]
    assert [p for _, p, _ in one.requests] == ["/v1/status"]
    assert [p for _, p, _ in two.requests] == ["/health"]


async def test_check_all_updates_status_and_last_update(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], unhealthy_threshold=1)
    before = checker.last_update
    await checker.check_all()
    assert checker.is_healthy(app.url)
    assert checker.last_update >= before
    app.mode = "fail"
    await checker.check_all()
    assert checker.status == {app.url: False}
    assert checker.get_fastest() is None
    await checker.destroy()


async def test_last_update_moves_once_per_round_over_every_target(backend) -> None:
    """0.4.0 probed the whole list each interval, and ``max_requests`` windows end at each
    ``last_update``.  Targets here keep their own jittered schedules, so probing some of
    them must not end the window: only a round that has covered every target does."""
    one, two, three = backend(), backend(), backend()
    checker = HealthChecker([one.url, two.url, three.url])
    start = checker.last_update
    await checker._round([one.url])
    await checker._round([two.url, one.url])
    assert checker.last_update == start
    await checker._round([three.url])
    assert checker.last_update > start
    after = checker.last_update
    await checker._round([two.url])
    assert checker.last_update == after
    await checker.check_all()
    assert checker.last_update > after
    await checker.destroy()
