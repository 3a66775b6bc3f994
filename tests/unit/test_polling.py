"""The tests' poller (tests/support/polling.py): the value found, and a failure that names what
was awaited."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.polling import eventually, wait_until


def test_wait_until_returns_the_first_truthy_value_of_the_condition() -> None:
    checks = itertools.count()
    found = wait_until(
        lambda: next(checks) >= 3 and "found", timeout_s=5, what="4 checks", poll_s=0
    )
    assert found == "found"


def test_wait_until_fails_naming_what_was_awaited_and_the_timeout() -> None:
    with pytest.raises(AssertionError, match=r"^not within 0.05 s: the moon$"):
        wait_until(lambda: False, timeout_s=0.05, what="the moon", poll_s=0.01)


def test_a_message_function_describes_the_state_at_the_failure() -> None:
    seen: list[int] = []
    with pytest.raises(AssertionError, match=r"checked 3 times"):
        wait_until(
            lambda: seen.append(1),
            timeout_s=0.05,
            what=lambda: f"checked {min(len(seen), 3)} times",
            poll_s=0.01,
        )


def test_an_assertion_in_the_condition_ends_the_wait_at_once() -> None:
    def exited() -> bool:
        raise AssertionError("the process exited")

    with pytest.raises(AssertionError, match=r"^the process exited$"):
        wait_until(exited, timeout_s=60, what="never shown")


async def test_eventually_awaits_a_coroutine_condition_and_returns_its_value() -> None:
    counter = itertools.count()

    async def third() -> int | None:
        await asyncio.sleep(0)
        value = next(counter)
        return value if value >= 2 else None

    assert await eventually(third, timeout_s=5, what="a third check", poll_s=0) == 2


async def test_eventually_bounds_a_check_that_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    with pytest.raises(AssertionError, match=r"^not within 0.05 s: an answer$"):
        await eventually(hangs, timeout_s=0.05, what="an answer")


async def test_a_timeout_of_the_condition_itself_is_not_taken_for_the_waits() -> None:
    async def times_out() -> bool:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await eventually(times_out, timeout_s=60, what="never shown")
