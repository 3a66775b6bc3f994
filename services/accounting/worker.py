"""The accounting worker's loop: strategy events in, refreshes out, each with its checkpoint in one
atomic commit (SPEC 2.1 rule 6), at the cadence of SPEC 2.1 rule 10.

Events are folded in memory and committed only with a refresh (or, when nothing visible changed,
with a bare checkpoint), so a crash between commits just re-reads the uncommitted events.

Each bot is a partition: replicas share the bots through leases (`libs.ops.leases`) and every
commit is fenced by the bot's lease token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import cast

import orjson
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from libs import keys
from libs.bot_state import display_of, ensure_state
from libs.config import BotConfig
from libs.errors import MarketTermsPending
from libs.ops.leases import LeaseKeeper, LeaseLost
from libs.ops.timezone import local_time_zone_offset_min
from libs.partitions import PartitionId
from libs.store import read_snapshot, stage_refresh_commit
from services.accounting.book import BotBook, Refresh

log = logging.getLogger(__name__)

EVENTS = Counter("bandwagon_accounting_events_total", "Strategy events applied", ["bot"])
REFRESHES = Counter("bandwagon_refreshes_total", "Refreshes published", ["bot"])
SEQ = Gauge("bandwagon_refresh_seq", "Seq of the last published refresh", ["bot"])
UPDATE_TO_PUBLISH = Histogram(
    "bandwagon_update_to_publish_seconds",
    "From a market update's XADD to the PUBLISH of the refresh that reflects it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

FILL_DELAY_S = 0.1  # SPEC 2.1 rule 10: refreshes >= 100 ms apart, a fill published within 100 ms

StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]] | None


async def load_book(redis: Redis, bot: BotConfig) -> BotBook:
    """The book as of the last commit: seq and epoch, the published hashes, the folded ledgers."""
    seq_text, epoch = await redis.hmget(keys.meta(bot.id), ["seq", "epoch"])
    book = BotBook.fresh(bot, epoch=str(epoch), seq=int(seq_text or 1))
    saved = await redis.hgetall(keys.accounting_state(bot.id))
    if saved:
        book.checkpoint = str(saved["checkpoint"])
        for symbol, state in zip(book.symbols, orjson.loads(saved["book"]), strict=True):
            symbol.restore(state)
    status = await redis.hgetall(keys.status(bot.id))
    book.published_status = {str(name): orjson.loads(value) for name, value in status.items()}
    for symbol in book.symbols:
        scalars = await redis.hgetall(keys.symbol(bot.id, symbol.product_id))
        symbol.published_scalars = {str(k): orjson.loads(v) for k, v in scalars.items()}
        last_kline = await redis.lindex(keys.klines(bot.id, symbol.product_id), -1)
        symbol.last_published_kline = None if last_kline is None else orjson.loads(last_kline)
        last_trade = await redis.lindex(keys.trades(bot.id, symbol.product_id), -1)
        if last_trade is not None:
            symbol.last_published_order_id = orjson.loads(last_trade)["order_id"]
    return book


def partition_of(bot_id: str) -> PartitionId:
    return PartitionId(bot_id, "accounting")


class AccountingWorker:
    def __init__(
        self,
        redis: Redis,
        bots: list[BotConfig],
        keeper: LeaseKeeper,
        clock: Callable[[], float] = time.monotonic,
        batch_size: int = 1000,
    ) -> None:
        self.redis = redis
        self.bots = {bot.id: bot for bot in bots}
        self.keeper = keeper
        self.clock = clock
        self.batch_size = batch_size
        self.books: dict[str, BotBook] = {}
        self.last_publish_s: dict[str, float] = {}
        # (epoch, seq) of each bot's last commit by this process: survives reloads, so a Redis
        # that comes back without some of them (AOF `everysec`) is noticed (SPEC 2.1 rule 5).
        self.committed: dict[str, tuple[str, int]] = {}

    async def load(self) -> None:
        """After a start or any Redis error: renew the leases, then every owned bot's book as of
        its last commit (memory may be ahead of it)."""
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
        for partition in sorted(partitions):
            # the state may be gone since this process started (`bandwagon reset`, a Redis that
            # lost everything): create it anew, with a new epoch, before any refresh
            try:
                bot, created = await ensure_state(
                    self.redis, self.bots[partition.bot], local_time_zone_offset_min()
                )
            except MarketTermsPending as pending:  # tried again at the next beat
                log.debug("%s", pending, extra={"bot": partition.bot})
                continue
            if created:
                log.info("bot state created", extra={"bot": bot.id})
            book = await load_book(self.redis, bot)
            book.unsaved_events = 1  # check once: config changes such as `enabled` show at start
            self.books[bot.id] = book
            self.last_publish_s.setdefault(bot.id, -1e9)
            try:
                await self._renew_history_if_lost(book)
            except LeaseLost:
                del self.books[bot.id]

    async def _renew_history_if_lost(self, book: BotBook) -> None:
        """SPEC 2.1 rule 5: a state lost gets a new epoch. Redis came back holding an older seq
        of this epoch than this process committed (a Redis host crash under `appendfsync
        everysec` loses up to a second of writes): refreshes clients saw no longer exist and are
        about to be recomputed with other contents. So the history starts again: refresh 1 of a
        new epoch is the state as Redis holds it now, and the old log goes, so no client resumes
        across the loss; every client sees the new epoch and re-inits (rule 8)."""
        bot = book.bot
        remembered = self.committed.get(bot.id)
        if remembered is None or remembered[0] != book.epoch or remembered[1] <= book.seq:
            return
        snapshot = await read_snapshot(self.redis, bot.id)
        epoch = secrets.token_hex(8)
        data = {"symbols": snapshot.symbols, "status": snapshot.status}
        text = orjson.dumps({"action": "refresh", "seq": 1, "epoch": epoch, "data": data})
        partition = partition_of(bot.id)
        async with self.redis.pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition])
            tx.delete(keys.refresh_log(bot.id))
            tx.hset(keys.meta(bot.id), mapping={"epoch": epoch, "seq": "1"})
            tx.xadd(keys.refresh_log(bot.id), {"msg": text}, id="1-0")
            tx.publish(keys.refresh_channel(bot.id), text)
            await self.keeper.commit(tx, [partition])
        log.warning(
            "state lost: Redis holds seq %d of epoch %s, this worker had committed seq %d; "
            "new epoch %s",
            book.seq,
            book.epoch,
            remembered[1],
            epoch,
            extra={"bot": bot.id},
        )
        book.epoch, book.seq = epoch, 1
        self.committed[bot.id] = (epoch, 1)

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
        block_ms = max(1, min([max_block_ms, *(int(w * 1000) + 1 for w in waits)]))
        streams = {keys.events(bot_id): book.checkpoint for bot_id, book in self.books.items()}
        reply = cast(
            StreamReply,
            await self.redis.xread(streams, count=self.batch_size, block=block_ms),  # type: ignore[arg-type]
        )
        for stream, entries in reply or []:
            book = self.books[stream.split("{", 1)[1].split("}", 1)[0]]
            for entry_id, fields in entries:
                book.apply(entry_id, orjson.loads(fields["data"]))
            EVENTS.labels(bot=book.bot.id).inc(len(entries))
        for book in list(self.books.values()):
            try:
                await self._maybe_publish(book)
            except LeaseLost as lost:
                log.warning("commit fenced off: %s", lost, extra={"bot": book.bot.id})
                del self.books[book.bot.id]

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
        async with self.redis.pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition])
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
            await self.keeper.commit(tx, [partition])
        book.published(refresh)
        self.committed[bot.id] = (book.epoch, refresh.seq)
        REFRESHES.labels(bot=bot.id).inc()
        SEQ.labels(bot=bot.id).set(refresh.seq)
        if refresh.newest_entry_id:
            entry_ms = int(refresh.newest_entry_id.split("-", 1)[0])
            UPDATE_TO_PUBLISH.observe(max(0.0, time.time() - entry_ms / 1000))

    async def _save_checkpoint(self, book: BotBook) -> None:
        partition = partition_of(book.bot.id)
        async with self.redis.pipeline(transaction=True) as tx:
            await self.keeper.guard(tx, [partition])
            tx.hset(keys.accounting_state(book.bot.id), mapping=book.accounting_fields())
            tx.xtrim(keys.events(book.bot.id), minid=book.checkpoint, approximate=True)
            await self.keeper.commit(tx, [partition])
        book.saved()
