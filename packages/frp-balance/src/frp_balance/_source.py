"""Where the balancer learns which targets are healthy: a small protocol and a passive fallback.

Any object with the seed ``HealthChecker`` shape works (``targets``, ``get_healthy_targets()``,
``get_response_times()`` in milliseconds).  Optional members are used when present:
``report(target, outcome, latency)`` (passive health), ``last_update`` (the window of
``maxrequests``), ``interval``, ``target_configs``, ``is_personalized`` and ``generation`` (a
value that changes whenever the healthy set may have changed: the balancer's candidates are
cached by it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger("frp_balance")

#: Outcomes that count against a target (the values of ``frp_core.Outcome``).
FAILURE_OUTCOMES = frozenset({"http_5xx", "connect_error", "timeout", "reset"})


@runtime_checkable
class HealthSource(Protocol):
    """The part of a health checker the balancer needs."""

    @property
    def targets(self) -> Sequence[str]: ...

    def get_healthy_targets(self) -> Sequence[str]: ...

    def get_response_times(self) -> Mapping[str, float]: ...


class PassiveHealth:
    """Passive-only health for a plain list of URLs, fed by real traffic through ``report``.

    ``failures`` consecutive gateway failures (connect errors, resets, timeouts, 502/503/504)
    eject a target for ``ejection`` seconds, doubled at each ejection in a row up to
    ``max_ejection``; a success resets the streak.  The last target standing is never ejected
    (fail open, like nginx): a request then gets the upstream's real error, not a blind 503.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        failures: int = 3,
        ejection: float = 10.0,
        max_ejection: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self._targets = list(targets)
        self.failures = failures
        self.ejection = ejection
        self.max_ejection = max_ejection
        self._clock = clock
        self._streak: dict[str, int] = dict.fromkeys(self._targets, 0)
        self._ejections: dict[str, int] = dict.fromkeys(self._targets, 0)
        self._until: dict[str, float] = {}

    @property
    def targets(self) -> Sequence[str]:
        return self._targets

    def get_healthy_targets(self) -> list[str]:
        now = self._clock()
        return [t for t in self._targets if self._until.get(t, now) <= now]

    def get_response_times(self) -> dict[str, float]:
        return {}

    def is_healthy(self, target: str) -> bool:
        return target in self.get_healthy_targets()

    def report(self, target: str, outcome: str, latency: float | None = None) -> None:
        """Record how one real request to ``target`` ended."""
        if target not in self._streak:
            return
        if outcome == "success":
            self._streak[target] = 0
            if self._until.get(target, 0.0) <= self._clock():
                self._ejections[target] = 0
            return
        if outcome not in FAILURE_OUTCOMES:
            return
        self._streak[target] += 1
        healthy = self.get_healthy_targets()
        if self._streak[target] < self.failures or target not in healthy or len(healthy) < 2:
            return
        n = self._ejections[target]
        duration = min(self.ejection * 2**n, self.max_ejection)
        self._ejections[target] = n + 1
        self._streak[target] = 0
        self._until[target] = self._clock() + duration
        logger.warning(
            "ejecting %s for %.0f s after %d %s", target, duration, self.failures, outcome
        )


def passive_source(targets: Sequence[str], clock: Callable[[], float]) -> HealthSource:
    """Passive health for a plain list: frp-health's passive-only ``HealthChecker``.

    :class:`PassiveHealth` stands in when frp-health is missing; an empty list gets an empty
    ``PassiveHealth`` (a checker needs at least one target).
    """
    if targets:
        try:
            from frp_health import HealthChecker
        except ImportError:  # pragma: no cover - frp-health is a dependency
            pass
        else:
            return HealthChecker(list(targets), active=False, clock=clock)
    return PassiveHealth(targets, clock=clock)


def reporter(source: Any) -> Callable[[str, str, float | None], None] | None:
    """The source's passive-health ``report`` method, or ``None`` when it has none."""
    report = getattr(source, "report", None)
    return report if callable(report) else None


def target_configs(source: Any) -> Mapping[str, Mapping[str, Any]]:
    """Per-target configuration dicts (seed: ``host``, ``pingpath``, ``maxrequests``)."""
    configs = getattr(source, "target_configs", None)
    return configs if isinstance(configs, Mapping) else {}


def is_personalized(source: Any) -> bool:
    """Whether the checker was built from per-target dicts (the seed's personalised mode)."""
    return bool(getattr(source, "is_personalized", False))
