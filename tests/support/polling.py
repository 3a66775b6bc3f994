"""Waiting for what has no event to await: a process's /readyz, a Redis key, a log line, a count.

One poller, sync and async, so that every wait in the tests keeps its own timeout and interval
and fails the same way: an `AssertionError` naming what did not happen and the time it was given,
not a bare `TimeoutError` or "condition not met".

    wait_until(lambda: len(pids_in(path)) >= 4, timeout_s=10, what="four starts")
    snapshot = await eventually(settled, timeout_s=30, poll_s=0.1, what="the last kline shown")

The condition's first truthy value is returned, so a wait can hand over what it found (a
snapshot, a lease's owner). A condition may assert, for what must never happen while waiting (a
process that exited): its `AssertionError` ends the wait at once. `what` may be a function, called
only on failure, when the message should show the state at that moment (a log, the last seq).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")
Message = str | Callable[[], str]

POLL_S = 0.02  # between two checks, unless the caller says otherwise


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout_s: float,
    what: Message,
    poll_s: float = POLL_S,
) -> T:
    """Call `condition` every `poll_s` until it returns a truthy value, and return that value.
    The condition is checked once more after the deadline has passed, so a slow check at the end
    is not taken for a failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = condition()
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise _not_in_time(what, timeout_s)
        time.sleep(poll_s)


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float,
    what: Message,
    poll_s: float = POLL_S,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    *,
    timeout_s: float,
    what: Message,
    poll_s: float = POLL_S,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    timeout_s: float,
    what: Message,
    poll_s: float = POLL_S,
) -> Any:
    """`wait_until` for the event loop: `condition` may be a coroutine function. The whole wait,
    an awaited check included, is bounded by `timeout_s`, so a check that hangs (Redis paused, a
    server that never answers) fails the wait rather than the test's own timeout."""
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            while True:
                outcome = condition()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                if outcome:
                    return outcome
                await asyncio.sleep(poll_s)
    except TimeoutError:
        if not scope.expired():
            raise  # the condition's own timeout, not this wait's
        raise _not_in_time(what, timeout_s) from None


def _not_in_time(what: Message, timeout_s: float) -> AssertionError:
    described = what if isinstance(what, str) else what()
    return AssertionError(f"not within {round(timeout_s, 2):g} s: {described}")
