"""Passive health: reports of real traffic eject targets for a growing time (fake clock)."""

from __future__ import annotations

import enum

import pytest

from frp_health import HealthChecker, StateChange, TargetState

URLS = ["http://a:1", "http://b:2", "http://c:3"]


def fail(checker: HealthChecker, url: str, times: int, outcome: str = "http_5xx") -> None:
    for _ in range(times):
        checker.report(url, outcome)


def passive(clock, urls: list[str] = URLS, **options) -> HealthChecker:
    return HealthChecker(urls, active=False, clock=clock, **options)


@pytest.mark.parametrize("outcome", ["http_5xx", "connect_error", "timeout", "reset"])
def test_five_gateway_failures_in_a_row_eject(clock, outcome: str) -> None:
    checker = passive(clock)
    fail(checker, "http://a:1", 4, outcome)
    assert checker.is_healthy("http://a:1")
    assert checker.snapshot()["http://a:1"].consecutive_failures == 4
    checker.report("http://a:1", outcome)
    snap = checker.snapshot()["http://a:1"]
    assert snap.state is TargetState.EJECTED
    assert snap.ejection_count == 1
    assert snap.ejection_time_left == 30
    assert f"5 gateway failures in a row (last: {outcome})" in snap.reason
    assert snap.last_error == f"{outcome} (traffic)"
    assert checker.get_healthy_targets() == ["http://b:2", "http://c:3"]
    assert checker.status["http://a:1"] is False


def test_success_resets_and_local_outcomes_are_ignored(clock) -> None:
    checker = passive(clock)
    fail(checker, "http://a:1", 4)
    checker.report("http://a:1", "success", 0.02)
    fail(checker, "http://a:1", 4)
    assert checker.is_healthy("http://a:1")
    checker.report("http://a:1", "client_abort")
    checker.report("http://a:1", "local_limit")
    assert checker.snapshot()["http://a:1"].consecutive_failures == 4
    checker.report("http://a:1", "reset")
    assert not checker.is_healthy("http://a:1")


def test_outcome_enum_members_are_accepted(clock) -> None:
    class Outcome(enum.StrEnum):  # the shape of frp_core.Outcome
        SUCCESS = "success"
        TIMEOUT = "timeout"

    checker = passive(clock)
    fail(checker, "http://a:1", 5, Outcome.TIMEOUT)
    assert not checker.is_healthy("http://a:1")
    checker.report("http://b:2", Outcome.SUCCESS, 0.5)
    assert checker.snapshot()["http://b:2"].traffic_latency_ewma == 0.5


def test_ejection_time_grows_with_each_ejection_up_to_the_cap(clock) -> None:
    checker = passive(clock)
    readmissions: list[StateChange] = []
    checker.subscribe(lambda c: readmissions.append(c) if c.admitted else None)
    durations = []
    for _ in range(12):
        fail(checker, "http://a:1", 5)
        snap = checker.snapshot()["http://a:1"]
        assert snap.state is TargetState.EJECTED
        durations.append(snap.ejection_time_left)
        clock.advance(snap.ejection_time_left - 1)
        assert not checker.is_healthy("http://a:1")
        clock.advance(1)
        assert checker.is_healthy("http://a:1")
    assert durations == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    assert checker.snapshot()["http://a:1"].ejection_count == 12
    assert len(readmissions) == 12
    assert readmissions[0].reason == "ejection time passed"
    assert readmissions[0].at == 1030.0


def test_ejection_multiplier_is_forgiven_over_time(clock) -> None:
    checker = passive(clock)
    fail(checker, "http://a:1", 5)
    clock.advance(30)
    fail(checker, "http://a:1", 5)
    assert checker.snapshot()["http://a:1"].ejection_time_left == 60  # flapping: longer
    clock.advance(60 + 2 * 30)  # two base periods of good behaviour after re-admission
    fail(checker, "http://a:1", 5)
    assert checker.snapshot()["http://a:1"].ejection_time_left == 30


