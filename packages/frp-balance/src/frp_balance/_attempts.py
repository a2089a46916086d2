"""The per-request ``Upstreams`` object: picks a target per attempt, within a retry budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._balancer import LoadBalancer


#: The outcome of an attempt that never reached its target (refused, unreachable, DNS, TLS):
#: moving on to another target repeats no work, so it is a failover, not a retry.
_NEVER_ARRIVED = "connect_error"


class Attempts:
    """One request's targets, handed to ``frp_core.proxy_pass`` (``frp_core.Upstreams``).

    ``pick(tried)`` returns a target not yet tried, or ``None`` when no retry is wanted: the
    attempt limit is reached, the balancer's retry budget is spent, or no other target is
    eligible.  After a connect failure the request never reached the target, so the next pick
    is a *failover*: it is counted neither against ``retries`` nor against the retry budget,
    and every other eligible target is tried once (as nginx's ``proxy_next_upstream error``).
    ``done`` must be called once per picked target; a second call is ignored, so the
    in-flight counts stay exact.
    """

    __slots__ = ("_key", "_last", "_lb", "_open", "_retries", "_timed")

    def __init__(self, lb: LoadBalancer, key: str | None, *, timed: bool = True) -> None:
        self._lb = lb
        self._key = key
        self._timed = timed  # a WebSocket tunnel's duration is no latency sample
        self._open: dict[str, bool] = {}  # target -> picked as a (budgeted) retry
        self._last: tuple[str, str] | None = None  # (target, outcome) of the last attempt
        self._retries = 0  # budgeted retries picked so far (failovers excluded)

    @property
    def key(self) -> str | None:
        """The consistent-hash key of this request (``None`` without one)."""
        return self._key

    def pick(self, tried: Sequence[str]) -> str | None:
        """The target for the next attempt, or ``None`` to stop."""
        last = self._last
        failover = bool(tried) and last is not None and last[1] == _NEVER_ARRIVED
        retry = bool(tried) and not failover
        if retry and not self._lb._retry_wanted(self._retries + 1):
            return None
        target = self._lb._acquire(set(tried), self._key, retry=retry, failover=failover, last=last)
        if target is not None:
            self._open[target] = retry
            self._retries += retry
        return target

    def done(self, target: str, outcome: str, elapsed: float) -> None:
        """Record how the attempt on ``target`` ended (``elapsed`` in seconds)."""
        if target not in self._open:
            return
        retry = self._open.pop(target)
        outcome = str(outcome)
        self._last = (target, outcome)
        self._lb._release(target, outcome, elapsed if self._timed else None, retry=retry)
