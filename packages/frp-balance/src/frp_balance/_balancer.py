"""``LoadBalancer``: the seed's decision utility, with strategies, limits and failover."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ._attempts import Attempts
from ._ewma import Latencies
from ._keys import HashKey, key_func
from ._limits import Limits
from ._proxy import Proxying
from ._source import (
    FAILURE_OUTCOMES,
    HealthSource,
    is_personalized,
    passive_source,
    reporter,
    target_configs,
)
from ._strategies import (
    STRATEGIES,
    HashRing,
    Strategy,
    argmin,
    smooth_weighted,
    two_choices,
    weighted_random,
)

logger = logging.getLogger("frp_balance")

#: Strategies whose only candidate is picked with no state change and no random draw.
_SINGLE_IS_PICKED = frozenset({"latency", "least_requests"})


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"targets must be URL strings, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target {url!r} must be an absolute http:// or https:// URL")
    return url


class LoadBalancer(Proxying):
    """Chooses an upstream per request: round robin over a list, or by health and latency.

    ``LoadBalancer(["http://a", "http://b"])`` balances round robin with passive health from
    real traffic; ``LoadBalancer(checker)`` routes over the checker's healthy targets, by
    default with ``latency`` (power of two choices over peak-EWMA × in-flight).  A plain
    object with no lifecycle and no background task.  See ``docs/frp-balance.md``.
    """

    def __init__(
        self,
        servers: Sequence[str] | HealthSource,
        *,
        strategy: Strategy | None = None,
        weights: Mapping[str, int] | None = None,
        hash_key: HashKey = "client",
        max_in_flight: int | Mapping[str, int] | None = None,
        retries: int = 1,
        retry_budget: float = 0.2,
        min_retries: int = 3,
        panic_threshold: float | None = None,
        decay: float = 10.0,
        failure_penalty: float = 1.0,
        default_latency: float = 0.03,
        tie_ratio: float = 1.25,
        window: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health_mode = not isinstance(servers, list | tuple)
        if self._health_mode:
            if not isinstance(servers, HealthSource):
                raise TypeError("servers must be a list of URLs or a HealthChecker")
            self._source: Any = servers
            self._static: list[str] = []
        else:
            urls = [_check_url(u) for u in servers]  # type: ignore[union-attr]
            self._static = list(dict.fromkeys(urls))
            self._source = passive_source(self._static, clock)
            weights = {**{u: urls.count(u) for u in self._static}, **(weights or {})}
        if strategy is None:
            strategy = "latency" if self._health_mode else "round_robin"
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        if retries < 0 or min_retries < 0 or not 0 <= retry_budget <= 1:
            raise ValueError("retries, min_retries >= 0 and 0 <= retry_budget <= 1 required")
        if tie_ratio < 1:
            raise ValueError("tie_ratio must be >= 1")
        if panic_threshold is not None and not 0 < panic_threshold <= 1:
            raise ValueError("panic_threshold must be in (0, 1]")
        self.strategy: Strategy = strategy
        self.retries = retries
        self.retry_budget = retry_budget
        self.min_retries = min_retries
        self.panic_threshold = panic_threshold
        self.failure_penalty = failure_penalty
        self.tie_ratio = tie_ratio
        self._window = window
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._key = key_func(hash_key)
        self._report = reporter(self._source)
        resolve = getattr(self._source, "resolve", None)
        #: list mode: our URL -> the checker's (normalised) name for it
        self._canon: dict[str, str] = {
            u: (resolve(u) if callable(resolve) else None) or u for u in self._static
        }
        configs = target_configs(self._source)
        self._weights: dict[str, int] = {}
        for t, cfg in configs.items():
            if cfg.get("weight") is not None:
                self._weights[t] = cfg["weight"]
        self._weights.update({self._named(t, "weights"): w for t, w in (weights or {}).items()})
        if any(not isinstance(w, int) or w < 1 for w in self._weights.values()):
            raise ValueError("weights must be integers >= 1")
        self._limits = Limits()
        # ``None`` (no per-target limit) is not stored: an unlimited balancer then has empty
        # per-target maps and ``Limits.bounded()`` costs nothing per request.
        for t, cfg in configs.items():
            if cfg.get("maxrequests") is not None:
                self._limits.rate[t] = cfg["maxrequests"]
            if cfg.get("max_in_flight") is not None:
                self._limits.concurrency[t] = cfg["max_in_flight"]
        if isinstance(max_in_flight, Mapping):
            caps: Mapping[str, int | None] = max_in_flight
            for name, cap in caps.items():
                t = self._named(name, "max_in_flight")
                if cap is None:
                    self._limits.concurrency.pop(t, None)
                else:
                    self._limits.concurrency[t] = cap
        else:
            self._limits.default_concurrency = max_in_flight
        self._index = 0  # round robin: ties go to the target at this index first
        self._current: dict[str, int] = {}
        self._ring: tuple[tuple[str, ...], HashRing] | None = None
        self._positions: tuple[tuple[str, ...], dict[str, int]] = ((), {})
        self._in_flight: dict[str, int] = {}
        self._latencies = Latencies(decay, default_latency)
        self._fresh: set[str] = set()  # at most one request in flight until a first success
        self._known_healthy: set[str] | None = None
        #: (source generation, targets, healthy targets) of the last pick
        self._pool: tuple[object, list[str], list[str]] | None = None
        self._active_retries = 0
        self._counters: dict[str, int] = dict.fromkeys(
            ("requests", "retries", "retries_denied", "failovers", "no_target", "panic"), 0
        )
        self._per_target: dict[str, dict[str, int]] = {}

    # -- seed API ---------------------------------------------------------------------------

    @property
    def servers(self) -> Sequence[str] | HealthSource:
        """What the balancer was built from (a list of URLs or the checker)."""
        return self._source if self._health_mode else list(self._static)

    @property
    def max_requests(self) -> int | None:
        """Requests per target per health interval (``None``: unlimited); seed semantics."""
        self._check_global_limit()
        return self._limits.default_rate

    @max_requests.setter
    def max_requests(self, value: int | None) -> None:
        self._check_global_limit()
        if value is not None and value < 0:
            raise ValueError("max_requests must be >= 0 or None")
        self._limits.default_rate = value

    def _check_global_limit(self) -> None:
        if self._health_mode and is_personalized(self._source):
            raise RuntimeError("Global max_requests is not supported when using personalized hosts")

    def get(self, *, key: str | None = None) -> str | None:
        """The next target, counted against its ``maxrequests`` (``None``: none available).

        Counts a request but no in-flight slot: use ``route``/``proxy_pass`` for failover and
        exact in-flight counts.  ``key`` is the consistent-hash key for ``strategy="hash"``.
        """
        return self._choose(set(), key, commit=True)

    def peek(self) -> str | None:
        """The target ``get()`` would return now, without counting or advancing anything."""
        return self._choose(set(), None, commit=False)

    def get_all(self) -> list[str]:
        """Every configured target, healthy or not."""
        return list(self._source.targets) if self._health_mode else list(self._static)

    def set_index(self, index: int) -> None:
        """Make the target at ``index`` the next round-robin pick (list mode only)."""
        if self._health_mode:
            raise RuntimeError("set_index() is not supported in health mode")
        if self.strategy != "round_robin":
            raise RuntimeError("set_index() needs strategy='round_robin'")
        if index < 0 or (self._static and index >= len(self._static)):
            raise IndexError("Index out of range")
        self._index = index
        self._current.clear()

    # -- routing ------------------------------------------------------------------------------

    def route(self, scope: Mapping[str, Any]) -> Attempts:
        """The ``frp_core.Upstreams`` for one request (``frp_core.Router`` protocol)."""
        key = self._key(scope) if self.strategy == "hash" else None
        return Attempts(self, key, timed=scope.get("type") != "websocket")

    def _choose(self, exclude: set[str], key: str | None, *, commit: bool) -> str | None:
        now = self._clock()
        candidates = self._candidates(exclude, now, commit=commit)
        if not candidates:
            return None
        state = None if commit else self._rng.getstate()
        try:
            target = self._select(candidates, key, now, commit=commit)
        finally:
            if state is not None:
                self._rng.setstate(state)
        if commit:
            self._limits.count(target)
        return target

    def _candidates(self, exclude: set[str], now: float, *, commit: bool) -> list[str]:
        # A source with a ``generation`` (frp-health's checker) says when its healthy set may
        # have changed: until then the pool is reused, with no scan of the targets.
        generation = getattr(self._source, "generation", None)
        cached = self._pool
        if generation is not None and cached is not None and cached[0] == generation:
            targets, pool = cached[1], cached[2]
        else:
            # read only here: no copy of the target list
            targets = self._source.targets if self._health_mode else self._static
            healthy = set(self._source.get_healthy_targets())
            if commit:
                self._readmit(targets, healthy)
            pool = [t for t in targets if self._canon.get(t, t) in healthy]
            if commit and generation is not None:  # cached after the re-admission only
                self._pool = (generation, targets, pool)
        self._limits.tick(self._window_marker(now))
        if self.panic_threshold is not None and len(pool) < self.panic_threshold * len(targets):
            pool = targets
            if commit:
                self._counters["panic"] += 1
        if not self._limits.bounded():
            return [t for t in pool if t not in exclude] if exclude else pool
        return [t for t in pool if t not in exclude and self._limits.allows(t, self._in_flight)]

    def _named(self, name: str, option: str) -> str:
        """The target a per-target option names, in any spelling the source accepts."""
        resolve = getattr(self._source, "resolve", None)
        canon = resolve(name) if callable(resolve) else name
        if self._health_mode:
            found = canon if canon in self._source.targets else None
        else:
            found = next((u for u in self._static if self._canon[u] == canon), None)
        if found is None:
            raise ValueError(f"{option} names {name!r}, which is not one of the targets")
        return found

    def _window_marker(self, now: float) -> object:
        """The ``maxrequests`` window: each probe round of an active checker (seed), else
        ``window`` seconds of the clock."""
        source = self._source
        if self._health_mode and getattr(source, "active", True):
            last = getattr(source, "last_update", None)
            if last is not None:
                return last
        return now // self._window

    def _readmit(self, targets: list[str], healthy: set[str]) -> None:
        """A target that is new or healthy again starts over: no samples, one request at a time."""
        known = self._known_healthy
        if known == healthy:  # the common case: nothing became healthy
            return
        for t in targets:
            name = self._canon.get(t, t)
            if name in healthy and (known is None or name not in known):
                self._fresh.add(t)
                self._latencies.forget(t)
        self._known_healthy = healthy

    def _select(self, candidates: list[str], key: str | None, now: float, *, commit: bool) -> str:
        strategy = self.strategy
        if len(candidates) == 1 and strategy in _SINGLE_IS_PICKED:
            return candidates[0]  # what two_choices would return, without building its costs
        if strategy == "round_robin":
            order = self._order()
            n = max(len(order), 1)
            current = self._current if commit else dict(self._current)
            return smooth_weighted(
                candidates, self._weights, current, lambda t: (order[t] - self._index) % n
            )
        if strategy == "latency":
            fresh = self._fresh
            open_ = (
                [t for t in candidates if t not in fresh or not self._in_flight.get(t)]
                if fresh
                else candidates
            )
            latency = self._latencies.scorer(now, self.get_all, self._probes)

            def cost(t: str) -> float:
                return latency(t) * (self._in_flight.get(t, 0) + 1) / self._weights.get(t, 1)

            return two_choices(open_ or candidates, cost, self._rng, self.tie_ratio, self._is_idle)
        if strategy == "least_requests":
            return two_choices(
                candidates,
                lambda t: (self._in_flight.get(t, 0) + 1) / self._weights.get(t, 1),
                self._rng,
            )
        if strategy == "hash" and key is not None:
            allowed = set(candidates)
            found = self._hash_ring().lookup(key, allowed.__contains__)
            assert found is not None
            return found
        if strategy == "fastest_probe":
            probes = self._source.get_response_times()
            return argmin(candidates, lambda t: probes.get(self._canon.get(t, t), math.inf))
        return weighted_random(candidates, self._weights, self._rng)

    def _order(self) -> dict[str, int]:
        targets = tuple(self.get_all())
        if self._positions[0] != targets:
            self._positions = (targets, {t: i for i, t in enumerate(targets)})
        return self._positions[1]

    def _hash_ring(self) -> HashRing:
        targets = tuple(self.get_all())
        if self._ring is None or self._ring[0] != targets:
            self._ring = (targets, HashRing(targets))
        return self._ring[1]

    def _is_idle(self, target: str) -> bool:
        return not self._in_flight.get(target)

    def _probes(self) -> dict[str, float]:
        """Probe latency in seconds per target (the checker reports milliseconds)."""
        times = self._source.get_response_times()
        return {t: ms / 1000.0 for t in self.get_all() if (ms := times.get(self._canon.get(t, t)))}

    # -- attempt bookkeeping (called by Attempts) ---------------------------------------------

    def _retry_wanted(self, retry: int) -> bool:
        """Whether this request's ``retry``-th retry (1 for the first) is within the limits."""
        budget = max(self.min_retries, self.retry_budget * sum(self._in_flight.values()))
        if retry > self.retries or self._active_retries >= budget:
            self._counters["retries_denied"] += 1
            return False
        return True

    def _acquire(
        self,
        exclude: set[str],
        key: str | None,
        *,
        retry: bool,
        failover: bool = False,
        last: tuple[str, str] | None,
    ) -> str | None:
        target = self._choose(exclude, key, commit=True)
        if target is None:
            if not (retry or failover):
                self._counters["no_target"] += 1
                logger.info("no target available (none healthy, or all at their limits)")
            return None
        self._in_flight[target] = self._in_flight.get(target, 0) + 1
        self._target_stats(target)["picks"] += 1
        if retry or failover:
            if retry:
                self._active_retries += 1
            self._counters["retries" if retry else "failovers"] += 1
            failed, outcome = last if last is not None else ("?", "?")
            verb = "retrying on" if retry else "failing over to"
            logger.info("%s %s after %s from %s", verb, target, outcome, failed)
        else:
            self._counters["requests"] += 1
        return target

    def _release(self, target: str, outcome: str, elapsed: float | None, *, retry: bool) -> None:
        self._in_flight[target] -= 1
        if retry:
            self._active_retries -= 1
        stats = self._target_stats(target)
        stats[outcome] = stats.get(outcome, 0) + 1
        failed = outcome in FAILURE_OUTCOMES
        if elapsed is not None and (failed or outcome == "success"):
            sample = max(elapsed, self.failure_penalty) if failed else elapsed
            self._latencies.observe(target, sample, self._clock())
        if outcome == "success":
            self._fresh.discard(target)
        if failed:
            logger.debug("%s on %s after %.3f s", outcome, target, elapsed or 0.0)
        if self._report is not None:
            try:
                self._report(self._canon.get(target, target), outcome, elapsed)
            except Exception:  # a checker's bug must not break the response being relayed
                logger.exception("health report for %s failed", target)

    def _target_stats(self, target: str) -> dict[str, int]:
        stats = self._per_target.get(target)
        if stats is None:
            stats = self._per_target[target] = {"picks": 0}
        return stats

    # -- observability ------------------------------------------------------------------------

    def in_flight(self, target: str | None = None) -> int:
        """Attempts in flight on ``target``, or on every target."""
        if target is None:
            return sum(self._in_flight.values())
        return self._in_flight.get(target, 0)

    def stats(self) -> dict[str, Any]:
        """Counters (requests, retries, denied retries, failovers after a connect failure,
        no-target answers, panics) and per target: picks, outcomes, in-flight, latency
        estimate in seconds, health."""
        now = self._clock()
        healthy = set(self._source.get_healthy_targets())
        targets: dict[str, dict[str, Any]] = {}
        for t in self.get_all():
            targets[t] = {
                **self._per_target.get(t, {"picks": 0}),
                "in_flight": self._in_flight.get(t, 0),
                "latency": self._latencies.estimate(t, now),
                "healthy": self._canon.get(t, t) in healthy,
            }
        return {**self._counters, "in_flight": self.in_flight(), "targets": targets}

    def __repr__(self) -> str:
        return f"LoadBalancer({self.get_all()!r}, strategy={self.strategy!r})"
