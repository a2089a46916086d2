"""Timeouts and pool limits of the upstream engine."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase timeouts in seconds (``None`` waits forever).

    ``read`` bounds the wait for each read (idle time), never the whole transfer, so a quiet
    SSE stream lives as long as it sends something within ``read`` seconds.
    """

    connect: float | None = 60.0
    read: float | None = 60.0
    write: float | None = 60.0
    pool: float | None = 60.0

    @classmethod
    def of(cls, timeout: Any) -> Timeouts:
        """From a number/``None`` (every phase), a ``Timeouts``, or an ``httpx.Timeout``."""
        if isinstance(timeout, Timeouts):
            return timeout
        if timeout is None or isinstance(timeout, int | float):
            t = None if timeout is None else float(timeout)
            return cls(t, t, t, t)
        if all(hasattr(timeout, a) for a in ("connect", "read", "write", "pool")):
            return cls(timeout.connect, timeout.read, timeout.write, timeout.pool)
        raise TypeError(
            f"timeout must be a number, None, Timeouts or httpx.Timeout, not {timeout!r}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool limits, per upstream origin (scheme, host, port)."""

    max_connections: int | None = 256  #: open connections per origin; ``None``: unlimited
    max_keepalive: int = 128  #: idle connections kept per origin
    #: seconds an idle connection is kept: below uvicorn's 5 s keep-alive, so the upstream
    #: rarely closes a connection just as we reuse it
    keepalive_expiry: float = 4.0
