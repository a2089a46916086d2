"""Noticing that the client left: ``http.disconnect`` while nothing else reads ``receive()``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._delays import DelayQueue, DelayQueues

__all__ = ["Watcher"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Watcher:
    """Waits (after ``delay`` seconds) for ``http.disconnect``, then cancels the task that made
    it.

    Only used while nothing else reads ``receive()``; ``fired`` tells a catcher of the
    ``CancelledError`` that the client left.  Made with ``armed=False``, it waits until
    :meth:`arm` (called from any task, e.g. once a request body is complete) before its delay
    starts.  Delayed watchers cost no timer each: one :class:`~frp_core._delays.DelayQueue`
    per loop starts those whose delay has passed.
    """

    __slots__ = (
        "__weakref__",
        "_delay",
        "_receive",
        "_stopped",
        "_sweeper",
        "_target",
        "fired",
        "task",
    )

    def __init__(self, receive: Receive, delay: float = 0.0, *, armed: bool = True) -> None:
        self.fired = False
        self.task: asyncio.Task[None] | None = None
        self._receive = receive
        self._target = asyncio.current_task()
        self._delay = delay
        self._stopped = False
        self._sweeper: DelayQueue[Watcher] | None = None
        if armed:
            self.arm()

    def arm(self) -> None:
        """Start the delay (or, with none, the watch); nothing once stopped."""
        if self._stopped:
            return
        if self._delay > 0:
            self._sweeper = sweeper = _DELAYED.get(self._delay)
            sweeper.add(self)
        else:
            self.start()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        for _ in range(1 << 30):  # bounded; a client sends at most its body, then disconnect
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.fired = True
                if self._target is not None:
                    self._target.cancel()
                return

    def stop(self) -> None:
        self._stopped = True
        if self.task is not None:
            self.task.cancel()
        elif self._sweeper is not None:
            self._sweeper.discard(self)


#: Delayed watchers, started when due: one timer per loop, not one per request.
_DELAYED: DelayQueues[Watcher] = DelayQueues(Watcher.start)