def test_failures_reported_while_ejected_do_not_extend_it(clock) -> None:
    checker = passive(clock)
    fail(checker, "http://a:1", 5)
    fail(checker, "http://a:1", 20)  # requests that were in flight at the ejection
    snap = checker.snapshot()["http://a:1"]
    assert snap.ejection_count == 1
    assert snap.ejection_time_left == 30
    assert snap.consecutive_failures == 0


def test_readmitted_target_is_new_until_a_request_is_reported(clock) -> None:
    checker = passive(clock)
    assert checker.snapshot()["http://a:1"].is_new  # never used yet
    checker.report("http://a:1", "success")
    assert not checker.snapshot()["http://a:1"].is_new
    fail(checker, "http://a:1", 5)
    clock.advance(30)
    snap = checker.snapshot()["http://a:1"]
    assert snap.is_new
    assert snap.admitted_at == clock.now
    checker.report("http://a:1", "success", 0.01)
    assert not checker.snapshot()["http://a:1"].is_new


def test_bad_reports_raise(clock) -> None:
    checker = passive(clock)
    with pytest.raises(ValueError, match="unknown outcome 'boom'"):
        checker.report("http://a:1", "boom")
    with pytest.raises(KeyError, match="not one of this checker's targets"):
        checker.report("http://z:9", "success")
    with pytest.raises(ValueError, match="latency"):
        checker.report("http://a:1", "success", -1.0)


def test_consecutive_failures_none_disables_ejection(clock) -> None:
    checker = passive(clock, consecutive_failures=None)
    fail(checker, "http://a:1", 50)
    assert checker.is_healthy("http://a:1")
    assert checker.snapshot()["http://a:1"].consecutive_failures == 50


def test_traffic_latency_feeds_status_in_passive_mode(clock) -> None:
    checker = passive(clock)
    checker.report("http://a:1", "success", 0.1)
    checker.report("http://a:1", "success", 0.2)
    ewma = checker.snapshot()["http://a:1"].traffic_latency_ewma
    assert ewma is not None
    assert 0.1 < ewma < 0.2
    assert checker.get_response_times()["http://a:1"] == pytest.approx(ewma * 1000)
    assert checker.status["http://b:2"] == 0.0  # no data yet: healthy, as in 0.4.0


async def test_passive_only_never_probes_and_owns_nothing(backend) -> None:
    app = backend()
    checker = HealthChecker([app.url, "http://127.0.0.1:1"], active=False)
    async with checker:
        assert not checker.running
        assert checker.get_healthy_targets() == [app.url, "http://127.0.0.1:1"]
        assert checker.snapshot()[app.url].next_probe_at is None
        fail(checker, "http://127.0.0.1:1", 5, "connect_error")
        assert checker.get_healthy_targets() == [app.url]
    assert checker.httpx_client is None
    assert app.requests == []


async def test_successful_probe_ends_an_ejection(backend, clock) -> None:
    one, two = backend(), backend()
    checker = HealthChecker([one.url, two.url], clock=clock)
    await checker.check_all()
    fail(checker, one.url, 5)
    assert checker.snapshot()[one.url].state is TargetState.EJECTED
    changes: list[StateChange] = []
    checker.subscribe(changes.append)
    await checker.check_all()  # the fake clock has not moved: only the probe re-admits
    assert checker.is_healthy(one.url)
    assert changes[0].new is TargetState.HEALTHY
    assert changes[0].reason == "a probe passed, which ends the ejection"
    await checker.destroy()


async def test_passive_failures_do_not_mark_actively_down(backend, clock) -> None:
    app = backend()
    checker = HealthChecker([app.url], clock=clock)  # one target: never ejected, see cap tests
    await checker.check_all()
    fail(checker, app.url, 10)
    await checker.check_all()
    assert checker.is_healthy(app.url)
    await checker.destroy()
