"""The accounting worker's loop: strategy events in, refreshes out, each with its checkpoint in one
atomic commit (SPEC 2.1 rule 6), at the cadence of SPEC 2.1 rule 10.

Events are folded in memory and committed only with a refresh (or, when nothing visible changed,
with a bare checkpoint), so a crash between commits just re-reads the uncommitted events.

Each bot is a partition: replicas share the bots through leases (`libs.store.leases`) and every
commit is fenced by the bot's lease token, and runs only on the redis-server the bot's book was
read from, whose history was vouched for when the bot was taken (SPEC 2.1 rule 19,
`services.accounting.history`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import orjson
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from libs.config import BotConfig
from libs.errors import LeaseLost, MarketTermsPending
from libs.ops.timezone import local_time_zone_offset_min
from libs.store import keys, notices
from libs.store.bot_state import display_of, ensure_state
from libs.store.client import RedisNodes, side_by_side
from libs.store.leases import LeaseKeeper
from libs.store.partitions import PartitionId
from libs.store.published import read_server_record, stage_refresh_commit
from libs.store.server import ServerState, on_server, read_server
from libs.store.streams import read_streams
from libs.wire.events import StrategyEvent
from libs.wire.market import entry_key
from services.accounting.book import BotBook, Refresh
from services.accounting.history import (
    Continuity,
    continuity,
    describe,
    record_server,
    renew_epoch,
)

log = logging.getLogger(__name__)

EVENTS = Counter("bandwagon_accounting_events_total", "Strategy events applied", ["bot"])
REFRESHES = Counter("bandwagon_refreshes_total", "Refreshes published", ["bot"])
# Redis times a BLOCK out in its server cron, so up to 1/hz late (hz 10 by default): a wait for
# a due refresh ends this much early in Redis and the rest is slept here (SPEC 2.1 rule 10).
BLOCK_LATENESS_S = 0.1

SEQ = Gauge("bandwagon_refresh_seq", "Seq of the last published refresh", ["bot"])
UPDATE_TO_PUBLISH = Histogram(
    "bandwagon_update_to_publish_seconds",
    "From a market update's XADD to the PUBLISH of the refresh that reflects it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

YIELD_EVERY_S = 0.05  # the longest folding events holds the event loop
FILL_DELAY_S = 0.1  # SPEC 2.1 rule 10: refreshes >= 100 ms apart, a fill published within 100 ms


async def load_book(redis: Redis, bot: BotConfig) -> BotBook:
    """The book as of the last commit: seq and epoch, the published hashes, the folded ledgers,
    read in one transaction (one round trip, one consistent snapshot)."""
    async with redis.pipeline(transaction=True) as tx:
        tx.hmget(keys.meta(bot.id), ["seq", "epoch"])
        tx.hgetall(keys.accounting_state(bot.id))
        tx.hgetall(keys.status(bot.id))
        for symbol_config in bot.symbols:
            product_id = symbol_config.product_id
            tx.hgetall(keys.symbol(bot.id, product_id))
            tx.lindex(keys.klines(bot.id, product_id), -1)
            tx.lindex(keys.trades(bot.id, product_id), -1)
        (seq_text, epoch), saved, status, *per_symbol = await tx.execute()
    book = BotBook.fresh(bot, epoch=str(epoch), seq=int(seq_text or 1))
    if saved:
        book.checkpoint = str(saved["checkpoint"])
        for symbol, state in zip(book.symbols, orjson.loads(saved["book"]), strict=True):
            symbol.restore(state)
    book.published_status = {str(name): orjson.loads(value) for name, value in status.items()}
    for index, symbol in enumerate(book.symbols):
        scalars, last_kline, last_trade = per_symbol[3 * index : 3 * index + 3]
        symbol.published_scalars = {str(k): orjson.loads(v) for k, v in scalars.items()}
        symbol.last_published_kline = None if last_kline is None else orjson.loads(last_kline)
        if last_trade is not None:
            symbol.last_published_order_id = orjson.loads(last_trade)["order_id"]
    return book


def partition_of(bot_id: str) -> PartitionId:
    return PartitionId(bot_id, "accounting")


class AccountingWorker:
    def __init__(
        self,
        redis: Redis | RedisNodes,
        bots: list[BotConfig],
        keeper: LeaseKeeper,
        clock: Callable[[], float] = time.monotonic,
        batch_size: int = 1000,
    ) -> None:
        self.nodes = RedisNodes.wrapping(redis)
        self.bots = {bot.id: bot for bot in bots}
        self.keeper = keeper
        self.clock = clock
        self.batch_size = batch_size
        self.books: dict[str, BotBook] = {}
        self.last_publish_s: dict[str, float] = {}
        # (epoch, seq) of each bot's last commit by this process: survives reloads, so a Redis
        # that comes back without some of them is noticed even if its record says it cannot
        # have lost them (a damaged AOF). The server record decides otherwise (rule 19).
        self.committed: dict[str, tuple[str, int]] = {}

    @property
    def redis(self) -> Redis:
        """The one Redis (on a cluster: the configured node)."""
        return self.nodes.default

    async def load(self) -> None:
        """After a start or any Redis error: renew the leases, then every owned bot's book as of
        its last commit (memory may be ahead of it)."""
        await self.nodes.refresh()  # after any error: a failover moves slots (rule 13)
        owned = await self.keeper.beat()
        self.books = {}
        await self._take(owned)

    async def rebalance(self) -> None:
        """Keep the books still owned, load the ones acquired, drop the ones lost or given up."""
        owned = await self.keeper.beat()
        for bot_id in [bot_id for bot_id in self.books if partition_of(bot_id) not in owned]:
            del self.books[bot_id]
        await self._take({p for p in owned if p.bot not in self.books})

    async def _take(self, partitions: set[PartitionId]) -> None:
        """Load the books of `partitions`, a bounded number side by side (a thousand bots'
        books, each several round trips, one after another took seconds). The server each
        Redis is first, the books after: every commit confirms this server still answers, so
        the book it commits from was read from this server too."""
        servers: dict[Redis, ServerState] = {}
        for redis in dict.fromkeys(self.nodes.for_bot(p.bot) for p in partitions):
            servers[redis] = await read_server(redis)
        await side_by_side(lambda p: self._take_one(p, servers), sorted(partitions))

    async def _take_one(self, partition: PartitionId, servers: Mapping[Redis, ServerState]) -> None:
        # the state may be gone since this process started (`bandwagon reset`, a Redis that
        # lost everything): create it anew, with a new epoch, before any refresh
        redis = self.nodes.for_bot(partition.bot)
        try:
            bot, created = await ensure_state(
                redis, self.bots[partition.bot], local_time_zone_offset_min()
            )
        except MarketTermsPending as pending:  # tried again at the next beat
            log.debug("%s", pending, extra={"bot": partition.bot})
            return
        if created:
            log.info("bot state created", extra={"bot": bot.id})
        server = servers[redis]
        book = await load_book(redis, bot)
        book.redis_run_id = server.record.run_id
        book.unsaved_events = 1  # check once: config changes such as `enabled` show at start
        self.books[bot.id] = book
        self.last_publish_s.setdefault(bot.id, -1e9)
        try:
            await self._vouch_for_history(book, server)
        except LeaseLost:
            del self.books[bot.id]
            return
        SEQ.labels(bot=bot.id).set(book.seq)  # SPEC 4.1 rule 5: also for a bot yet to trade

    async def _vouch_for_history(self, book: BotBook, server: ServerState) -> None:
        """SPEC 2.1 rule 19, before anything more of the bot is published: a Redis that may
        have lost acknowledged writes gets the bot a new epoch (rule 5, state lost), whether or
        not any service saw it go down; one that cannot have keeps the epoch and is recorded."""
        bot = book.bot
        partition = partition_of(bot.id)
        redis = self.nodes.for_bot(bot.id)
        recorded = await read_server_record(redis, bot.id)
        verdict = continuity(recorded, server)
        reason = describe(recorded, server)
        remembered = self.committed.get(bot.id)
        if remembered is not None and remembered[0] == book.epoch and remembered[1] > book.seq:
            # whatever the server says (a damaged AOF): this process committed more than is left
            verdict = Continuity.MAY_HAVE_LOST
            reason = f"Redis holds seq {book.seq}, this worker had committed seq {remembered[1]}"
        if verdict is Continuity.MAY_HAVE_LOST:
            epoch = await renew_epoch(
                redis, self.keeper, partition, server.record, notify=bool(bot.notify)
            )
            log.warning(
                "state lost (SPEC 2.1 rule 19): %s; epoch %s ends at seq %d, new epoch %s",
                reason,
                book.epoch,
                book.seq,
                epoch,
                extra={"bot": bot.id},
            )
            book.epoch, book.seq = epoch, 1
            self.committed[bot.id] = (epoch, 1)
            REFRESHES.labels(bot=bot.id).inc()
            SEQ.labels(bot=bot.id).set(1)
        elif recorded != server.record:
            await record_server(redis, self.keeper, partition, server.record)
            if verdict is Continuity.DURABLE_RESTART:
                log.info(
                    "Redis restarted under appendfsync always, nothing acknowledged was lost: "
                    "epoch %s kept on %s",
                    book.epoch,
                    server.record.run_id,
                    extra={"bot": bot.id},
                )

    def _due_s(self, book: BotBook) -> float:
        """When this bot may publish next, given what is pending (SPEC 2.1 rule 10)."""
        last = self.last_publish_s[book.bot.id]
        if book.fill_pending:
            return last + FILL_DELAY_S
        return last + book.bot.refresh_interval_ms / 1000

    async def run_once(self, max_block_ms: int = 1000) -> None:
        if self.keeper.due():
            await self.rebalance()
        max_block_ms = max(1, min(max_block_ms, int(self.keeper.seconds_until_due() * 1000)))
        if not self.books:
            await asyncio.sleep(max_block_ms / 1000)  # owning nothing: wait for the next beat
            return
        now = self.clock()
        waits = [self._due_s(book) - now for book in self.books.values() if book.unsaved_events]
        due_in_s = min(waits, default=None)
        block_ms: int | None
        if due_in_s is not None and due_in_s <= BLOCK_LATENESS_S:
            # Redis would time this wait out late: sleep it here, then read without blocking
            await asyncio.sleep(max(0.0, due_in_s))
            block_ms = None
        else:
            budget_s = max_block_ms / 1000
            if due_in_s is not None:
                budget_s = min(budget_s, due_in_s - BLOCK_LATENESS_S)
            block_ms = max(1, int(budget_s * 1000))
        streams = {keys.events(bot_id): book.checkpoint for bot_id, book in self.books.items()}
        reply = await read_streams(self.nodes, streams, count=self.batch_size, block_ms=block_ms)
        loop = asyncio.get_running_loop()
        yield_at = loop.time() + YIELD_EVERY_S
        for stream, entries in reply:
            if loop.time() >= yield_at:  # let the lease renewals and the health port run
                await asyncio.sleep(0)
                yield_at = loop.time() + YIELD_EVERY_S
            book = self.books[keys.bot_of(stream)]
            for entry_id, fields in entries:
                book.apply(entry_id, StrategyEvent.from_fields(fields))
            EVENTS.labels(bot=book.bot.id).inc(len(entries))
        now = self.clock()
        due = [b for b in self.books.values() if b.unsaved_events and now >= self._due_s(b)]
        # side by side, each bot's commit on a connection of its own, a bounded number at once
        await side_by_side(self._publish_fenced, due)

    async def _publish_fenced(self, book: BotBook) -> None:
        try:
            await self._maybe_publish(book)
        except LeaseLost as lost:
            log.warning("commit fenced off: %s", lost, extra={"bot": book.bot.id})
            self.books.pop(book.bot.id, None)

    async def _maybe_publish(self, book: BotBook) -> None:
        now = self.clock()
        if book.unsaved_events == 0 or now < self._due_s(book):
            return
        offset = local_time_zone_offset_min()
        refresh = book.next_refresh(offset)
        if refresh is None:
            await self._save_checkpoint(book)
            return
        await self._commit(book, refresh)
        self.last_publish_s[book.bot.id] = now

    async def _commit(self, book: BotBook, refresh: Refresh) -> None:
        bot = book.bot
        partition = partition_of(bot.id)
        async with self.nodes.for_bot(bot.id).pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition], check=on_server(book.redis_run_id))
            stage_refresh_commit(
                tx,
                bot=bot.id,
                seq=refresh.seq,
                refresh_text=refresh.text,
                status=refresh.status,
                symbols=refresh.symbols,
                display=display_of(bot),
                refresh_log_len=bot.refresh_log_len,
                accounting_fields=book.accounting_fields(),
            )
            tx.xtrim(keys.events(bot.id), minid=book.checkpoint, approximate=True)
            if bot.notify:  # the webhooks hear of a fill in the commit that publishes it
                published = [(symbol.product_id, symbol.fills) for symbol in refresh.symbols]
                notices.stage_fills(
                    tx, bot=bot.id, epoch=book.epoch, fills=notices.fills_in_id_order(published)
                )
            await self.keeper.commit(tx, [partition])
        book.published(refresh)
        self.committed[bot.id] = (book.epoch, refresh.seq)
        REFRESHES.labels(bot=bot.id).inc()
        SEQ.labels(bot=bot.id).set(refresh.seq)
        if refresh.newest_entry_id:
            entry_ms, _ = entry_key(refresh.newest_entry_id)
            UPDATE_TO_PUBLISH.observe(max(0.0, time.time() - entry_ms / 1000))

    async def _save_checkpoint(self, book: BotBook) -> None:
        partition = partition_of(book.bot.id)
        async with self.nodes.for_bot(book.bot.id).pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition], check=on_server(book.redis_run_id))
            tx.hset(keys.accounting_state(book.bot.id), mapping=book.accounting_fields())
            tx.xtrim(keys.events(book.bot.id), minid=book.checkpoint, approximate=True)
            await self.keeper.commit(tx, [partition])
        book.saved()
