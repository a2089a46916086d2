"""Deterministic simulation: seeded randomness, a fake clock and virtual backends.

Each virtual backend serves with ``workers`` parallel workers, FIFO, with log-normal service
times; the balancer under test decides every request in virtual time.  Shares and tail
latencies are printed per strategy (``pytest -s``) so that a strategy change can be judged
without sockets; the assertions are on shares, herding and virtual-time latency only.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import Counter
from collections.abc import Mapping

import pytest

from frp_balance import LoadBalancer, Strategy


@dataclasses.dataclass
class Backend:
    url: str
    workers: int
    median: float  # service time, seconds
    probe_ms: float  # what an active probe measures (the seed's "fastest")
    free: list[float] = dataclasses.field(default_factory=list)

    def serve(self, now: float, rng: random.Random) -> float:
        """Queue one request arriving at ``now``; return its completion time."""
        if not self.free:
            self.free = [0.0] * self.workers
        start = max(now, heapq.heappop(self.free))
        end = start + self.median * math.exp(rng.gauss(0.0, 0.3))
        heapq.heappush(self.free, end)
        return end


class Probes:
    """The health source: every backend up, with fixed probe latencies."""

    def __init__(self, backends: list[Backend]) -> None:
        self.targets = [b.url for b in backends]
        self._probes = {b.url: b.probe_ms for b in backends}

    def get_healthy_targets(self) -> list[str]:
        return self.targets

    def get_response_times(self) -> Mapping[str, float]:
        return self._probes


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Result:
    shares: dict[str, float]
    p50: float
    p99: float
    makespan: float
    peak_in_flight: dict[str, int]


def backends() -> list[Backend]:
    """A fast, a medium and a slow backend; the probe ranks them correctly."""
    return [
        Backend("http://fast", workers=2, median=0.010, probe_ms=1.0),
        Backend("http://medium", workers=2, median=0.020, probe_ms=2.0),
        Backend("http://slow", workers=2, median=0.040, probe_ms=4.0),
    ]


def simulate(
    strategy: Strategy,
    servers: list[Backend],
    *,
    requests: int,
    rate: float | None = None,
    clients: int | None = None,
    seed: int = 7,
) -> Result:
    """Open loop (Poisson ``rate``) or closed loop (``clients`` back to back) in virtual time."""
    clock, rng = VirtualClock(), random.Random(seed)
    lb = LoadBalancer(Probes(servers), strategy=strategy, rng=random.Random(seed), clock=clock)
    by_url = {b.url: b for b in servers}
    events: list[tuple[float, int, str, object]] = []  # (time, seq, kind, payload)
    seq = 0

    def push(t: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    if clients is None:
        assert rate is not None
        t = 0.0
        for _ in range(requests):
            t += rng.expovariate(rate)
            push(t, "arrive", None)
    else:
        for _ in range(clients):
            push(0.0, "arrive", None)
    started, latencies, picks = 0, [], Counter[str]()
    peak: Counter[str] = Counter()
    end = 0.0
    for _ in range(4 * requests):  # bounded: each request is one arrival and one completion
        if not events:
            break
        now, _, kind, payload = heapq.heappop(events)
        clock.now = end = now
        if kind == "arrive":
            if started == requests:
                continue
            started += 1
            ip = f"10.0.{started % 250}.{started % 199}"
            attempts = lb.route({"type": "http", "client": (ip, 4000)})
            target = attempts.pick([])
            assert target is not None
            picks[target] += 1
            peak[target] = max(peak[target], lb.in_flight(target))
            push(by_url[target].serve(now, rng), "done", (attempts, target, now))
        else:
            attempts, target, began = payload  # type: ignore[misc]
            attempts.done(target, "success", now - began)
            latencies.append(now - began)
            if clients is not None:
                push(now, "arrive", None)
    assert len(latencies) == requests
    assert lb.in_flight() == 0
    latencies.sort()
    return Result(
        shares={b.url: picks[b.url] / requests for b in servers},
        p50=latencies[len(latencies) // 2],
        p99=latencies[int(len(latencies) * 0.99)],
        makespan=end,
        peak_in_flight=dict(peak),
    )


ALL: tuple[Strategy, ...] = (
    "round_robin",
    "latency",
    "least_requests",
    "random",
    "hash",
    "fastest_probe",
)


@pytest.fixture(scope="module")
def open_loop() -> dict[Strategy, Result]:
    """250 requests/s against 350/s of capacity (fast 200, medium 100, slow 50)."""
    results = {s: simulate(s, backends(), requests=3000, rate=250.0) for s in ALL}
    print("\nstrategy        fast  medium slow   p50 ms  p99 ms")
    for s, r in results.items():
        shares = "  ".join(f"{v:5.1%}" for v in r.shares.values())
        print(f"{s:15} {shares}  {r.p50 * 1000:6.1f}  {r.p99 * 1000:7.1f}")
    return results


def test_fastest_probe_herds_everything_onto_one_backend(open_loop: dict[str, Result]) -> None:
    herd = open_loop["fastest_probe"]
    assert herd.shares["http://fast"] == 1.0
    assert herd.p99 > 10 * open_loop["latency"].p99  # the fast backend is overloaded


def test_latency_strategy_uses_every_backend_by_speed(open_loop: dict[str, Result]) -> None:
    r = open_loop["latency"]
    fast, medium, slow = r.shares.values()
    assert fast > medium > slow > 0.02
    assert fast < 0.8  # no herding
    assert r.p99 < open_loop["round_robin"].p99  # round robin overloads the slow backend
    assert r.p99 < open_loop["random"].p99


def test_round_robin_and_hash_split_evenly(open_loop: dict[str, Result]) -> None:
    assert all(abs(v - 1 / 3) < 0.001 for v in open_loop["round_robin"].shares.values())
    assert all(abs(v - 1 / 3) < 0.06 for v in open_loop["hash"].shares.values())
    assert all(abs(v - 1 / 3) < 0.05 for v in open_loop["random"].shares.values())


def test_least_requests_beats_blind_splitting(open_loop: dict[str, Result]) -> None:
    r = open_loop["least_requests"]
    assert r.shares["http://fast"] > r.shares["http://slow"]
    assert r.p99 < open_loop["round_robin"].p99


def test_a_batch_finishes_sooner_than_pinning_it_to_the_fastest_backend() -> None:
    """16 clients, 400 requests back to back, two single-worker backends (10 ms and 20 ms)."""

    def pair() -> list[Backend]:
        return [
            Backend("http://fast", workers=1, median=0.010, probe_ms=1.0),
            Backend("http://slow", workers=1, median=0.020, probe_ms=2.0),
        ]

    spread = simulate("latency", pair(), requests=400, clients=16)
    pinned = simulate("fastest_probe", pair(), requests=400, clients=16)
    print(f"\nbatch makespan: latency {spread.makespan:.2f} s, pinned {pinned.makespan:.2f} s")
    assert pinned.shares["http://fast"] == 1.0
    assert min(spread.shares.values()) > 0.2
    assert spread.makespan < 0.8 * pinned.makespan  # ideal: 2/3


def test_new_targets_take_one_request_at_a_time_until_they_answer() -> None:
    burst = simulate("latency", backends(), requests=3, clients=3)
    assert burst.peak_in_flight == {"http://fast": 1, "http://medium": 1, "http://slow": 1}


def test_the_simulation_is_deterministic() -> None:
    assert simulate("latency", backends(), requests=500, rate=250.0) == simulate(
        "latency", backends(), requests=500, rate=250.0
    )


def test_latency_strategy_keeps_every_backend_in_use_at_low_load() -> None:
    r = simulate("latency", backends(), requests=1000, rate=50.0)
    fast, medium, slow = r.shares.values()
    print(f"\nlatency at 50 req/s: {fast:.1%} {medium:.1%} {slow:.1%}, p99 {r.p99 * 1000:.1f} ms")
    assert fast > medium > slow > 0.05  # faster ones more often, nobody starved of samples
