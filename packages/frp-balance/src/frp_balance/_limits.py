"""Per-target limits: requests per health interval (seed ``maxrequests``) and in-flight caps."""

from __future__ import annotations

from collections.abc import Mapping


class Limits:
    """Counts requests per target in a window and says whether a target may take one more.

    The window restarts when ``tick(marker)`` sees a new marker: the health checker's
    ``last_update`` (the seed: counts reset at every health check), or the window number of a
    clock when there is no checker.
    """

    def __init__(self) -> None:
        self.rate: dict[str, int | None] = {}  #: per-target requests per window
        self.default_rate: int | None = None  #: the global ``max_requests``
        self.concurrency: dict[str, int | None] = {}  #: per-target in-flight cap
        self.default_concurrency: int | None = None
        self.counts: dict[str, int] = {}
        self._marker: object = None

    def bounded(self) -> bool:
        """Whether any limit is set (when none is, every target is always allowed)."""
        return (
            self.default_rate is not None
            or self.default_concurrency is not None
            or (bool(self.rate) and any(v is not None for v in self.rate.values()))
            or (bool(self.concurrency) and any(v is not None for v in self.concurrency.values()))
        )

    def tick(self, marker: object) -> None:
        """Start a new window when ``marker`` changed."""
        if marker != self._marker:
            self._marker = marker
            self.counts.clear()

    def rate_limit(self, target: str) -> int | None:
        limit = self.rate.get(target)
        return self.default_rate if limit is None else limit

    def concurrency_limit(self, target: str) -> int | None:
        limit = self.concurrency.get(target)
        return self.default_concurrency if limit is None else limit

    def allows(self, target: str, in_flight: Mapping[str, int]) -> bool:
        """Whether ``target`` is below both its request budget and its in-flight cap."""
        rate = self.rate_limit(target)
        if rate is not None and self.counts.get(target, 0) >= rate:
            return False
        cap = self.concurrency_limit(target)
        return cap is None or in_flight.get(target, 0) < cap

    def count(self, target: str) -> None:
        """Charge one request to ``target`` in the current window."""
        self.counts[target] = self.counts.get(target, 0) + 1
