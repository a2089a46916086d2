"""The cap on ejected targets: max_ejected_percent, at least one, never the last routable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frp_health import HealthChecker, TargetState
from frp_health._state import HealthTable, Policy, ejection_limit


def cluster(clock, n: int, **options) -> HealthChecker:
    return HealthChecker([f"http://h{i}" for i in range(n)], active=False, clock=clock, **options)


def eject_all(checker: HealthChecker) -> list[str]:
    """Fail every target five times in a row; return the ejected ones."""
    for url in checker.targets:
        for _ in range(5):
            checker.report(url, "http_5xx")
    return [u for u, s in checker.snapshot().items() if s.state is TargetState.EJECTED]


@pytest.mark.parametrize(
    ("n", "percent", "limit"),
    [
        (1, 10, 1),
        (2, 10, 1),
        (3, 10, 1),
        (10, 10, 1),
        (19, 10, 1),
        (20, 10, 2),
        (100, 10, 10),
        (3, 0, 1),
        (3, 100, 3),
        (10, 30, 3),
    ],
)
def test_limit_is_the_percentage_but_at_least_one(n: int, percent: float, limit: int) -> None:
    assert ejection_limit(n, percent) == limit


def test_one_target_is_never_ejected(clock) -> None:
    checker = cluster(clock, 1)
    assert eject_all(checker) == []
    for _ in range(20):
        checker.report("http://h0", "connect_error")
    snap = checker.snapshot()["http://h0"]
    assert snap.state is TargetState.HEALTHY
    assert snap.consecutive_failures == 25


@pytest.mark.parametrize("n", [2, 3, 10])
def test_small_clusters_eject_one_at_a_time(clock, n: int) -> None:
    checker = cluster(clock, n)
    assert eject_all(checker) == ["http://h0"]
    assert len(checker.get_healthy_targets()) == n - 1
    clock.advance(30)  # h0 comes back; the next failure of another target may eject it
    checker.report("http://h1", "http_5xx")
    assert [u for u, s in checker.snapshot().items() if s.ejection_time_left] == ["http://h1"]


def test_twenty_targets_eject_two(clock) -> None:
    assert eject_all(cluster(clock, 20)) == ["http://h0", "http://h1"]


def test_even_at_100_percent_the_last_routable_target_stays(clock) -> None:
    checker = cluster(clock, 3, max_ejected_percent=100)
    assert eject_all(checker) == ["http://h0", "http://h1"]
    assert checker.get_healthy_targets() == ["http://h2"]


def test_actively_unhealthy_targets_count_as_gone(clock) -> None:
    table = HealthTable(
        ["http://a", "http://b", "http://c"], Policy(max_ejected_percent=100), active=False, now=0.0
    )
    table.records["http://a"].active_up = False  # down by probes
    for _ in range(5):
        table.reported("http://b", "timeout", None, 1.0)
        table.reported("http://c", "timeout", None, 1.0)
    states = {u: r.state for u, r in table.records.items()}
    assert states == {
        "http://a": TargetState.UNHEALTHY,
        "http://b": TargetState.EJECTED,
        "http://c": TargetState.HEALTHY,
    }
    for _ in range(5):
        table.reported("http://a", "timeout", None, 1.0)
    assert table.records["http://a"].ejected_until is None  # no traffic to take away


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


OUTCOMES = ["success", "http_5xx", "connect_error", "timeout", "reset", "client_abort"]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    percent=st.sampled_from([0, 10, 50, 100]),
    events=st.lists(
        st.tuples(st.integers(0, 11), st.sampled_from([*OUTCOMES, "advance"])), max_size=200
    ),
)
def test_any_traffic_respects_the_cap_and_leaves_a_target(
    n: int, percent: float, events: list[tuple[int, str]]
) -> None:
    clock = _Clock()
    urls = [f"http://h{i}" for i in range(n)]
    checker = HealthChecker(urls, active=False, clock=clock, max_ejected_percent=percent)
    for index, event in events:
        if event == "advance":
            clock.now += 17
        else:
            checker.report(urls[index % n], event)
        snaps = checker.snapshot().values()
        ejected = [s for s in snaps if s.state is TargetState.EJECTED]
        assert len(ejected) <= ejection_limit(n, percent)
        assert any(s.healthy for s in snaps)
        assert all(0 < s.ejection_time_left <= 300 for s in ejected)
