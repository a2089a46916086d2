"""Deferred per-request actions on one timer per loop, instead of a ``call_later`` each."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DelayQueue", "DelayQueues"]

T = TypeVar("T")


class DelayQueue(Generic[T]):
    """Items that ``fire`` ``delay`` seconds after they were added, unless discarded first.

    One timer, armed only while something waits; insertion order is due order, since every
    item has the same delay.
    """

    __slots__ = ("delay", "fire", "handle", "loop", "pending")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, fire: Callable[[T], object]
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.fire = fire
        self.pending: dict[T, float] = {}
        self.handle: asyncio.TimerHandle | None = None

    def add(self, item: T) -> None:
        self.pending[item] = self.loop.time() + self.delay
        if self.handle is None:
            self.handle = self.loop.call_later(self.delay, self._sweep)

    def discard(self, item: T) -> None:
        self.pending.pop(item, None)

    def _sweep(self) -> None:
        # Only the due items are visited (no copy of the whole queue: with thousands of
        # waiting items, a sweep per timer tick stays cheap); they fire after the scan, since
        # firing may add or discard items.
        self.handle = None
        now = self.loop.time()
        pending = self.pending
        due_items = []
        for item, due in pending.items():
            if due > now:
                self.handle = self.loop.call_at(due, self._sweep)
                break
            due_items.append(item)
        for item in due_items:
            if pending.pop(item, None) is not None:  # not discarded by an earlier ``fire``
                self.fire(item)


class DelayQueues(Generic[T]):
    """The :class:`DelayQueue` of the running loop for each delay, for one kind of item.

    The queue used last is found without a weak-key lookup (which allocates a reference).
    """

    __slots__ = ("_fire", "_last", "_queues")

    def __init__(self, fire: Callable[[T], object]) -> None:
        self._fire = fire
        self._last: DelayQueue[T] | None = None
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[float, DelayQueue[T]]
        ] = weakref.WeakKeyDictionary()

    def get(self, delay: float) -> DelayQueue[T]:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last.loop is loop and last.delay == delay:
            return last
        per_loop = self._queues.get(loop)
        if per_loop is None:
            per_loop = self._queues[loop] = {}
        queue = per_loop.get(delay)
        if queue is None:
            queue = per_loop[delay] = DelayQueue(loop, delay, self._fire)
        self._last = queue
        return queue
