"""One refresh subscription per gateway process, fanned out to every connection of a bot.

The hub reads each published refresh once, takes its seq and epoch once, and hands the same
`Refresh` object (the exact published text, SPEC 2.1 rule 11) to each subscriber's bounded queue:
nothing is serialized or parsed per client, and the refresh path makes no per-client Redis call.

It keeps each bot's stream gap-free itself: a seq that jumps (a message lost while the subscription
was down) is filled from the refresh log before the jump is dispatched, and what the log no longer
holds is skipped (SPEC 2.1 rule 7). A short ring of recent refreshes per bot lets a connection
that subscribes just after its snapshot catch up without Redis. A Redis outage only pauses the
hub: it resubscribes with capped, jittered backoff and catches every subscribed bot up from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from libs.ops.health import Health
from libs.store import keys
from libs.store.client import RedisNodes
from libs.wire.frames import refresh_head
from services.gateway import metrics
from services.gateway.protocol import seq_of_entry_id
from services.gateway.wsprotocol import text_frame

log = logging.getLogger(__name__)

LogEntries = list[tuple[str, dict[str, str]]]
SUBSCRIPTION_CHECK = "refresh_subscription"
RING_LEN = 64
LOG_READ_CHUNK = 200
POLL_S = 1.0
IDLE_PING_S = 5.0
PONG_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


@dataclass(slots=True, eq=False)
class Refresh:
    """One published refresh, shared by every connection of the bot. `received_s` is the loop
    time it reached this gateway (None when read from the log), for the publish-to-send metric."""

    seq: int
    epoch: str
    text: str
    received_s: float | None
    _frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The refresh as one websocket text frame, built once for every client: a server's
        frames are unmasked and Bandwagon negotiates no extension, so every connection would
        put the very same bytes on the wire."""
        if self._frame is None:
            self._frame = text_frame(self.text)
        return self._frame


class Subscriber(Protocol):
    def push(self, refresh: Refresh) -> None:
        """Queue without awaiting: fan-out to one client must never delay another."""


@dataclass(slots=True)
class _BotStream:
    """The newest refreshes of one bot, consecutive seqs of one epoch, newest last."""

    epoch: str
    ring: deque[Refresh] = field(default_factory=lambda: deque(maxlen=RING_LEN))

    @property
    def latest_seq(self) -> int:
        return self.ring[-1].seq if self.ring else 0


async def read_log(
    redis: Redis, bot: str, first_seq: int, last_seq: int | None, epoch: str | None
) -> list[Refresh]:
    """Refreshes `first_seq`..`last_seq` (None: to the newest) that the log still holds, in order,
    at most `LOG_READ_CHUNK` of them; entries of another epoch (a reset raced us) are left out."""
    entries = cast(
        LogEntries,
        await redis.xrange(
            keys.refresh_log(bot),
            min=f"{first_seq}-0",
            max="+" if last_seq is None else f"{last_seq}-0",
            count=LOG_READ_CHUNK,
        ),
    )
    found: list[Refresh] = []
    for entry_id, fields in entries:
        text = fields.get("msg")
        head = None if text is None else refresh_head(text)
        if text is None or head is None or (epoch is not None and head[1] != epoch):
            continue
        found.append(
            Refresh(seq=seq_of_entry_id(entry_id), epoch=head[1], text=text, received_s=None)
        )
    return found


