"""``DelayQueue``: the one-timer-per-loop deadlines behind delayed disconnect watchers and the
guard of unsent responses."""

from __future__ import annotations

import asyncio

from frp_core._delays import DelayQueue


async def test_items_fire_once_in_order_and_discarded_ones_never() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = loop.create_future()

    def fire(item: str) -> None:
        fired.append(item)
        if item == "last":
            done.set_result(None)

    queue: DelayQueue[str] = DelayQueue(loop, 0.01, fire)
    for name in ("a", "b", "c", "d", "last"):
        queue.add(name)
    queue.discard("c")
    await asyncio.wait_for(done, 5)
    assert fired == ["a", "b", "d", "last"]
    assert not queue.pending
    assert queue.handle is None  # nothing left to wait for: no timer


async def test_an_item_discarded_by_an_earlier_fire_does_not_fire() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = loop.create_future()
    queue: DelayQueue[str] = DelayQueue(loop, 0.01, lambda item: None)

    def fire(item: str) -> None:
        fired.append(item)
        if item == "first":
            queue.discard("second")  # e.g. an abandoned response releasing another
            queue.add("again")  # and something new, due later: the timer is re-armed
        if item == "again":
            done.set_result(None)

    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        queue.fire = fire
        queue.add("first")
        queue.pending["second"] = queue.pending["first"]  # due in the same sweep
        await asyncio.wait_for(done, 5)
    finally:
        loop.set_exception_handler(None)
    assert fired == ["first", "again"]
    assert errors == []  # the sweep did not fail on the discarded item
