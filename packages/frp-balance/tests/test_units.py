"""The balancer's decisions, driven through its public API with a fake clock and seeded rng."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frp_balance import HashRing, LoadBalancer, PassiveHealth, PeakEwma, Strategy

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Checker:
    """A health source shaped like the seed HealthChecker (input, not under test)."""

    def __init__(self, targets: Sequence[str], *, personalized: bool = False) -> None:
        self.targets = list(targets)
        self.status: dict[str, float | bool] = dict.fromkeys(self.targets, 1.0)
        self.is_personalized = personalized
        self.target_configs: dict[str, dict[str, Any]] = {t: {} for t in self.targets}
        self.last_update = 1.0
        self.reports: list[tuple[str, str, float | None]] = []

    def get_healthy_targets(self) -> list[str]:
        return [t for t in self.targets if self.status[t] is not False]

    def get_response_times(self) -> Mapping[str, float]:
        return {t: float(v) for t, v in self.status.items() if v is not False}

    def report(self, target: str, outcome: str, latency: float | None = None) -> None:
        self.reports.append((target, outcome, latency))


def test_round_robin_follows_list_order_like_the_seed() -> None:
    lb = LoadBalancer([A, B, C])
    assert [lb.get() for _ in range(7)] == [A, B, C, A, B, C, A]


def test_peek_does_not_advance_and_set_index_moves_next_pick() -> None:
    lb = LoadBalancer([A, B, C])
    assert lb.peek() == lb.peek() == A
    assert lb.get() == A
    lb.set_index(2)
    assert [lb.get() for _ in range(4)] == [C, A, B, C]
    with pytest.raises(IndexError):
        lb.set_index(3)
    assert LoadBalancer([]).get() is None


def test_smooth_weighted_round_robin_interleaves_like_nginx() -> None:
    lb = LoadBalancer([A, B, C], weights={A: 5})
    assert [lb.get() for _ in range(7)] == [A, A, B, A, C, A, A]


def test_duplicate_urls_in_a_list_keep_their_share() -> None:
    lb = LoadBalancer([A, A, B])
    assert Counter(lb.get() for _ in range(30)) == {A: 20, B: 10}
    assert lb.get_all() == [A, B]


def test_bad_configuration_raises_clearly() -> None:
    with pytest.raises(ValueError, match="absolute"):
        LoadBalancer(["localhost:8080"])
    with pytest.raises(ValueError, match="strategy"):
        LoadBalancer([A], strategy="fastest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hash_key"):
        LoadBalancer([A], strategy="hash", hash_key="query:x")
    with pytest.raises(TypeError):
        LoadBalancer(object())  # type: ignore[arg-type]


def test_health_mode_seed_rules() -> None:
    checker = Checker([A, B])
    lb = LoadBalancer(checker)
    assert lb.strategy == "latency"
    assert lb.get_all() == [A, B]
    with pytest.raises(RuntimeError):
        lb.set_index(0)
    checker.status[A] = checker.status[B] = False
    assert lb.get() is None


def test_max_requests_resets_with_each_health_check() -> None:
    checker = Checker([A, B])
    lb = LoadBalancer(checker, strategy="round_robin")
    lb.max_requests = 2
    assert lb.max_requests == 2
    assert sorted(str(lb.get()) for _ in range(4)) == [A, A, B, B]
    assert lb.get() is None  # both used their budget for this interval
    checker.last_update = 2.0  # the checker ran again
    assert lb.get() is not None


def test_personalised_limits_and_global_max_requests_raises() -> None:
    checker = Checker([A, B], personalized=True)
    checker.target_configs[A] = {"host": A, "maxrequests": 1}
    lb = LoadBalancer(checker, strategy="round_robin")
    with pytest.raises(RuntimeError):
        _ = lb.max_requests
    with pytest.raises(RuntimeError):
        lb.max_requests = 3
    assert [lb.get() for _ in range(3)] == [A, B, B]


def test_concurrency_cap_skips_a_full_target_and_frees_on_done() -> None:
    lb = LoadBalancer([A, B], max_in_flight={A: 1}, strategy="round_robin")
    first = lb.route({"type": "http"})
    assert first.pick([]) == A
    assert [lb.route({"type": "http"}).pick([]) for _ in range(2)] == [B, B]
    first.done(A, "success", 0.01)
    assert lb.in_flight(A) == 0


def test_a_refused_attempt_fails_over_to_every_other_target_outside_the_retry_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="frp_balance")
    checker = Checker([A, B, C])
    lb = LoadBalancer(checker, strategy="round_robin")
    attempts = lb.route({"type": "http"})
    first = attempts.pick([])
    assert first == A
    attempts.done(A, "connect_error", 0.001)
    second = attempts.pick([A])
    assert second in (B, C)
    attempts.done(str(second), "connect_error", 0.001)
    third = attempts.pick([A, str(second)])  # never reached a target: not a retry
    assert third == ({B, C} - {second}).pop()
    attempts.done(str(third), "connect_error", 0.001)
    assert attempts.pick([A, B, C]) is None  # every target tried once
    assert [r[1] for r in checker.reports] == ["connect_error"] * 3
    stats = lb.stats()
    assert (stats["requests"], stats["failovers"]) == (1, 2)
    assert (stats["retries"], stats["retries_denied"]) == (0, 0)
    assert f"failing over to {second} after connect_error from {A}" in caplog.text
    assert stats["in_flight"] == 0


def test_an_attempt_that_reached_its_target_is_retried_once_on_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="frp_balance")
    lb = LoadBalancer([A, B, C], strategy="round_robin")
    attempts = lb.route({"type": "http"})
    assert attempts.pick([]) == A
    attempts.done(A, "reset", 0.001)
    second = attempts.pick([A])
    assert second in (B, C)
    attempts.done(str(second), "timeout", 0.001)
    assert attempts.pick([A, str(second)]) is None  # default: one retry
    stats = lb.stats()
    assert (stats["requests"], stats["retries"], stats["retries_denied"]) == (1, 1, 1)
    assert stats["failovers"] == 0
    assert f"retrying on {second} after reset from {A}" in caplog.text


def test_a_connect_failure_after_a_retry_still_fails_over() -> None:
    lb = LoadBalancer([A, B, C], strategy="round_robin")
    attempts = lb.route({"type": "http"})
    assert attempts.pick([]) == A
    attempts.done(A, "reset", 0.001)
    second = str(attempts.pick([A]))  # the one retry
    attempts.done(second, "connect_error", 0.001)
    assert attempts.pick([A, second]) == ({B, C} - {second}).pop()
    assert (lb.stats()["retries"], lb.stats()["failovers"]) == (1, 1)


def test_retry_budget_limits_concurrent_retries() -> None:
    lb = LoadBalancer([A, B], retries=5, min_retries=2, retry_budget=0.0)
    reqs = [lb.route({"type": "http"}) for _ in range(3)]
    for r in reqs:
        t = r.pick([])
        r.done(str(t), "reset", 0.0)
    retried = [r.pick([A if i % 2 else B]) for i, r in enumerate(reqs)]
    assert retried.count(None) == 1  # a third concurrent retry is over the budget
    assert lb.stats()["retries_denied"] == 1


def test_a_spent_retry_budget_does_not_stop_failover_after_a_connect_failure() -> None:
    """The soak's 502: retries in flight had spent the budget when a request found one
    target refusing connections; it must still go to the other one."""
    lb = LoadBalancer([A, B], retries=1, min_retries=0, retry_budget=0.0)
    spender = lb.route({"type": "http"})
    first = str(spender.pick([]))
    spender.done(first, "reset", 0.0)
    assert spender.pick([first]) is None  # no budget for a retry
    refused = lb.route({"type": "http"})
    target = str(refused.pick([]))
    refused.done(target, "connect_error", 0.0)
    assert refused.pick([target]) == ({A, B} - {target}).pop()
    assert (lb.stats()["failovers"], lb.stats()["retries_denied"]) == (1, 1)


def test_no_target_is_counted_and_panic_mode_routes_over_all() -> None:
    checker = Checker([A, B, C])
    checker.status[A] = checker.status[B] = False
    strict = LoadBalancer(checker)
    assert strict.route({"type": "http"}).pick([]) == C
    checker.status[C] = False
    assert strict.route({"type": "http"}).pick([]) is None
    assert strict.stats()["no_target"] == 1
    panic = LoadBalancer(checker, panic_threshold=0.5)
    assert panic.route({"type": "http"}).pick([]) in (A, B, C)
    assert panic.stats()["panic"] == 1


def test_done_twice_does_not_corrupt_in_flight() -> None:
    lb = LoadBalancer([A])
    r = lb.route({"type": "http"})
    r.pick([])
    r.done(A, "success", 0.1)
    r.done(A, "success", 0.1)
    assert lb.in_flight() == 0


def test_latency_strategy_prefers_the_faster_target_without_herding() -> None:
    clock = Clock()
    lb = LoadBalancer(Checker([A, B]), rng=random.Random(1), clock=clock)
    for target, rtt in ((A, 0.010), (B, 0.050)):  # one completed request each
        r = lb.route({"type": "http"})
        while (t := r.pick([])) != target:
            r.done(str(t), "client_abort", 0.0)
            r = lb.route({"type": "http"})
        r.done(target, "success", rtt)
    open_ = [lb.route({"type": "http"}) for _ in range(12)]
    picks = Counter(o.pick([]) for o in open_)
    assert picks[A] > picks[B] > 0  # cost grows with in-flight, so B takes some load


def test_new_target_gets_one_request_until_its_first_response() -> None:
    clock = Clock()
    checker = Checker([A, B])
    lb = LoadBalancer(checker, rng=random.Random(3), clock=clock)
    warm = lb.route({"type": "http"})
    t = str(warm.pick([]))
    warm.done(t, "success", 0.5)  # A or B is warm and slow; the other is new
    other = B if t == A else A
    checker.status[other] = 0.001  # its probe says it is very fast
    picks = [lb.route({"type": "http"}).pick([]) for _ in range(10)]
    assert picks.count(other) == 1


def test_failures_penalise_the_latency_estimate() -> None:
    clock = Clock()
    lb = LoadBalancer(Checker([A, B]), rng=random.Random(5), clock=clock)
    outcome = {A: "connect_error", B: "success"}  # a refused connection fails fast
    for _ in range(2):
        r = lb.route({"type": "http"})
        t = str(r.pick([]))
        r.done(t, outcome[t], 0.001)
    stats = lb.stats()["targets"]
    assert stats[A]["latency"] >= 1.0 > stats[B]["latency"]
    assert stats[A]["connect_error"] == 1


def test_hash_keys_from_client_header_and_cookie() -> None:
    targets = [A, B, C]
    by_client = LoadBalancer(targets, strategy="hash")
    by_header = LoadBalancer(targets, strategy="hash", hash_key="header:X-User")
    by_cookie = LoadBalancer(targets, strategy="hash", hash_key="cookie:session")
    scope = {
        "type": "http",
        "client": ("10.1.2.3", 5555),
        "headers": [(b"x-user", b"alice"), (b"cookie", b"a=1; session=s3cr3t")],
    }
    assert by_client.route(scope).key == "10.1.2.3"
    assert by_header.route(scope).key == "alice"
    assert by_cookie.route(scope).key == "s3cr3t"
    same = {by_header.route(scope).pick([]) for _ in range(20)}
    assert len(same) == 1


def test_hash_falls_through_to_the_ring_successor_when_a_target_is_down() -> None:
    checker = Checker([A, B, C])
    lb = LoadBalancer(checker, strategy="hash", hash_key=lambda s: s["path"])
    keys = [f"/k{i}" for i in range(300)]
    before = {k: lb.route({"type": "http", "path": k}).pick([]) for k in keys}
    checker.status[B] = False
    after = {k: lb.route({"type": "http", "path": k}).pick([]) for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != B)
    assert all(after[k] in (A, C) for k in keys)


def test_hash_ring_moves_about_one_nth_of_keys_when_a_target_is_added() -> None:
    urls = [f"http://10.0.0.{i}:80" for i in range(1, 5)]
    keys = [f"user-{i}" for i in range(4000)]
    old, new = HashRing(urls), HashRing([*urls, "http://10.0.0.5:80"])
    moved = sum(old.lookup(k, bool) != new.lookup(k, bool) for k in keys)
    assert 0.12 < moved / len(keys) < 0.28  # ideal 1/5
    shares = Counter(old.lookup(k, bool) for k in keys)
    assert max(shares.values()) < 1.25 * min(shares.values())


def test_passive_health_ejects_after_consecutive_failures_but_never_the_last() -> None:
    clock = Clock()
    health = PassiveHealth([A, B], failures=2, ejection=10, clock=clock)
    for _ in range(2):
        health.report(A, "connect_error", 0.0)
    assert health.get_healthy_targets() == [B]
    for _ in range(5):
        health.report(B, "connect_error", 0.0)
    assert health.get_healthy_targets() == [B]  # fail open: the last one stays
    clock.now += 10
    assert health.get_healthy_targets() == [A, B]
    for _ in range(2):
        health.report(A, "connect_error", 0.0)
    clock.now += 10
    assert health.get_healthy_targets() == [B]  # second ejection in a row lasts twice as long


def test_list_mode_stops_sending_to_a_refusing_target() -> None:
    lb = LoadBalancer([A, B])
    sent = Counter[str]()
    for _ in range(40):
        r = lb.route({"type": "http"})
        t = str(r.pick([]))
        sent[t] += 1
        r.done(t, "connect_error" if t == A else "success", 0.001)
    assert sent[A] == 5  # frp-health ejects after five consecutive gateway failures (Envoy)


def test_peak_ewma_jumps_up_and_decays_over_time() -> None:
    e = PeakEwma(tau=10.0)
    assert e.get(0.0) is None
    e.observe(0.010, 0.0)
    e.observe(0.100, 0.1)
    assert e.get(0.1) == pytest.approx(0.100)
    e.observe(0.010, 10.1)
    assert 0.03 < (e.get(10.1) or 0) < 0.05
    assert (e.get(100.0) or 1) < 0.001


def test_list_targets_keep_their_spelling_and_share_health_with_the_checker() -> None:
    lb = LoadBalancer([A + "/", B])
    assert lb.peek() == A + "/"
    for _ in range(12):
        r = lb.route({"type": "http"})
        t = str(r.pick([]))
        r.done(t, "connect_error" if t == A + "/" else "success", 0.0)
    assert lb.stats()["targets"][A + "/"]["healthy"] is False
    assert lb.stats()["targets"][A + "/"]["picks"] == 5
    assert lb.get_all() == [A + "/", B]


def test_max_requests_in_list_mode_uses_a_clock_window() -> None:
    clock = Clock()
    lb = LoadBalancer([A, B], clock=clock, window=10.0)
    lb.max_requests = 1
    assert [lb.get(), lb.get(), lb.get()] == [A, B, None]
    clock.now += 10
    assert lb.get() is not None


def test_weight_and_max_in_flight_from_the_checkers_target_dicts() -> None:
    from frp_health import HealthChecker

    checker = HealthChecker([{"host": A, "weight": 3}, {"host": B, "max_in_flight": 1}])
    lb = LoadBalancer(checker, strategy="round_robin")
    assert [lb.get() for _ in range(4)] == [A, A, B, A]
    held = [lb.route({"type": "http"}).pick([]) for _ in range(4)]  # A, A, B, A: B is full
    assert held.count(B) == 1
    assert {lb.route({"type": "http"}).pick([]) for _ in range(4)} == {A}


def test_per_target_options_accept_the_spelling_given_to_the_checker() -> None:
    """``weights`` and ``max_in_flight`` keyed by the URL as written for the checker (here
    with a trailing slash) apply to that target; a key naming no target is an error, not a
    silently ignored cap."""
    from frp_health import HealthChecker

    checker = HealthChecker([A + "/", B + "/"])
    lb = LoadBalancer(checker, strategy="round_robin", weights={A + "/": 3})
    assert Counter(lb.get() for _ in range(8)) == {checker.targets[0]: 6, checker.targets[1]: 2}
    lb = LoadBalancer(checker, strategy="round_robin", max_in_flight={A + "/": 1, B + "/": 1})
    held = [lb.route({"type": "http"}).pick([]) for _ in range(3)]
    assert held[2] is None  # both targets are at their cap
    for option in ("weights", "max_in_flight"):
        with pytest.raises(ValueError, match="not one of the targets"):
            LoadBalancer(checker, **{option: {C: 1}})
        with pytest.raises(ValueError, match="not one of the targets"):
            LoadBalancer([A, B], **{option: {C: 1}})


@given(st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_smooth_weighted_round_robin_gives_each_target_its_weight_per_cycle(
    weights: list[int],
) -> None:
    urls = [f"http://10.0.0.{i}:80" for i in range(len(weights))]
    lb = LoadBalancer(urls, weights=dict(zip(urls, weights, strict=True)))
    for _ in range(3):
        cycle = Counter(lb.get() for _ in range(sum(weights)))
        assert cycle == dict(zip(urls, weights, strict=True))


@pytest.mark.parametrize("strategy", ["latency", "least_requests", "random", "round_robin"])
def test_peek_predicts_the_next_get_and_changes_nothing(strategy: Strategy) -> None:
    lb = LoadBalancer(Checker([A, B, C]), strategy=strategy, rng=random.Random(11))
    for _ in range(20):
        predicted = lb.peek()
        assert lb.peek() == predicted
        assert lb.get() == predicted
