"""The health state machine: hysteresis, passive ejection and latency EWMAs.  Pure: no I/O.

Times come in as arguments (the checker's clock), so everything here is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._events import StateChange, TargetSnapshot, TargetState

SUCCESS = "success"
#: Outcomes that count against a target (equal to ``frp_core.FAILURES``).
GATEWAY_FAILURES = frozenset({"http_5xx", "connect_error", "timeout", "reset"})
#: Outcomes that say nothing about the target.
IGNORED = frozenset({"client_abort", "local_limit"})
OUTCOMES = GATEWAY_FAILURES | IGNORED | {SUCCESS}


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds and timings of the state machine (validated by the checker)."""

    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    consecutive_failures: int | None = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_percent: float = 10.0
    probe_alpha: float = 0.3
    traffic_alpha: float = 0.2


def _ewma(current: float | None, sample: float, alpha: float) -> float:
    return sample if current is None else current + alpha * (sample - current)


def ejection_limit(total: int, percent: float) -> int:
    """How many of ``total`` targets may be ejected at once: ``percent`` of them, at least one."""
    return max(1, math.floor(total * percent / 100 + 1e-9))


@dataclass(slots=True)
class Record:
    """Mutable health of one target."""

    url: str
    active_up: bool | None
    method: str
    admitted_at: float
    reason: str
    is_new: bool = True
    probe_failures: int = 0
    probe_successes: int = 0
    failures: int = 0
    ejected_until: float | None = None
    ejection_count: int = 0
    multiplier: int = 0
    ejection_ended_at: float | None = None
    probe_latency: float | None = None
    probe_ewma: float | None = None
    traffic_ewma: float | None = None
    last_error: str | None = None
    last_probe_at: float | None = None
    next_probe_at: float | None = None

    @property
    def state(self) -> TargetState:
        if self.active_up is False:
            return TargetState.UNHEALTHY
        if self.ejected_until is not None:
            return TargetState.EJECTED
        if self.active_up is None:
            return TargetState.UNKNOWN
        return TargetState.HEALTHY

    def latency_ms(self) -> float:
        """0.4.0 ``status`` value for a routable target: probe EWMA, else traffic EWMA, else 0."""
        value = self.probe_ewma if self.probe_ewma is not None else self.traffic_ewma
        return 0.0 if value is None else value * 1000.0