class Hub:
    def __init__(self, redis: Redis | RedisNodes, health: Health) -> None:
        self._nodes = RedisNodes.wrapping(redis)
        self._health = health
        self._streams: dict[str, _BotStream] = {}
        self._subscribers: dict[str, dict[Subscriber, None]] = {}
        self._wanted_changed = asyncio.Event()
        health.set_check(SUBSCRIPTION_CHECK, False)

    # -- what connections use ------------------------------------------------------------------

    def subscribe(self, bot: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(bot)
        if subscribers is None:
            subscribers = self._subscribers[bot] = {}
            self._wanted_changed.set()  # the listener subscribes to the bot's channel
        subscribers[subscriber] = None

    def unsubscribe(self, bot: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(bot)
        if subscribers is not None:
            subscribers.pop(subscriber, None)
            if not subscribers:
                del self._subscribers[bot]
                # what arrives for it from now on is dropped, so its ring would go stale
                self._streams.pop(bot, None)
                self._wanted_changed.set()

    def latest(self, bot: str) -> Refresh | None:
        stream = self._streams.get(bot)
        return stream.ring[-1] if stream is not None and stream.ring else None

    def ring_range(self, bot: str, epoch: str, first_seq: int, last_seq: int) -> list[Refresh]:
        """The held part of `first_seq`..`last_seq`, or [] when the ring does not start by
        `first_seq` (the caller then reads the log)."""
        stream = self._streams.get(bot)
        if stream is None or stream.epoch != epoch or not stream.ring:
            return []
        start = first_seq - stream.ring[0].seq
        if start < 0 or first_seq > stream.latest_seq:
            return []
        count = min(last_seq, stream.latest_seq) - first_seq + 1
        return [stream.ring[start + offset] for offset in range(count)]

    # -- the listener -----------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, listen, and after any failure resubscribe with capped jittered backoff;
        websockets stay open meanwhile (they just get nothing new)."""
        backoff_s = BACKOFF_FIRST_S
        while True:
            listeners: dict[Redis, _Listener] = {}
            try:
                await self._nodes.refresh()
                for redis in self._nodes.masters():
                    listeners[redis] = _Listener(redis, self._nodes.cluster, self)
                    await listeners[redis].open()
                self._health.set_check(SUBSCRIPTION_CHECK, True)
                log.info("refresh subscription live")
                backoff_s = BACKOFF_FIRST_S
                await self._follow_wanted(listeners)
            except (RedisError, OSError, TimeoutError) as error:
                log.warning("refresh subscription lost, retrying in %.1f s: %s", backoff_s, error)
            finally:
                self._health.set_check(SUBSCRIPTION_CHECK, False)
                for listener in listeners.values():
                    await listener.close()
            await asyncio.sleep(random.uniform(backoff_s / 2, backoff_s))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def _follow_wanted(self, listeners: dict[Redis, _Listener]) -> None:
        """Keep one subscription per bot with connections, on the Redis that owns its channel
        (SPEC 4.1 rule 13), until a listener fails."""
        placed: dict[str, _Listener] = {}
        while True:
            self._wanted_changed.clear()
            wanted = set(self._subscribers)
            for bot in sorted(placed.keys() - wanted):
                await placed.pop(bot).unsubscribe(bot)
            for bot in sorted(wanted - placed.keys()):
                listener = listeners.get(self._nodes.for_bot(bot))
                if listener is None:  # a master unknown at the last (re)start: start again
                    raise RedisError(f"the slot of bot {bot} moved to another Redis")
                await listener.subscribe(bot)
                placed[bot] = listener
            changed = asyncio.ensure_future(self._wanted_changed.wait())
            try:
                done, _ = await asyncio.wait(
                    [changed, *(listener.task for listener in listeners.values())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
            for listener in listeners.values():
                if listener.task in done:
                    listener.task.result()  # its error ends this subscription
                    raise RedisError("a refresh listener stopped")

    async def on_subscribed(self, bot: str) -> None:
        """Once a bot's channel is subscribed: what was published before (since the snapshot of
        a connection that is waiting for it) reaches its connections now, not at the bot's next
        refresh (SPEC 2.1 rule 7)."""
        if bot not in self._subscribers:
            return
        redis = self._nodes.for_bot(bot)
        newest = cast(LogEntries, await redis.xrevrange(keys.refresh_log(bot), count=1))
        if newest:
            text = newest[0][1].get("msg")
            if text is not None:
                await self._on_published(bot, text, None)

    async def on_message(self, bot: str, text: str, received_s: float) -> None:
        if bot not in self._subscribers:
            metrics.REFRESHES_UNSERVED.inc()  # in flight while unsubscribing: none after
            return
        metrics.REFRESHES_SERVED.inc()
        await self._on_published(bot, text, received_s)

    async def _on_published(self, bot: str, text: str, received_s: float | None) -> None:
        head = refresh_head(text)
        if head is None:
            log.warning("ignored a published message that is not a refresh", extra={"bot": bot})
            return
        seq, epoch = head
        stream = self._streams.get(bot)
        if stream is None or stream.epoch != epoch:
            stream = self._streams[bot] = _BotStream(epoch=epoch)  # a new history (2.1 rule 8)
        elif seq <= stream.latest_seq:
            return  # already dispatched, e.g. by a catch-up that raced the live copy
        elif stream.ring and seq > stream.latest_seq + 1:
            for missed in await self._read_gap(bot, epoch, stream.latest_seq + 1, seq - 1):
                self._dispatch(bot, stream, missed)
        self._dispatch(bot, stream, Refresh(seq, epoch, text, received_s))

    async def _read_gap(
        self, bot: str, epoch: str, first_seq: int, last_seq: int
    ) -> Sequence[Refresh]:
        found: list[Refresh] = []
        while first_seq <= last_seq:
            chunk = await read_log(self._nodes.for_bot(bot), bot, first_seq, last_seq, epoch)
            if not chunk:
                break
            found += chunk
            first_seq = chunk[-1].seq + 1
        if found or first_seq <= last_seq:
            log.info("filled %d missed refreshes from the log", len(found), extra={"bot": bot})
        return found

    def _dispatch(self, bot: str, stream: _BotStream, refresh: Refresh) -> None:
        if stream.ring and stream.ring[-1].seq + 1 != refresh.seq:
            stream.ring.clear()  # the ring stays consecutive; a skipped seq restarts it
        stream.ring.append(refresh)
        subscribers = self._subscribers.get(bot)
        if subscribers:
            for subscriber in tuple(subscribers):
                subscriber.push(refresh)


class _Listener:
    """The refresh subscriptions held on one Redis (the one Redis, or one cluster master): a
    channel per bot, SUBSCRIBE on one Redis, SSUBSCRIBE on a cluster, read by one task that
    pings an idle connection so a dead one is noticed."""

    def __init__(self, redis: Redis, sharded: bool, hub: Hub) -> None:
        self._pubsub: PubSub = redis.pubsub()
        self._sharded = sharded
        self._hub = hub
        self._leaving: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None, "open() first"
        return self._task

    async def open(self) -> None:
        await self._pubsub.ping()  # connects, so the reader has a connection to read
        self._task = asyncio.create_task(self._read())

    async def subscribe(self, bot: str) -> None:
        channel = keys.refresh_channel(bot)
        self._leaving.discard(channel)
        if self._sharded:
            await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(channel)

    async def unsubscribe(self, bot: str) -> None:
        channel = keys.refresh_channel(bot)
        self._leaving.add(channel)
        if self._sharded:
            await self._pubsub.sunsubscribe(channel)
        else:
            await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError, TimeoutError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        last_traffic_s = loop.time()
        ping_sent_s: float | None = None
        while True:
            message = await self._pubsub.get_message(timeout=POLL_S)
            now_s = loop.time()
            if message is None:
                if ping_sent_s is not None and now_s - ping_sent_s > PONG_TIMEOUT_S:
                    raise TimeoutError("no answer to PING on the refresh subscription")
                if ping_sent_s is None and now_s - last_traffic_s > IDLE_PING_S:
                    await self._pubsub.ping()
                    ping_sent_s = now_s
                continue
            last_traffic_s, ping_sent_s = now_s, None
            kind = message["type"]
            if kind in ("message", "smessage"):
                channel = message["channel"]
                await self._hub.on_message(
                    keys.bot_from_refresh_channel(channel), message["data"], now_s
                )
            elif kind in ("subscribe", "ssubscribe"):
                await self._hub.on_subscribed(keys.bot_from_refresh_channel(message["channel"]))
            elif kind in ("unsubscribe", "sunsubscribe"):
                channel = message["channel"]
                if channel not in self._leaving:
                    # the server dropped it: its slot moved (a failover, a resharding)
                    raise RedisError(f"{channel} was unsubscribed by the server")
                self._leaving.discard(channel)
