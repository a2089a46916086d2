"""Active probes against real backends: thresholds, hangs, 405 to HEAD, flapping, jitter."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from frp_testing import unused_port

from frp_health import HealthChecker, StateChange, TargetState


async def test_target_goes_down_after_threshold_and_comes_back(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], unhealthy_threshold=3, healthy_threshold=2)
    changes: list[StateChange] = []
    checker.subscribe(changes.append)
    await checker.check_all()
    assert checker.snapshot()[app.url].state is TargetState.HEALTHY

    app.mode = "fail"
    for _ in range(2):
        await checker.check_all()
        assert checker.is_healthy(app.url)  # hysteresis: 1 and 2 failures are not enough
    await checker.check_all()
    snap = checker.snapshot()[app.url]
    assert snap.state is TargetState.UNHEALTHY
    assert snap.last_error == "HTTP 500"
    assert "3 probes in a row failed" in snap.reason

    app.mode = "ok"
    await checker.check_all()
    assert not checker.is_healthy(app.url)  # one success is not enough
    await checker.check_all()
    assert checker.is_healthy(app.url)
    assert [(c.old, c.new) for c in changes] == [
        (TargetState.UNKNOWN, TargetState.HEALTHY),
        (TargetState.HEALTHY, TargetState.UNHEALTHY),
        (TargetState.UNHEALTHY, TargetState.HEALTHY),
    ]
    assert changes[-1].admitted
    assert changes[-1].snapshot.is_new
    await checker.destroy()


async def test_first_probe_decides_either_way(backend) -> None:
    up, failing = backend(), backend()
    failing.mode = 503
    checker = HealthChecker([up.url, failing.url], unhealthy_threshold=5, healthy_threshold=5)
    await checker.check_all()
    assert checker.get_healthy_targets() == [up.url]
    assert checker.snapshot()[failing.url].reason == "first probe failed: HTTP 503"
    await checker.destroy()


async def test_flapping_target_keeps_its_state(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], unhealthy_threshold=3, healthy_threshold=2)
    changes: list[StateChange] = []
    await checker.check_all()
    checker.subscribe(changes.append)
    for mode in ["fail", "ok", "fail", "fail", "ok", "fail", "ok"]:
        app.mode = mode
        await checker.check_all()
        assert checker.is_healthy(app.url)
    assert changes == []
    await checker.destroy()


async def test_refused_connection_marks_down(backend) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    checker = HealthChecker([url])
    await checker.check_all()
    snap = checker.snapshot()[url]
    assert snap.state is TargetState.UNHEALTHY
    assert snap.last_error is not None
    assert snap.last_error.startswith("connect_error")
    await checker.destroy()


async def test_hanging_target_times_out_and_others_are_unaffected(backend) -> None:
    hanging, up = backend(), backend()
    hanging.mode = "hang"
    checker = HealthChecker([{"host": hanging.url, "timeout": 0.3}, {"host": up.url}])
    await checker.check_all()
    assert checker.get_healthy_targets() == [up.url]
    assert checker.snapshot()[hanging.url].last_error.startswith("timeout")
    await checker.destroy()


async def test_per_target_timeout_overrides_global(backend) -> None:
    hanging = backend()
    hanging.mode = "hang"
    checker = HealthChecker([{"host": hanging.url, "timeout": 0.2}], timeout=60)
    await checker.check_all()  # would take a minute with the global timeout
    assert not checker.is_healthy(hanging.url)
    await checker.destroy()


@pytest.mark.parametrize("mode", ["head405", "head501"])
async def test_head_refused_falls_back_to_get_and_remembers(backend, mode: str) -> None:
    app = backend()
    app.mode = mode
    checker = HealthChecker([app.url])
    await checker.check_all()
    assert checker.is_healthy(app.url)
    assert checker.snapshot()[app.url].probe_method == "GET"
    await checker.check_all()
    assert app.methods() == ["HEAD", "GET", "GET"]
    await checker.destroy()


async def test_redirects_are_not_followed(backend) -> None:
    app = backend()
    app.mode = "redirect"
    checker = HealthChecker([app.url])
    strict = HealthChecker([app.url], expected_statuses=[200])
    await checker.check_all()
    await strict.check_all()
    assert checker.is_healthy(app.url)  # 302 is in the default 200-399
    assert not strict.is_healthy(app.url)
    assert strict.snapshot()[app.url].last_error == "HTTP 302"
    assert "/elsewhere" not in [p for _, p, _ in app.requests]
    await checker.destroy()
    await strict.destroy()


async def test_own_client_keeps_no_cookies(backend) -> None:
    app = backend()
    app.mode = "cookie"
    checker = HealthChecker([app.url])
    await checker.check_all()
    await checker.check_all()
    assert len(app.requests) == 2
    assert all("cookie" not in headers for _, _, headers in app.requests)
    await checker.destroy()


async def test_endless_body_is_read_only_a_little(backend) -> None:
    app = backend()
    app.mode = "endless"
    checker = HealthChecker([app.url], method="GET", timeout=30)
    await checker.check_all()  # reading it all would hit the 30 s deadline and fail
    assert checker.is_healthy(app.url)
    await checker.destroy()


async def test_paths_headers_and_prefixes(backend) -> None:
    app = backend()
    checker = HealthChecker(
        [
            {
                "host": app.url + "/api/",
                "pingpath": "healthz",
                "headers": {"X-Probe": "yes"},
                "method": "GET",
                "expected_statuses": [200],
            },
            {"host": app.url},
        ],
        headers={"Authorization": "Bearer t"},
    )
    await checker.check_all()
    assert checker.targets == [app.url + "/api", app.url]
    seen = {(method, path) for method, path, _ in app.requests}
    assert seen == {("GET", "/api/healthz"), ("HEAD", "/")}
    for _, path, headers in app.requests:
        assert headers["authorization"] == "Bearer t"
        assert headers["user-agent"].startswith("frp-health/")
        assert (headers.get("x-probe") == "yes") == (path == "/api/healthz")
    await checker.destroy()


async def test_same_host_different_ports_are_distinct(backend) -> None:
    up, failing = backend(), backend()
    failing.mode = "fail"
    checker = HealthChecker([up.url, failing.url])
    await checker.check_all()
    assert checker.status[up.url] is not False
    assert checker.status[failing.url] is False
    await checker.destroy()


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.9), (0.5, 1.0), (1.0, 1.1)])
async def test_jitter_spreads_the_next_probe(backend, clock, draw: float, factor: float) -> None:
    app = backend()
    checker = HealthChecker([app.url], interval=10, jitter=0.1, clock=clock, random=lambda: draw)
    await checker.check_all()
    snap = checker.snapshot()[app.url]
    assert snap.last_probe_at == clock.now
    assert snap.next_probe_at == pytest.approx(clock.now + 10 * factor)
    await checker.destroy()


async def test_down_targets_use_unhealthy_interval(backend, clock) -> None:
    up, failing = backend(), backend()
    failing.mode = "fail"
    checker = HealthChecker(
        [up.url, failing.url], interval=10, unhealthy_interval=30, jitter=0, clock=clock
    )
    await checker.check_all()
    snaps = checker.snapshot()
    assert snaps[up.url].next_probe_at == clock.now + 10
    assert snaps[failing.url].next_probe_at == clock.now + 30
    await checker.destroy()


async def test_latency_ewma_and_last_sample(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url])
    await checker.check_all()
    await checker.check_all()
    snap = checker.snapshot()[app.url]
    assert snap.probe_latency is not None
    assert snap.probe_latency > 0
    assert snap.probe_latency_ewma is not None
    assert snap.probe_latency_ewma > 0
    assert checker.status[app.url] == pytest.approx(snap.probe_latency_ewma * 1000)
    await checker.destroy()


async def test_external_client_is_used(backend) -> None:
    app = backend()
    async with httpx.AsyncClient(headers={"X-Client": "mine"}) as client:
        checker = HealthChecker([app.url], httpx_client=client)
        await checker.check_all()
        await checker.destroy()
        assert not client.is_closed
    assert app.requests[0][2]["x-client"] == "mine"


async def test_ejected_targets_keep_the_normal_interval(backend, clock) -> None:
    one, two = backend(), backend()
    checker = HealthChecker(
        [one.url, two.url], interval=10, unhealthy_interval=60, jitter=0, clock=clock
    )
    await checker.check_all()
    for _ in range(5):
        checker.report(one.url, "reset")
    one.mode = "fail"
    await checker.check_all()  # one failed probe: still ejected, not yet unhealthy
    snap = checker.snapshot()[one.url]
    assert snap.state is TargetState.EJECTED
    assert snap.next_probe_at == clock.now + 10  # probed as often as before: it may pass
    await checker.destroy()


async def test_passive_only_check_all_probes_but_schedules_nothing(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url], active=False, unhealthy_threshold=1)
    app.mode = "fail"
    await checker.check_all()
    snap = checker.snapshot()[app.url]
    assert snap.state is TargetState.UNHEALTHY
    assert snap.next_probe_at is None
    await checker.destroy()
    assert app.methods() == ["HEAD"]


async def test_target_that_drops_connections_is_down_with_reset() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the request has started: hang up without answering
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, HealthChecker([url]) as checker:
        snap = checker.snapshot()[url]
        assert snap.state is TargetState.UNHEALTHY
        assert snap.last_error is not None
        assert snap.last_error.startswith("reset: RemoteProtocolError")
