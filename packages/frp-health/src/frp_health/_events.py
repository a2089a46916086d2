"""Read-only views of a target's health and the delivery of state changes to subscribers."""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

logger = logging.getLogger("frp_health")


class TargetState(enum.StrEnum):
    """Where a target stands.  ``UNKNOWN`` and ``HEALTHY`` are routable, the others are not."""

    UNKNOWN = "unknown"  #: active checking, not probed yet (routable, as in 0.4.0)
    HEALTHY = "healthy"  #: probes pass (or passive-only and not ejected)
    UNHEALTHY = "unhealthy"  #: ``unhealthy_threshold`` probes in a row failed
    EJECTED = "ejected"  #: passive outlier detection took it out for a while

    @property
    def routable(self) -> bool:
        """Whether traffic may go to a target in this state."""
        return self in (TargetState.UNKNOWN, TargetState.HEALTHY)


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One target's health at one instant.  Latencies in seconds, times on the checker clock."""

    url: str  #: normalised base URL, as in ``HealthChecker.targets``
    state: TargetState
    reason: str  #: why it is in ``state`` (human-readable)
    probe_latency: float | None  #: last successful probe's latency
    probe_latency_ewma: float | None  #: EWMA of successful probe latencies
    traffic_latency_ewma: float | None  #: EWMA of latencies reported with ``"success"``
    consecutive_failures: int  #: gateway failures reported in a row (passive)
    consecutive_probe_failures: int
    consecutive_probe_successes: int
    ejection_count: int  #: times ejected since construction
    ejected_until: float | None  #: clock time the current ejection ends
    ejection_time_left: float  #: seconds until re-admission (0 when not ejected)
    last_error: str | None  #: latest probe or traffic failure
    last_probe_at: float | None
    next_probe_at: float | None  #: when the active loop probes next (``None``: passive-only)
    probe_method: str  #: ``HEAD`` until a target answers 405/501 to it, then ``GET``
    admitted_at: float | None  #: when it last became routable after not being routable
    is_new: bool  #: re-admitted (or never used) and no request reported since: go gently

    @property
    def healthy(self) -> bool:
        """Whether traffic may go to this target (``state.routable``)."""
        return self.state.routable


@dataclass(frozen=True, slots=True)
class StateChange:
    """A target moved from one state to another."""

    url: str
    old: TargetState
    new: TargetState
    reason: str
    at: float  #: checker clock time
    snapshot: TargetSnapshot  #: the target right after the change

    @property
    def admitted(self) -> bool:
        """True when a target became routable again (new or re-admitted: send it one request)."""
        return self.new.routable and not self.old.routable


class ChangeStream:
    """An async iterator of :class:`StateChange`, registered from the moment it is created.

    Ends when closed (``aclose()``, ``async with``) or when the checker is destroyed.  Keeps
    at most ``maxlen`` undelivered changes; older ones are dropped if the consumer stalls.
    """

    def __init__(self, hub: Hub, maxlen: int) -> None:
        self._hub = hub
        self._items: collections.deque[StateChange] = collections.deque(maxlen=maxlen)
        self._wakeup = asyncio.Event()
        self._closed = False
        hub.streams.add(self)

    def _push(self, change: StateChange) -> None:
        self._items.append(change)
        self._wakeup.set()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> StateChange:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def aclose(self) -> None:
        """Stop receiving changes; pending ones are still delivered, then iteration ends."""
        self.close()

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self._closed = True
        self._hub.streams.discard(self)
        self._wakeup.set()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Hub:
    """Fan-out of state changes to callbacks and streams, with the one log line per change."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[StateChange], object]] = []
        self.streams: set[ChangeStream] = set()

    def subscribe(self, callback: Callable[[StateChange], object]) -> Callable[[], None]:
        self.callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self.callbacks:
                self.callbacks.remove(callback)

        return unsubscribe

    def publish(self, change: StateChange) -> None:
        level = logging.INFO if change.new.routable else logging.WARNING
        logger.log(
            level,
            "target %s %s -> %s: %s",
            change.url,
            change.old.value,
            change.new.value,
            change.reason,
        )
        for callback in list(self.callbacks):
            try:
                callback(change)
            except Exception:
                logger.exception("state-change callback %r failed", callback)
        for stream in list(self.streams):
            stream._push(change)

    def close(self) -> None:
        for stream in list(self.streams):
            stream.close()
