"""asyncio's Event and Queue with lists where they keep deques, for per-connection objects.

An empty `collections.deque` reserves a block of some 600 bytes. A websocket connection holds
uvicorn's receive queue (three deques and an Event's) and two events (another two), while at most
one task ever waits on each and the queue rarely holds more than one message: about 4 KiB of a
connection's 20 are empty deques. A list costs 56 bytes. These classes change only the containers
(the private attributes asyncio 3.11 to 3.13 uses), never the behaviour; tests/unit/test_lean.py
checks that behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


class _ShortList(list[Any]):
    """What asyncio needs of a deque, on a list: fine for the few items these ever hold."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class LeanEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self._waiters = _ShortList()  # type: ignore[assignment]


class LeanQueue(asyncio.Queue[T]):
    """Unbounded, as uvicorn's receive queue."""

    def __init__(self) -> None:
        super().__init__()
        self._getters = _ShortList()
        self._putters = _ShortList()
        self._finished = LeanEvent()
        self._finished.set()

    def _init(self, maxsize: int) -> None:
        self._queue = _ShortList()

    def _get(self) -> T:
        item: T = self._queue.popleft()
        return item

    def _put(self, item: T) -> None:
        self._queue.append(item)
