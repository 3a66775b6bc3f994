"""One webhook's deliveries, oldest first, one attempt in flight (SPEC 6.1 rule 4).

Each webhook of each owned bot has a sender of its own, so a receiver that fails or never
answers holds back only its own queue: never another webhook, another bot, or trading. The
queue lives in Redis (`libs.store.notices`); the sender reads it in order, delivers the head
until a 2xx or its 24 h are over, then removes it. A crash anywhere in between leaves the head in
the queue, and it is sent again: at least once, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from prometheus_client import Counter
from redis.exceptions import RedisError

from libs.store.client import RedisNodes
from libs.store.notices import Delivery, mark_done, read_pending
from services.notify.schedule import RetryPolicy
from services.notify.sinks import Sink

log = logging.getLogger(__name__)

DELIVERED = Counter("bandwagon_notify_delivered_total", "Deliveries answered 2xx", ["bot"])
FAILED = Counter(
    "bandwagon_notify_failed_total",
    "Failed attempts by reason (timeout, network, http_<status>), and deliveries given up "
    "after 24 h (expired) or trimmed from the feed unread (feed_trimmed)",
    ["bot", "reason"],
)
READ_AHEAD = 20  # queue entries held at once (a failing receiver's too); the rest stay in Redis
REDIS_RETRY_S = (0.1, 5.0)  # a Redis error here is waited out; the worker reloads meanwhile


A = TypeVar("A")
T = TypeVar("T")


def wall_ms() -> int:
    return int(time.time() * 1000)


class HookSender:
    def __init__(
        self,
        *,
        nodes: RedisNodes,
        bot: str,
        hook_id: str,
        sink: Sink,
        client: httpx.AsyncClient,
        policy: RetryPolicy,
        on_done: Callable[[str, int], None],
        clock_ms: Callable[[], int] = wall_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.nodes = nodes
        self.bot = bot
        self.hook_id = hook_id
        self.sink = sink
        self.client = client
        self.policy = policy
        self.on_done = on_done
        self.clock_ms = clock_ms
        self.rng = rng or random.Random()
        self.wake = asyncio.Event()
        self.wake.set()
        self.stopped = False
        """Set by the worker when the bot moves or Redis is reloaded: no further attempt or
        Redis call, whether or not the cancellation got through."""

    def _context(self, delivery: Delivery | None = None) -> dict[str, object]:
        context: dict[str, object] = {"bot": self.bot, "webhook": self.sink.target}
        if delivery is not None:
            context["delivery"] = delivery.delivery_id
        return context

    async def run(self) -> None:
        """Deliver the queue forever; `wake` says new deliveries were committed."""
        after = "0-0"
        while not self.stopped:
            self.wake.clear()  # before the read: a commit after it sets it again
            batch = await self._with_redis(self._read_after, after)
            if not batch:
                await self.wake.wait()
                continue
            for delivery in batch:
                if not await self._deliver(delivery):
                    return  # stopped
                removed = await self._with_redis(self._mark_done, delivery)
                self.on_done(self.bot, removed)
                after = delivery.entry_id

    async def _read_after(self, after: str) -> list[Delivery]:
        return await read_pending(
            self.nodes.for_bot(self.bot), self.bot, self.hook_id, after, READ_AHEAD
        )

    async def _mark_done(self, delivery: Delivery) -> int:
        return await mark_done(
            self.nodes.for_bot(self.bot), self.bot, self.hook_id, delivery.entry_id
        )

    async def _deliver(self, delivery: Delivery) -> bool:
        """Attempts until a 2xx, or until the delivery's 24 h are over (then it is dropped,
        logged at WARNING and counted): True, the delivery may leave its queue; False, the
        sender was stopped first."""
        failures = 0
        while True:
            if self.stopped:
                return False
            answer = await self.sink.send(
                self.client,
                delivery_id=delivery.delivery_id,
                body=delivery.body,
                now_ms=self.clock_ms(),
            )
            if answer.delivered:
                DELIVERED.labels(bot=self.bot).inc()
                if failures:
                    context = self._context(delivery)
                    log.info("delivered after %d failed attempts", failures, extra=context)
                return True
            failures += 1
            FAILED.labels(bot=self.bot, reason=answer.reason).inc()
            wait_s = self.policy.next_wait_s(
                failures=failures,
                created_ms=delivery.created_ms,
                now_ms=self.clock_ms(),
                retry_after_s=answer.retry_after_s,
                rng=self.rng,
            )
            if wait_s is None:
                FAILED.labels(bot=self.bot, reason="expired").inc()
                log.warning(
                    "delivery dropped after %d attempts over %g s: %s",
                    failures,
                    self.policy.retry_for_s,
                    answer.detail,
                    extra={**self._context(delivery), "reason": answer.reason},
                )
                return True
            # the first failure of a delivery is news, its retries (~575 a day at the cap) are not
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(
                level,
                "delivery failed (%s), attempt %d, next in %.1f s",
                answer.detail,
                failures,
                wait_s,
                extra={**self._context(delivery), "reason": answer.reason},
            )
            await asyncio.sleep(wait_s)

    async def _with_redis(self, call: Callable[[A], Awaitable[T]], argument: A) -> T:
        """`call(argument)` until Redis answers: a delivery already sent must still leave its
        queue."""
        wait_s = REDIS_RETRY_S[0]
        while True:
            if self.stopped:
                raise asyncio.CancelledError  # the worker reloads or has dropped the bot
            try:
                return await call(argument)
            except (RedisError, OSError) as error:
                log.warning("redis unavailable to the sender: %s", error, extra=self._context())
                await asyncio.sleep(random.uniform(0, wait_s))
                wait_s = min(wait_s * 2, REDIS_RETRY_S[1])
