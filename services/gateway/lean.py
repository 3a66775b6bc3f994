"""asyncio's Event and Queue with lists where they keep deques, for per-connection objects.

An empty `collections.deque` reserves a block of some 600 bytes. A websocket connection holds
uvicorn's receive queue (three deques and an Event's) and two events (another two), while at most
one task ever waits on each and the queue rarely holds more than one message: about 4 KiB of a
connection's 20 are empty deques. A list costs 56 bytes. These classes change only the containers
(the private attributes asyncio 3.11 to 3.13 uses), never the behaviour; tests/unit/test_lean.py
checks that behaviour on every supported Python. A container is swapped only where asyncio keeps
a deque under that name, so a Python that renames its internals gets plain asyncio objects (more
memory, same behaviour) instead of a broken gateway.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, TypeVar

T = TypeVar("T")


class _ShortList(list[Any]):
    """What asyncio needs of a deque, on a list: fine for the few items these ever hold."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def _swap_deque(owner: object, name: str) -> bool:
    """Put a _ShortList where asyncio keeps an (empty) deque called `name`; False if it has none."""
    if not isinstance(getattr(owner, name, None), collections.deque):
        return False
    setattr(owner, name, _ShortList())
    return True


class LeanEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        _swap_deque(self, "_waiters")


class LeanQueue(asyncio.Queue[T]):
    """Unbounded, as uvicorn's receive queue."""

    def __init__(self) -> None:
        super().__init__()
        _swap_deque(self, "_getters")
        _swap_deque(self, "_putters")
        if isinstance(getattr(self, "_finished", None), asyncio.Event):
            self._finished = LeanEvent()
            self._finished.set()

    def _init(self, maxsize: int) -> None:
        self._queue = _ShortList()

    def _get(self) -> T:
        item: T = self._queue.popleft()
        return item

    def _put(self, item: T) -> None:
        self._queue.append(item)
