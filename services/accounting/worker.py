"""The accounting worker's loop: strategy events in, refreshes out, each with its checkpoint in one
atomic commit (SPEC 2.1 rule 6), at the cadence of SPEC 2.1 rule 10.

Events are folded in memory and committed only with a refresh (or, when nothing visible changed,
with a bare checkpoint), so a crash between commits just re-reads the uncommitted events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

import orjson
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from libs import keys
from libs.bot_state import display_of
from libs.config import BotConfig
from libs.ops.health import PARTITIONS_OWNED
from libs.ops.timezone import local_time_zone_offset_min
from libs.store import stage_refresh_commit
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


class AccountingWorker:
    def __init__(
        self,
        redis: Redis,
        bots: list[BotConfig],
        clock: Callable[[], float] = time.monotonic,
        batch_size: int = 1000,
    ) -> None:
        self.redis = redis
        self.bots = bots
        self.clock = clock
        self.batch_size = batch_size
        self.books: dict[str, BotBook] = {}
        self.last_publish_s: dict[str, float] = {}

    async def load(self) -> None:
        self.books = {bot.id: await load_book(self.redis, bot) for bot in self.bots}
        for book in self.books.values():
            book.unsaved_events = 1  # check once: config changes such as `enabled` show at start
        self.last_publish_s = {bot.id: -1e9 for bot in self.bots}
        PARTITIONS_OWNED.set(len(self.books))

    def _due_s(self, book: BotBook) -> float:
        """When this bot may publish next, given what is pending (SPEC 2.1 rule 10)."""
        last = self.last_publish_s[book.bot.id]
        if book.fill_pending:
            return last + FILL_DELAY_S
        return last + book.bot.refresh_interval_ms / 1000

    async def run_once(self, max_block_ms: int = 1000) -> None:
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
        for book in self.books.values():
            await self._maybe_publish(book)

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
        async with self.redis.pipeline(transaction=True) as tx:
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
            await tx.execute()
        book.published(refresh)
        REFRESHES.labels(bot=bot.id).inc()
        SEQ.labels(bot=bot.id).set(refresh.seq)
        if refresh.newest_entry_id:
            entry_ms = int(refresh.newest_entry_id.split("-", 1)[0])
            UPDATE_TO_PUBLISH.observe(max(0.0, time.time() - entry_ms / 1000))

    async def _save_checkpoint(self, book: BotBook) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.accounting_state(book.bot.id), mapping=book.accounting_fields())
            tx.xtrim(keys.events(book.bot.id), minid=book.checkpoint, approximate=True)
            await tx.execute()
        book.saved()
