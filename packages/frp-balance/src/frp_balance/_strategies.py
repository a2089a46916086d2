"""Pure target selection: each function picks among candidates and mutates only what it is given.

Candidates are always non-empty sequences of target URLs, in configuration order.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Literal

Strategy = Literal["round_robin", "latency", "least_requests", "random", "hash", "fastest_probe"]
STRATEGIES: tuple[Strategy, ...] = (
    "round_robin",
    "latency",
    "least_requests",
    "random",
    "hash",
    "fastest_probe",
)


def smooth_weighted(
    candidates: Sequence[str],
    weights: Mapping[str, int],
    current: MutableMapping[str, int],
    order: Callable[[str], int],
) -> str:
    """nginx's smooth weighted round robin: weights 5,1,1 give a,a,b,a,c,a,a (interleaved).

    ``current`` holds each target's running weight; ties go to the lowest ``order(target)``.
    """
    total = 0
    best: str | None = None
    for t in candidates:
        w = weights.get(t, 1)
        current[t] = current.get(t, 0) + w
        total += w
        if best is None or (current[t], -order(t)) > (current[best], -order(best)):
            best = t
    assert best is not None
    current[best] -= total
    return best


def two_choices(
    candidates: Sequence[str],
    cost: Callable[[str], float],
    rng: random.Random,
    tie: float = 1.0,
    idle: Callable[[str], bool] | None = None,
) -> str:
    """Power of two choices: the cheaper of two distinct random candidates.

    Costs within a factor ``tie`` of each other count as equal and the first random pick wins.
    When ``idle`` says both are idle, the pick is random with odds inverse to cost, so light
    traffic still reaches (and keeps measuring) every target, the faster ones more often.
    """
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(candidates, 2)
    ca, cb = cost(a), cost(b)
    if idle is not None and idle(a) and idle(b) and ca + cb > 0:
        return a if rng.random() * (ca + cb) < cb else b
    if ca <= cb or max(ca, cb) <= tie * min(ca, cb):
        return a
    return b


def weighted_random(
    candidates: Sequence[str], weights: Mapping[str, int], rng: random.Random
) -> str:
    """A random candidate, with probability proportional to its weight."""
    return rng.choices(candidates, weights=[weights.get(t, 1) for t in candidates])[0]


def argmin(candidates: Sequence[str], cost: Callable[[str], float]) -> str:
    """The cheapest candidate, the first one on ties (the seed's "fastest": it herds)."""
    return min(candidates, key=cost)


def _point(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring with ``replicas`` virtual nodes per target (stable across runs).

    Adding or removing one of N targets moves about 1/N of the keys.  ``lookup`` walks clockwise
    from the key's point to the first target accepted by ``allowed``, so a key whose target is
    down or already tried lands on its ring successor, and comes back when the target does.
    """

    def __init__(self, targets: Iterable[str], replicas: int = 1024) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        points = sorted(
            (_point(f"{t}#{i}"), t) for t in dict.fromkeys(targets) for i in range(replicas)
        )
        self._points = [p for p, _ in points]
        self._owners = [t for _, t in points]
        self._distinct = len(set(self._owners))

    def __len__(self) -> int:
        return len(self._points)

    def lookup(self, key: str, allowed: Callable[[str], bool]) -> str | None:
        """The first allowed target clockwise from ``key``; ``None`` when none is allowed."""
        n = len(self._points)
        if not n:
            return None
        start = bisect.bisect_left(self._points, _point(key)) % n
        seen: set[str] = set()
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner in seen:
                continue
            if allowed(owner):
                return owner
            seen.add(owner)
            if len(seen) == self._distinct:
                break
        return None