class HealthTable:
    """Health records of all targets and the rules that move them between states."""

    def __init__(
        self, urls: Iterable[str], policy: Policy, *, active: bool, now: float, method: str = "HEAD"
    ) -> None:
        self.policy = policy
        reason = "not probed yet" if active else "passive-only: healthy until traffic fails"
        self.records = {
            url: Record(
                url=url,
                active_up=None if active else True,
                method=method,
                admitted_at=now,
                reason=reason,
            )
            for url in urls
        }
        self.ejected = 0  #: how many targets are ejected now
        #: bumped at every state change: readers cache what depends on routability by it
        self.generation = 0

    # -- transitions -------------------------------------------------------------------------

    def _change(self, rec: Record, old: TargetState, reason: str, now: float) -> StateChange | None:
        new = rec.state
        if new == old:
            return None
        self.generation += 1
        rec.reason = reason
        if new.routable and not old.routable:
            rec.admitted_at = now
            rec.is_new = True
        return StateChange(rec.url, old, new, reason, now, self.snapshot(rec.url, now))

    def _uneject(self, rec: Record, at: float) -> None:
        self.ejected -= 1
        rec.ejected_until = None
        rec.ejection_ended_at = at

    def probed(
        self, url: str, ok: bool, latency: float | None, error: str | None, now: float
    ) -> StateChange | None:
        """Record one active probe's result."""
        rec = self.records[url]
        old = rec.state
        p = self.policy
        rec.last_probe_at = now
        reason = ""
        if ok:
            rec.probe_successes += 1
            rec.probe_failures = 0
            if latency is not None:
                rec.probe_latency = latency
                rec.probe_ewma = _ewma(rec.probe_ewma, latency, p.probe_alpha)
            if rec.ejected_until is not None:
                self._uneject(rec, now)
                reason = "a probe passed, which ends the ejection"
            if rec.active_up is None:
                rec.active_up, reason = True, "first probe passed"
            elif rec.active_up is False and rec.probe_successes >= p.healthy_threshold:
                rec.active_up = True
                reason = f"{rec.probe_successes} probes in a row passed"
        else:
            rec.probe_failures += 1
            rec.probe_successes = 0
            rec.last_error = error
            if rec.active_up is None:
                rec.active_up, reason = False, f"first probe failed: {error}"
            elif rec.active_up and rec.probe_failures >= p.unhealthy_threshold:
                rec.active_up = False
                reason = f"{rec.probe_failures} probes in a row failed, last: {error}"
        return self._change(rec, old, reason, now)

    def reported(
        self, url: str, outcome: str, latency: float | None, now: float
    ) -> StateChange | None:
        """Record the outcome of one real request (passive health)."""
        if outcome in IGNORED:
            return None
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
        rec = self.records[url]
        rec.is_new = False
        if outcome == SUCCESS:
            rec.failures = 0
            if latency is not None:
                rec.traffic_ewma = _ewma(rec.traffic_ewma, latency, self.policy.traffic_alpha)
            return None
        rec.last_error = f"{outcome} (traffic)"
        if rec.ejected_until is not None:
            return None  # late answers of requests sent before the ejection
        rec.failures += 1
        threshold = self.policy.consecutive_failures
        if threshold is None or rec.failures < threshold or not self.may_eject(rec):
            return None
        old = rec.state
        duration = self._eject(rec, now)
        reason = (
            f"{rec.failures} gateway failures in a row (last: {outcome}); out for {duration:g} s"
        )
        rec.failures = 0
        return self._change(rec, old, reason, now)

    def may_eject(self, rec: Record) -> bool:
        """The ejection cap: at most ``max_ejected_percent`` (at least one), never the last one.

        A target that is not routable is not ejected (it gets no traffic anyway).
        """
        if not rec.state.routable:
            return False
        if self.ejected >= ejection_limit(len(self.records), self.policy.max_ejected_percent):
            return False
        return any(r.state.routable for r in self.records.values() if r is not rec)

    def _eject(self, rec: Record, now: float) -> float:
        p = self.policy
        if rec.ejection_ended_at is not None:  # one step forgiven per base_ejection routable
            rec.multiplier = max(
                0, rec.multiplier - int((now - rec.ejection_ended_at) // p.base_ejection)
            )
        rec.multiplier = min(rec.multiplier + 1, math.ceil(p.max_ejection / p.base_ejection))
        duration = min(p.base_ejection * rec.multiplier, p.max_ejection)
        rec.ejected_until = now + duration
        rec.ejection_count += 1
        self.ejected += 1
        return duration

    def expire(self, now: float) -> list[StateChange]:
        """Re-admit targets whose ejection time has passed."""
        changes: list[StateChange] = []
        if not self.ejected:  # the common case, on every report and read: no scan
            return changes
        for rec in self.records.values():
            if rec.ejected_until is not None and now >= rec.ejected_until:
                old = rec.state
                self._uneject(rec, rec.ejected_until)
                change = self._change(rec, old, "ejection time passed", now)
                if change is not None:
                    changes.append(change)
        return changes

    # -- views -------------------------------------------------------------------------------

    def snapshot(self, url: str, now: float) -> TargetSnapshot:
        rec = self.records[url]
        left = 0.0 if rec.ejected_until is None else max(0.0, rec.ejected_until - now)
        return TargetSnapshot(
            url=url,
            state=rec.state,
            reason=rec.reason,
            probe_latency=rec.probe_latency,
            probe_latency_ewma=rec.probe_ewma,
            traffic_latency_ewma=rec.traffic_ewma,
            consecutive_failures=rec.failures,
            consecutive_probe_failures=rec.probe_failures,
            consecutive_probe_successes=rec.probe_successes,
            ejection_count=rec.ejection_count,
            ejected_until=rec.ejected_until,
            ejection_time_left=left,
            last_error=rec.last_error,
            last_probe_at=rec.last_probe_at,
            next_probe_at=rec.next_probe_at,
            probe_method=rec.method,
            admitted_at=rec.admitted_at,
            is_new=rec.is_new,
        )
