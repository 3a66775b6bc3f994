"""When a failed delivery is tried again, and when it is given up (SPEC 6.1 rule 4), as pure
arithmetic: the sender only sleeps what this says.

Why no retry library (tenacity, stamina): a retry here is not a call repeated in a loop. The
24 h window runs from the delivery's creation, which Redis keeps across restarts; a Telegram
429 dictates its own wait; the head of a webhook's queue holds the rest back; and a give-up
must be logged, counted and removed from Redis. What is left is the formula below.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 300.0
RETRY_FOR_S = 86_400.0
ATTEMPT_TIMEOUT_S = 5.0  # a 2xx within 5 s is delivered; a slower answer is a failure


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff from `first_s` doubling to `cap_s`, full jitter, for `retry_for_s` from the
    delivery's creation. The defaults are SPEC's; tests shorten `retry_for_s` only."""

    first_s: float = BACKOFF_FIRST_S
    cap_s: float = BACKOFF_CAP_S
    retry_for_s: float = RETRY_FOR_S

    def ceiling_s(self, failures: int) -> float:
        """The longest wait after the `failures`-th failure in a row (1, 2, 4... capped)."""
        doubled: float = self.first_s * 2.0 ** min(failures - 1, 64)
        return min(self.cap_s, doubled)

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, ceiling], so receivers coming back are not hit by every
        sender at once."""
        return rng.uniform(0.0, self.ceiling_s(failures))

    def deadline_ms(self, created_ms: int) -> int:
        return created_ms + int(self.retry_for_s * 1000)

    def next_wait_s(
        self,
        *,
        failures: int,
        created_ms: int,
        now_ms: int,
        retry_after_s: float | None,
        rng: random.Random,
    ) -> float | None:
        """How long to wait before the next attempt, or None to give the delivery up: its 24 h
        are over. A receiver's `retry_after` (Telegram's 429) replaces the drawn wait. The last
        attempt falls on the deadline rather than past it."""
        deadline = self.deadline_ms(created_ms)
        if now_ms >= deadline:
            return None
        wait_s = self.delay_s(failures, rng) if retry_after_s is None else retry_after_s
        return min(wait_s, (deadline - now_ms) / 1000)
