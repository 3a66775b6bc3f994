"""The notify worker's loop: the notify feed in, pending deliveries out, each batch with its feed
checkpoint in one fenced commit (SPEC 6.1 rules 5 and 6), and a sender per webhook draining
them (`services.notify.sender`).

Each bot with webhooks is a partition, shared by the replicas through leases like accounting's
(4.1 rule 9). A commit fenced off means another replica owns the bot now: its senders stop and
the new owner's take over the queues where they stand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import orjson
from prometheus_client import Gauge
from pydantic import SecretStr
from redis.asyncio import Redis

from libs.config import BotConfig, Webhook
from libs.errors import LeaseLost
from libs.ops.worker_shell import supervised
from libs.store import keys
from libs.store.client import RedisNodes, side_by_side
from libs.store.leases import LeaseKeeper
from libs.store.notices import (
    EPOCH,
    Delivery,
    FeedEntry,
    first_feed_id,
    pending_count,
    read_state,
    stage_deliveries,
)
from libs.store.partitions import PartitionId
from libs.store.streams import read_streams
from libs.wire.market import entry_key
from libs.wire.notifications import delivery_id, epoch_body, fill_deliveries
from libs.wire.notify_events import NOTIFY_EVENTS
from services.notify.schedule import RetryPolicy
from services.notify.sender import FAILED, HookSender, wall_ms
from services.notify.sinks import new_client, new_ssl_context, sink_for

log = logging.getLogger(__name__)

FeedEntries = list[tuple[str, dict[str, str]]]

STOP_WAIT_S = 0.5  # between cancels of a sender that has not stopped yet

PENDING = Gauge("bandwagon_notify_pending", "Deliveries waiting for a 2xx", ["bot"])


def partition_of(bot_id: str) -> PartitionId:
    return PartitionId(bot_id, "notify")


def notify_partitions(bots: list[BotConfig]) -> list[PartitionId]:
    """One partition per bot with webhooks: a bot without any costs the notify worker nothing."""
    return [partition_of(bot.id) for bot in bots if bot.notify]


def deliveries_of(
    bot: str, hooks: Mapping[str, Webhook], entry: FeedEntry, now_ms: int
) -> dict[str, list[Delivery]]:
    """The deliveries one feed entry makes, by hook id: one per kind each webhook hears."""
    made: dict[str, list[Delivery]] = {}
    if entry.kind == EPOCH:
        the_id = delivery_id(entry.epoch, 0, "epoch")
        body = epoch_body(bot=bot, epoch=entry.epoch, created_ms=entry.time_ms)
        for hook_id, hook in hooks.items():
            if "epoch" in hook.events:
                made[hook_id] = [Delivery("", the_id, "epoch", body, now_ms)]
        return made
    every_kind = fill_deliveries(  # each body encoded once, whichever webhooks hear it
        bot=bot,
        epoch=entry.epoch,
        product_id=entry.product_id,
        trade=orjson.loads(entry.trade),
        listens=NOTIFY_EVENTS,
    )
    items = [Delivery("", i, kind, body, now_ms) for i, kind, body in every_kind]
    for hook_id, hook in hooks.items():
        heard = [item for item in items if item.event in hook.events]
        if heard:
            made[hook_id] = heard
    return made


class BotNotices:
    """What this replica holds of one owned bot: its feed checkpoint and its senders."""

    def __init__(self, bot: BotConfig, checkpoint: str, pending: int) -> None:
        self.bot = bot
        self.checkpoint = checkpoint
        self.pending = pending
        self.hooks = {hook.hook_id: hook for hook in bot.notify}
        self.senders: dict[str, HookSender] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.orphans: list[str] = []
        """Hook ids of receivers no longer configured whose queues still hold deliveries."""

    @property
    def hook_ids(self) -> list[str]:
        return sorted([*self.hooks, *self.orphans])

    async def stop(self) -> None:
        """Stop the senders and wait until they have: a sender that outlived its stop would
        post beside its successor. Each is told twice, by its flag (checked before every attempt
        and every Redis call) and by cancellation, and cancelled again until done: on Python
        3.11 a cancel that lands as redis-py's `wait_for` completes can be lost (CPython
        gh-86296)."""
        for sender in self.senders.values():
            sender.stopped = True
        tasks, self.tasks = self.tasks, []
        while tasks:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            tasks = list(pending)
        for sender in self.senders.values():
            await sender.client.aclose()


class NotifyWorker:
    def __init__(
        self,
        redis: Redis | RedisNodes,
        bots: list[BotConfig],
        keeper: LeaseKeeper,
        secrets: Mapping[tuple[str, str], SecretStr],
        *,
        telegram_api_url: str,
        policy: RetryPolicy | None = None,
        batch_size: int = 200,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.nodes = RedisNodes.wrapping(redis)
        self.bots = {bot.id: bot for bot in bots if bot.notify}
        self.keeper = keeper
        self.secrets = secrets
        self.telegram_api_url = telegram_api_url
        self.policy = policy or RetryPolicy()
        self.ssl_context = new_ssl_context()
        self.batch_size = batch_size
        self.clock_ms = clock_ms
        self.owned: dict[str, BotNotices] = {}

    async def load(self) -> None:
        """After a start or any Redis error: stop the senders, renew the leases, then take each
        owned bot's checkpoint and queues as committed (memory may be ahead of them)."""
        await self.stop_senders()
        await self.nodes.refresh()
        owned = await self.keeper.beat()
        await self._take(owned)

    async def rebalance(self) -> None:
        owned = await self.keeper.beat()
        for bot_id in [bot_id for bot_id in self.owned if partition_of(bot_id) not in owned]:
            await self._drop(bot_id)
        await self._take({p for p in owned if p.bot not in self.owned})

    async def stop_senders(self) -> None:
        for bot_id in list(self.owned):
            await self._drop(bot_id)

    async def _drop(self, bot_id: str) -> None:
        notices = self.owned.pop(bot_id, None)
        if notices is None:
            return
        await notices.stop()
        PENDING.remove(bot_id)  # its new owner reports it

    async def _take(self, partitions: set[PartitionId]) -> None:
        await side_by_side(self._take_one, sorted(partitions))

    async def _take_one(self, partition: PartitionId) -> None:
        bot = self.bots[partition.bot]
        redis = self.nodes.for_bot(bot.id)
        state = await read_state(redis, bot.id)
        checkpoint = state.checkpoint
        first = await first_feed_id(redis, bot.id)
        if checkpoint != "0-0" and first is not None and entry_key(first) > entry_key(checkpoint):
            # the feed keeps the checkpoint's own entry: past it, the cap trimmed unread fills
            FAILED.labels(bot=bot.id, reason="feed_trimmed").inc()
            log.warning(
                "the notify feed was trimmed past this bot's checkpoint %s (now from %s): "
                "fills in between were never turned into deliveries",
                checkpoint,
                first,
                extra={"bot": bot.id},
            )
        pending = 0
        for hook_id in {hook.hook_id for hook in bot.notify}:
            pending += await pending_count(redis, bot.id, hook_id)
        notices = BotNotices(bot, checkpoint, pending)
        for hook_id in sorted(set(state.hooks) - set(notices.hooks)):
            left = await pending_count(redis, bot.id, hook_id)
            if left:  # kept, and named at every take, until someone decides
                notices.orphans.append(hook_id)
                log.warning(
                    "%d deliveries wait for a receiver the bots file no longer lists (hook %s): "
                    "they stay in Redis; DEL %s drops them",
                    left,
                    hook_id,
                    keys.deliveries(bot.id, hook_id),
                    extra={"bot": bot.id},
                )
        self.owned[bot.id] = notices
        PENDING.labels(bot=bot.id).set(pending)
        for hook_id, hook in notices.hooks.items():
            sender = HookSender(
                nodes=self.nodes,
                bot=bot.id,
                hook_id=hook_id,
                sink=sink_for(
                    hook,
                    self.secrets[(bot.id, hook_id)].get_secret_value(),
                    self.telegram_api_url,
                ),
                client=new_client(self.ssl_context),
                policy=self.policy,
                on_done=self._delivered,
                clock_ms=self.clock_ms,
            )
            notices.senders[hook_id] = sender
            # a bug in a sender is logged and the sender started again (a stopped one returns)
            notices.tasks.append(asyncio.create_task(supervised(sender.run, {"bot": bot.id})))

    def _delivered(self, bot_id: str, removed: int) -> None:
        """A sender removed `removed` deliveries from its queue (0 when another had already)."""
        notices = self.owned.get(bot_id)
        if notices is not None and removed:
            notices.pending = max(0, notices.pending - removed)
            PENDING.labels(bot=bot_id).set(notices.pending)

    async def run_once(self, max_block_ms: int = 1000) -> None:
        if self.keeper.due():
            await self.rebalance()
        max_block_ms = max(1, min(max_block_ms, int(self.keeper.seconds_until_due() * 1000)))
        if not self.owned:
            await asyncio.sleep(max_block_ms / 1000)  # owning nothing: wait for the next beat
            return
        feeds = {keys.notify_feed(bot_id): n.checkpoint for bot_id, n in self.owned.items()}
        reply = await read_streams(self.nodes, feeds, count=self.batch_size, block_ms=max_block_ms)
        batches = [(self.owned[keys.bot_of(stream)], entries) for stream, entries in reply]
        await side_by_side(self._create_fenced, batches)

    async def _create_fenced(self, batch: tuple[BotNotices, FeedEntries]) -> None:
        notices, entries = batch
        try:
            await self._create(notices, entries)
        except LeaseLost as lost:
            log.warning("commit fenced off: %s", lost, extra={"bot": notices.bot.id})
            await self._drop(notices.bot.id)

    async def _create(self, notices: BotNotices, entries: FeedEntries) -> None:
        """One fenced commit: every delivery of `entries` and the checkpoint past them."""
        bot_id = notices.bot.id
        now_ms = self.clock_ms()
        created: dict[str, list[Delivery]] = {}
        for entry_id, fields in entries:
            entry = FeedEntry.from_fields(entry_id, fields)
            for hook_id, items in deliveries_of(bot_id, notices.hooks, entry, now_ms).items():
                created.setdefault(hook_id, []).extend(items)
        checkpoint = entries[-1][0]
        partition = partition_of(bot_id)
        async with self.nodes.for_bot(bot_id).pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition])
            stage_deliveries(
                tx, bot=bot_id, created=created, checkpoint=checkpoint, hooks=notices.hook_ids
            )
            await self.keeper.commit(tx, [partition])
        notices.checkpoint = checkpoint
        notices.pending += sum(len(items) for items in created.values())
        PENDING.labels(bot=bot_id).set(notices.pending)
        for hook_id in created:
            notices.senders[hook_id].wake.set()
