"""Request writes sent in bursts: one flush per pass of the event loop.

Under load, many requests reach their upstream write in the same pass of the loop.  Written one
by one, each ``send`` finds the upstream process asleep (it answered the previous request long
ago, by its standards) and pays to wake it: on a virtual machine an inter-processor interrupt,
several times the cost of the write itself.  Queued and written back to back when the pass
ends, only the first write of a burst wakes the upstream.  A lone request is written as soon as
the task that made it yields, so a single request waits for nothing.

A connection holds at most one queued write (one request at a time).  A connection lost or
discarded before the flush drops its write: that request never left (``request_sent=False``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["WriteBurst"]


class WriteBurst:
    """The connections of one event loop with a request waiting to be written."""

    __slots__ = ("loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Connection] = []
        self.scheduled = False

    def write(self, conn: Connection, data: bytes) -> None:
        """Write ``data`` on ``conn`` when this pass of the loop ends."""
        conn._queued = data
        self.pending.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        for conn in pending:
            data = conn._queued
            if data is None:  # dropped: the connection was lost or discarded meanwhile
                continue
            t = conn.transport
            if t is None or t.is_closing():
                continue  # never written: the connection's loss will report it unsent
            conn._queued = None
            t.write(data)
