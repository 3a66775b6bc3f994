"""The lean Event and Queue behave as asyncio's: waiting, waking, order, emptiness."""

from __future__ import annotations

import asyncio
import collections
import sys

from services.gateway.lean import LeanEvent, LeanQueue, _swap_deque


async def test_a_lean_event_wakes_every_waiter_and_forgets_them() -> None:
    event = LeanEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiters)

    event.set()

    assert await asyncio.gather(*waiters) == [True, True, True]
    assert len(event._waiters) == 0
    event.clear()
    late = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    late.cancel()  # a cancelled waiter leaves nothing behind
    await asyncio.gather(late, return_exceptions=True)
    assert len(event._waiters) == 0


async def test_a_lean_queue_hands_items_over_in_order_to_waiting_getters() -> None:
    queue: LeanQueue[int] = LeanQueue()
    assert queue.empty()
    getters = [asyncio.create_task(queue.get()) for _ in range(2)]
    await asyncio.sleep(0)

    for item in (1, 2, 3, 4):
        queue.put_nowait(item)

    assert await asyncio.gather(*getters) == [1, 2]
    assert queue.qsize() == 2 and not queue.empty()
    assert [await queue.get(), queue.get_nowait()] == [3, 4]
    assert queue.empty()


def test_the_lean_kinds_hold_no_deque() -> None:
    """What they exist for: some 600 bytes less per empty container."""
    queue: LeanQueue[int] = LeanQueue()
    containers = [queue._queue, queue._getters, queue._putters, LeanEvent()._waiters]
    assert all(sys.getsizeof(c) < 100 for c in containers)
    assert sys.getsizeof(asyncio.Queue()._queue) > 500  # type: ignore[attr-defined]


def test_a_python_whose_asyncio_renamed_its_internals_keeps_asyncio_s_own_containers() -> None:
    """A future asyncio without these private names must get working objects, not new attributes
    that nothing reads."""

    class Renamed:
        def __init__(self) -> None:
            self._waiters_v2: collections.deque[int] = collections.deque()

    renamed = Renamed()
    assert not _swap_deque(renamed, "_waiters")
    assert not hasattr(renamed, "_waiters")
    assert isinstance(renamed._waiters_v2, collections.deque)
