"""Noticing that the client left: ``http.disconnect`` while nothing else reads ``receive()``."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Watcher"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Watcher:
    """Waits (after ``delay`` seconds) for ``http.disconnect``, then cancels the current task.

    Only used while nothing else reads ``receive()``; ``fired`` tells a catcher of the
    ``CancelledError`` that the client left.  Delayed watchers cost no timer each: one
    :class:`_Sweeper` per loop starts those whose delay has passed.
    """

    __slots__ = ("__weakref__", "_receive", "_sweeper", "_target", "fired", "task")

    def __init__(self, receive: Receive, delay: float = 0.0) -> None:
        self.fired = False
        self.task: asyncio.Task[None] | None = None
        self._receive = receive
        self._target = asyncio.current_task()
        self._sweeper: _Sweeper | None = None
        if delay > 0:
            self._sweeper = sweeper = _sweeper(asyncio.get_running_loop(), delay)
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
        if self.task is not None:
            self.task.cancel()
        elif self._sweeper is not None:
            self._sweeper.pending.pop(self, None)


class _Sweeper:
    """Starts delayed watchers when due: one timer per loop, armed only while some wait."""

    __slots__ = ("delay", "handle", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.pending: dict[Watcher, float] = {}  # insertion order is due order
        self.handle: asyncio.TimerHandle | None = None

    def add(self, watcher: Watcher) -> None:
        self.pending[watcher] = self.loop.time() + self.delay
        if self.handle is None:
            self.handle = self.loop.call_later(self.delay, self._sweep)

    def _sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        pending = self.pending
        for watcher, due in list(pending.items()):
            if due > now:
                self.handle = self.loop.call_at(due, self._sweep)
                return
            del pending[watcher]
            watcher.start()


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)
#: The sweeper used last (a weak-key lookup makes a weak reference per call).
_last: _Sweeper | None = None


def _sweeper(loop: asyncio.AbstractEventLoop, delay: float) -> _Sweeper:
    global _last
    last = _last
    if last is not None and last.loop is loop:
        return last
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _SWEEPERS[loop] = _Sweeper(loop, delay)
    _last = sweeper
    return sweeper
