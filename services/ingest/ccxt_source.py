"""The `ccxt` market source: a real exchange's klines and trades, through CCXT, into the same
market streams as `synthetic` and `replay` (SPEC section 1, 4.1 rule 8).

Per stream (exchange, symbol, kline size), in order, never out of it:

1. **Backfill.** The closed klines the stream lacks (at first start the last `kline_history`),
   from `fetch_ohlcv`, page by page: one update per kline at its close_time, priced at its close,
   exactly as a klines file row (SPEC 3.1 rule 1).
2. **The forming kline.** Trades since the last update (or since the current period opened),
   from `fetch_trades`, built into klines by `TradeKlineBuilder` like a trades replay: the ccxt
   source consumes trades (SPEC 4.1 rule 8).
3. **Live.** `watch_trades` (CCXT's websocket) where the exchange has it, else `fetch_trades`
   polled at a pace that leaves room in the exchange's `rateLimit`. A quiet socket is checked by
   REST once a period, so a socket that died silently costs at most a period.

After any error (disconnect, exchange error, HTTP 429) the follower backs off (capped, jittered,
longer for rate limits) and starts again at 1, so a gap is backfilled in order before live data
resumes: the klines of the periods missed (the one a trade had started is completed by the
exchange's whole kline) and then the trades of the current period.

Exactly once across restarts: every entry's `src` is `ccxt:<exchange>:<symbol>:k<open time>` or
`...:t<trade id>`, the writer reads the stream's last entry back before it writes again, and the
follower restarts after that entry. `FeedState` is the pure part (no IO, no clock).

CCXT itself (clients, candle and trade parsing, `fetch_ohlcv` paging, backoff) is in
`libs/exchange`, shared with `bandwagon download`; this module is what ingest makes of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from libs.config import BotConfig, BotsFile, MarketTerms
from libs.core.market import (
    ROW_TIME_NOT_INCREASING,
    ROW_TIME_OFF_PERIOD,
    Kline,
    MarketUpdate,
    TradeKlineBuilder,
    validate_kline,
)
from libs.core.periods import kline_close_time, kline_open_time
from libs.errors import BadMarketData
from libs.exchange.backoff import BackoffSettings, ExchangeBackoff, SocketReplaced, error_kind
from libs.exchange.candles import candle_pages, parse_candle, parse_trade
from libs.exchange.market_files import Reject
from libs.exchange.markets import (
    SymbolMetadata,
    ccxt_symbol,
    check_exchange_id,
    counts_decimals,
    exchange_ids,
    new_exchange,
)
from libs.ops.health import Health
from libs.store import keys
from libs.store.client import RedisNodes
from libs.store.market_terms import changed_terms, frozen_terms, store_terms_until_stored
from services.ingest.ccxt_markets import check_markets
from services.ingest.sources import Item, LastEntry
from services.ingest.writer import (
    EARLIER_THAN_STREAM,
    UPDATES,
    StreamRewound,
    StreamSpec,
    StreamWriter,
    report_reject,
)

log = logging.getLogger(__name__)

STALE = Gauge(
    "bandwagon_ingest_stale",
    "1 while a stream has heard nothing from its exchange for stale_periods kline periods",
    ["stream"],
)
EXCHANGE_ERRORS = Counter(
    "bandwagon_ingest_exchange_errors_total",
    "Failed exchange calls, by kind (rate_limited, network, exchange, unexpected)",
    ["stream", "kind"],
)
FRESH_CHECK = "market data fresh"
RECENT_TRADE_IDS = 10_000  # ids remembered to drop trades seen twice (REST and websocket overlap)
TRADES_WINDOW_MS = 3_600_000  # `since`..`until` of one fetch_trades page (Binance's limit; MEXC
# wants `until` whenever `since` is given)
SEPARATOR_FREE = str.maketrans({chr(code): "?" for code in range(32)})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CcxtSettings(BackoffSettings):
    """How the ccxt source behaves, its waits after failed calls included (`BackoffSettings`);
    defaults suit real exchanges, tests shorten the waits."""

    stale_periods: float = 3.0  # no word from the exchange for this many periods: stale
    websocket: bool = True  # False: poll REST even where CCXT has watch_trades
    urls: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    quiet_check_s: float | None = None  # REST check of a silent socket; None: one period
    poll_min_s: float = 1.0
    check_s: float = 1.0  # how often staleness is evaluated
    market_load_attempts: int = 0  # 0: retry loading markets until stopped


# --- the pure part -------------------------------------------------------------------------------


def kline_src(exchange_id: str, symbol: str, open_ms: int) -> str:
    return f"ccxt:{exchange_id}:{symbol}:k{open_ms}"


def trade_src(exchange_id: str, symbol: str, trade_id: str) -> str:
    return f"ccxt:{exchange_id}:{symbol}:t{trade_id}"


@dataclass(slots=True)
class Batch:
    """What one exchange response adds: items to write in order, and rejected rows to report
    as (line label, reject)."""

    items: list[Item] = field(default_factory=list)
    rejects: list[tuple[str, Reject]] = field(default_factory=list)


class FeedState:
    """Where a stream stands, and what a response of the exchange adds to it. No IO, no clock:
    callers pass `now_ms`.

    Invariants: updates come out in time order, after the stream's last entry; a closed kline
    written whole (a klines row) is never touched again; a trade is written once.
    """

    def __init__(
        self, exchange_id: str, symbol: str, period_ms: int, last: LastEntry | None
    ) -> None:
        self.exchange_id = exchange_id
        self.symbol = symbol
        self.period_ms = period_ms
        self.prefix = f"ccxt:{exchange_id}:{symbol}:"
        self.last_time_ms: int | None = None
        self.kline_ms: int | None = None  # open time of the last update's kline
        self.kline_whole = True  # that kline is closed and complete (a row, or another source's)
        self.covered_until_ms: int | None = None  # klines were fetched up to here: no trades
        self.builder = TradeKlineBuilder(period_ms)
        self.recent_ids: OrderedDict[str, None] = OrderedDict()
        if last is None:
            return
        self.last_time_ms = last.update.time_ms
        self.kline_ms = last.update.kline.time_ms
        tail = last.src[len(self.prefix) :] if last.src.startswith(self.prefix) else ""
        trade_id = tail[1:] if tail.startswith("t") else None
        self.kline_whole = trade_id is None
        self.builder = TradeKlineBuilder.after(period_ms, last.update, trade_id)
        if trade_id is not None:
            self._remember(trade_id)

    @property
    def label(self) -> str:
        return self.prefix.rstrip(":")

    def _remember(self, trade_id: str) -> None:
        self.recent_ids[trade_id] = None
        if len(self.recent_ids) > RECENT_TRADE_IDS:
            self.recent_ids.popitem(last=False)

    def klines_from(self, now_ms: int, history: int, complete: bool) -> int | None:
        """Open time of the first closed kline the stream lacks, at most `history` periods
        back; None when none is missing. After a gap (`complete`) a kline built from trades is
        fetched again whole, as trades of it may have been missed."""
        current = kline_open_time(now_ms, self.period_ms)
        earliest = current - history * self.period_ms
        if self.kline_ms is None:
            start = earliest
        elif self.kline_whole or not complete:
            start = self.kline_ms + self.period_ms
        else:
            start = self.kline_ms
        start = max(start, earliest)
        return start if start < current else None

    def covered_until(self) -> int | None:
        """Trades up to this time are in klines already written or known to be empty."""
        ends = [self.covered_until_ms]
        if self.kline_ms is not None and self.kline_whole:
            ends.append(kline_close_time(self.kline_ms, self.period_ms))
        known = [end for end in ends if end is not None]
        return max(known) if known else None

    def cover_until(self, time_ms: int) -> None:
        """Klines were fetched up to `time_ms`: earlier trades are not the forming kline's."""
        self.covered_until_ms = max(self.covered_until_ms or time_ms, time_ms)

    def trades_from(self, now_ms: int) -> int:
        """`since` for fetching trades: the last update's time (a trade at the same
        millisecond may be new), or just after what klines cover."""
        covered = self.covered_until()
        if covered is not None and (self.last_time_ms is None or covered >= self.last_time_ms):
            return covered + 1
        if self.last_time_ms is not None:
            return self.last_time_ms
        return kline_open_time(now_ms, self.period_ms)

    def accept_candles(self, candles: Sequence[Sequence[Any]], now_ms: int) -> Batch:
        """Closed klines of one `fetch_ohlcv` page (`candle_pages` cuts it to the klines asked
        for) -> updates (SPEC 3.1 rule 1). The forming kline is not closed, so it is skipped, as
        is a kline without volume: a period without trades has no kline (SPEC 4.1 rule 8)."""
        batch = Batch()
        current = kline_open_time(now_ms, self.period_ms)
        for row in candles:
            open_ms = row[0] if row else None
            if type(open_ms) is int and open_ms >= current:
                continue
            try:
                kline = self._kline(row)
            except BadMarketData as error:
                line = f"k{open_ms}"
                batch.rejects.append((line, Reject(0, error.field, error.value, error.reason)))
                continue
            if kline.volume == 0:
                continue
            update = MarketUpdate(
                time_ms=kline_close_time(kline.time_ms, self.period_ms),
                price=kline.close,
                kline=kline,
            )
            self.kline_ms, self.kline_whole = kline.time_ms, True
            self.last_time_ms = update.time_ms
            self.builder = TradeKlineBuilder.after(self.period_ms, update, None)
            batch.items.append(
                Item(kline_src(self.exchange_id, self.symbol, kline.time_ms), update)
            )
        return batch

    def _kline(self, row: Sequence[Any]) -> Kline:
        """SPEC 5.1 rule 11 for a klines row, plus: after the stream's kline (a kline built from
        trades may be replaced by its whole self, nothing earlier)."""
        kline = parse_candle(row)
        open_ms = kline.time_ms
        validate_kline(kline)
        if open_ms % self.period_ms != 0:
            raise BadMarketData("time", open_ms, ROW_TIME_OFF_PERIOD)
        if self.kline_ms is not None and (
            open_ms < self.kline_ms or (open_ms == self.kline_ms and self.kline_whole)
        ):
            raise BadMarketData("time", open_ms, ROW_TIME_NOT_INCREASING)
        return kline

    def accept_trades(self, trades: Iterable[Mapping[str, Any]]) -> Batch:
        """CCXT trades -> updates of the forming kline. A trade seen before (REST and websocket
        overlap) or inside a whole kline is dropped silently; a bad or out-of-order one is
        rejected (SPEC 5.1 rule 11)."""
        batch = Batch()
        covered_until = self.covered_until()
        for trade in trades:
            time_ms = trade.get("timestamp")
            raw_id = trade.get("id")
            trade_id = (
                f"{time_ms}/{trade.get('price')}/{trade.get('amount')}"
                if raw_id is None
                else str(raw_id)
            ).translate(SEPARATOR_FREE)
            # The same trade may come with another id (or none) by REST and by socket: its time,
            # price and amount identify it too (two distinct trades equal in all three would be
            # taken for one).
            fingerprint = f"{time_ms}/{trade.get('price')}/{trade.get('amount')}"
            if trade_id in self.recent_ids or fingerprint in self.recent_ids:
                continue
            if type(time_ms) is int and covered_until is not None and time_ms <= covered_until:
                continue
            try:
                update = self.builder.accept(parse_trade(trade, trade_id))
            except BadMarketData as error:
                line = f"t{trade_id}"
                batch.rejects.append((line, Reject(0, error.field, error.value, error.reason)))
                continue
            self._remember(trade_id)
            self._remember(fingerprint)
            self.last_time_ms, self.kline_ms, self.kline_whole = (
                update.time_ms,
                update.kline.time_ms,
                False,
            )
            covered_until = None
            batch.items.append(Item(trade_src(self.exchange_id, self.symbol, trade_id), update))
        return batch


# --- the shell ---------------------------------------------------------------------------------


class Stopped(Exception):
    """Stop was set while waiting on the exchange: the follower returns."""


DISCONNECTS = "bandwagon_disconnects"


def count_disconnects(exchange: Any) -> None:
    """Count the exchange's websocket closes and errors in `exchange.bandwagon_disconnects`:
    followers compare it to see a close that raised in no call of theirs."""
    setattr(exchange, DISCONNECTS, 0)
    on_close, on_error = exchange.on_close, exchange.on_error

    def closed(client: Any, error: Any) -> None:
        setattr(exchange, DISCONNECTS, getattr(exchange, DISCONNECTS) + 1)
        on_close(client, error)

    def failed(client: Any, error: Any) -> None:
        setattr(exchange, DISCONNECTS, getattr(exchange, DISCONNECTS) + 1)
        on_error(client, error)

    exchange.on_close, exchange.on_error = closed, failed


class CcxtFollower:
    """One stream of one exchange: backfill, then live; a gap after any error."""

    def __init__(
        self,
        exchange: Any,
        exchange_id: str,
        stream: StreamSpec,
        history: int,
        settings: CcxtSettings,
        writer: StreamWriter,
        clock_ms: Callable[[], int],
        poll_s: float,
    ) -> None:
        self.exchange = exchange
        self.exchange_id = exchange_id
        self.stream = stream
        self.symbol = ccxt_symbol(stream.product_id)
        self.history = history
        self.settings = settings
        self.writer = writer
        self.clock_ms = clock_ms
        self.poll_s = poll_s
        self.last_contact_ms = clock_ms()
        self.state = FeedState(exchange_id, self.symbol, stream.period_ms, None)
        self.backoff = ExchangeBackoff(settings)
        self.delays: list[tuple[str, float]] = []  # (kind, wait) of every backoff, for tests
        self._stopping: asyncio.Future[Any] | None = None
        self.writer_last_ms: int | None = None
        self.use_websocket = settings.websocket and bool(exchange.has.get("watchTrades"))
        self.has_trades = bool(exchange.has.get("fetchTrades"))

    @property
    def quiet_s(self) -> float:
        return self.settings.quiet_check_s or self.stream.period_ms / 1000

    def stale(self, now_ms: int) -> bool:
        return now_ms - self.last_contact_ms > self.settings.stale_periods * self.stream.period_ms

    async def run(self) -> None:
        self._stopping = asyncio.ensure_future(self.writer.stop.wait())
        try:
            while True:
                try:
                    last = await self.writer.read_last()
                    if self.writer.stop.is_set():
                        return
                    self.state = FeedState(
                        self.exchange_id, self.symbol, self.stream.period_ms, last
                    )
                    self.writer_last_ms = None if last is None else last.update.time_ms
                    self._warn_if_ahead(last)
                    await self._follow()
                    return
                except StreamRewound:
                    continue
        finally:
            self._stopping.cancel()

    def _warn_if_ahead(self, last: LastEntry | None) -> None:
        if last is not None and last.update.time_ms > self.clock_ms() + self.stream.period_ms:
            log.warning(
                "the stream's last entry (src %s) is ahead of the clock: exchange data is "
                "rejected until the clock passes it; `make run ARGS=--fresh` starts clean",
                last.src,
                extra={"stream": self.stream.key},
            )

    async def _follow(self) -> None:
        gap = True
        while not self.writer.stop.is_set():
            try:
                if gap:
                    await self._catch_up(complete=True)
                    gap = False
                    self.backoff.reset()
                if self.use_websocket:
                    await self._watch()
                else:
                    await self._sleep(self.poll_s)
                    await self._catch_up(complete=False)
            except Stopped:
                return
            except StreamRewound:
                raise
            except Exception as error:
                kind = error_kind(error)
                delay_s = self.backoff.next_delay_s(kind)
                self.delays.append((kind, delay_s))
                EXCHANGE_ERRORS.labels(stream=self.stream.name, kind=kind).inc()
                log.warning(
                    "%s %s failed (%s: %s); backfilling after %.2f s",
                    self.exchange_id,
                    self.symbol,
                    type(error).__name__,
                    str(error)[:300],
                    delay_s,
                    exc_info=kind == "unexpected",
                    extra={"stream": self.stream.key},
                )
                gap = True
                try:
                    await self._sleep(delay_s)
                except Stopped:
                    return
        await self.writer.flush()

    async def _catch_up(self, complete: bool) -> None:
        """Closed klines missed, then the trades of the forming kline. `complete`: after a
        gap, the kline trades had started is fetched again whole."""
        now_ms = self.clock_ms()
        since = self.state.klines_from(now_ms, self.history, complete)
        current = kline_open_time(now_ms, self.stream.period_ms)
        if since is not None:
            pages = candle_pages(self._fetch_candles, since, current, self.stream.period_ms)
            async with aclosing(pages):
                async for page in pages:
                    await self._write(self.state.accept_candles(page.rows, now_ms))
            self.state.cover_until(current - 1)
        if self.has_trades:
            await self._fetch_trades()

    async def _fetch_candles(self, since_ms: int) -> list[list[Any]]:
        candles: list[list[Any]] = await self._call(
            self.exchange.fetch_ohlcv(self.symbol, self.stream.kline_size, since=since_ms)
        )
        self._contact()
        return candles

    async def _fetch_trades(self) -> None:
        """Trades since the last update, an hour window at a time, page by page until a page
        of the window that reaches now adds nothing."""
        now_ms = self.clock_ms()
        since = self.state.trades_from(now_ms)
        while True:
            until = since + TRADES_WINDOW_MS - 1
            trades = await self._call(
                self.exchange.fetch_trades(self.symbol, since=since, params={"until": until})
            )
            self._contact()
            batch = self.state.accept_trades(trades)
            await self._write(batch)
            times = [t["timestamp"] for t in trades if type(t.get("timestamp")) is int]
            if batch.items and times and max(times) >= since:
                since = max(times)
            elif until < now_ms:
                since = until + 1  # a window without new trades: the next one
            else:
                return

    async def _watch(self) -> None:
        """Trades from the websocket until an error (raised) or stop. The first batch after a
        subscription is preceded by a REST fetch: trades between the catch-up and the
        subscription would otherwise be lost."""
        first = True
        disconnects = getattr(self.exchange, DISCONNECTS, 0)
        pending = asyncio.ensure_future(self.exchange.watch_trades(self.symbol))
        try:
            while True:
                if getattr(self.exchange, DISCONNECTS, 0) != disconnects:
                    raise SocketReplaced("a websocket of the exchange closed")
                if not await self._ready_within(pending, self.quiet_s):
                    await self._catch_up(complete=False)  # a quiet socket: is the market too?
                    continue
                trades = pending.result()
                self._contact()
                if first:
                    await self._fetch_trades()
                    first = False
                await self._write(self.state.accept_trades(trades))
                pending = asyncio.ensure_future(self.exchange.watch_trades(self.symbol))
        finally:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # retrieved, so asyncio does not log it as lost

    def _contact(self) -> None:
        self.last_contact_ms = self.clock_ms()

    async def _write(self, batch: Batch) -> None:
        for line, reject in batch.rejects:
            report_reject(self.stream, self.state.label, line, reject)
        last_ms = self.writer_last_ms
        for item in batch.items:
            if last_ms is not None and item.update.time_ms < last_ms:  # SPEC 5.1 rule 11
                reject = Reject(0, "time", item.update.time_ms, EARLIER_THAN_STREAM)
                report_reject(self.stream, self.state.label, item.src, reject)
                continue
            self.writer.add(item)
            last_ms = item.update.time_ms
            if self.writer.full:
                await self.writer.flush()
        self.writer_last_ms = last_ms
        await self.writer.flush()

    async def _call(self, awaitable: Awaitable[T]) -> T:
        task = asyncio.ensure_future(awaitable)
        if await self._ready_within(task, None):
            return task.result()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ready_within(self, task: asyncio.Future[Any], timeout_s: float | None) -> bool:
        """Whether `task` finished within `timeout_s`; raises Stopped (cancelling nothing the
        caller keeps) when stop comes first."""
        assert self._stopping is not None
        done, _ = await asyncio.wait(
            {task, self._stopping}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return True
        if self._stopping in done:
            task.cancel()
            raise Stopped
        return False

    async def _sleep(self, delay_s: float) -> None:
        assert self._stopping is not None
        done, _ = await asyncio.wait({self._stopping}, timeout=delay_s)
        if done:
            raise Stopped


async def load_markets(exchange: Any, settings: CcxtSettings, stop: asyncio.Event) -> Any:
    """`load_markets`, retried with backoff while the exchange is unreachable (the start waits
    for it, not ready); any other error is not one a retry fixes."""
    backoff = ExchangeBackoff(settings)
    attempts = 0
    while True:
        try:
            return await exchange.load_markets()
        except Exception as error:
            kind = error_kind(error)
            attempts += 1
            limit = settings.market_load_attempts
            if kind not in ("rate_limited", "network") or (limit and attempts >= limit):
                raise
            delay_s = backoff.next_delay_s(kind)
            log.warning(
                "%s: cannot load markets (%s: %s); retrying in %.2f s",
                exchange.id,
                type(error).__name__,
                str(error)[:300],
                delay_s,
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay_s)
            except TimeoutError:
                continue
            raise Stopped from error


class CcxtIngest:
    """Every ccxt stream of one ingest process: one CCXT client per exchange (so its
    `rateLimit` covers all that exchange's symbols), one follower per stream, one staleness
    watch that drives `bandwagon_ingest_stale` and readiness."""

    def __init__(
        self,
        bots: BotsFile,
        streams: list[StreamSpec],
        settings: CcxtSettings,
        health: Health,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.bots = bots
        self.streams = streams
        self.settings = settings
        self.health = health
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.exchanges: dict[str, Any] = {}
        self.metadata: dict[str, dict[str, SymbolMetadata]] = {}  # by exchange, then product
        self.followers: list[CcxtFollower] = []

    async def open(self, stop: asyncio.Event) -> None:
        """Clients and markets; an unknown exchange, symbol or kline size is a ConfigError
        (exit 78) naming close matches. Clients are closed again when it fails."""
        self.health.set_check("source", False)
        known = exchange_ids()
        try:
            for index, bot in enumerate(self.bots.bots):
                if bot.enabled:
                    check_exchange_id(bot.exchange, f"bots[{index}].exchange", known)
            for stream in self.streams:
                if stream.exchange not in self.exchanges:
                    urls = self.settings.urls.get(stream.exchange)
                    exchange = new_exchange(stream.exchange, urls)
                    count_disconnects(exchange)
                    self.exchanges[stream.exchange] = exchange
            for bot in self.bots.bots:  # terms only: a disabled bot's state is created too
                if bot.enabled or bot.has_market_terms or bot.exchange in self.exchanges:
                    continue
                if bot.exchange not in known:
                    log.warning("disabled bot %s: CCXT has no exchange %s", bot.id, bot.exchange)
                    continue
                urls = self.settings.urls.get(bot.exchange)
                self.exchanges[bot.exchange] = new_exchange(bot.exchange, urls)
            for exchange_id, exchange in self.exchanges.items():
                markets = await load_markets(exchange, self.settings, stop)
                self.metadata[exchange_id] = check_markets(
                    self.bots,
                    exchange_id,
                    markets,
                    exchange.timeframes or {},
                    counts_decimals(exchange),
                )
                log.info("%s: %d markets loaded", exchange_id, len(markets))
        except BaseException:
            await self.close()
            raise
        self.health.set_check("source", True)

    def history(self, stream: StreamSpec) -> int:
        return max(
            bot.kline_history
            for bot in self.bots.enabled_bots
            if bot.exchange == stream.exchange
            and bot.kline_size == stream.kline_size
            and any(symbol.product_id == stream.product_id for symbol in bot.symbols)
        )

    async def publish_terms(self, redis: Redis | RedisNodes, stop: asyncio.Event) -> None:
        """Each market's `min_size` and `price_decimals` as the exchange says them now, for the
        bots whose file leaves them out (their state freezes them when created), and a WARNING
        for each bot whose frozen terms the exchange has since changed: they stay (SPEC 4.1
        rule 6). Retried until Redis answers or the stop."""
        terms_by_exchange = {
            exchange_id: {product: found.terms for product, found in metadata.items()}
            for exchange_id, metadata in self.metadata.items()
        }

        async def warn_of_changes(exchange_id: str, terms: Mapping[str, MarketTerms]) -> None:
            for bot in self.bots.enabled_bots:
                if bot.exchange == exchange_id:
                    await warn_of_changed_terms(redis, bot, terms)

        await store_terms_until_stored(redis, terms_by_exchange, stop, then=warn_of_changes)

    async def run(
        self, redis: Redis | RedisNodes, maxlen: int, batch_size: int, stop: asyncio.Event
    ) -> None:
        await self.publish_terms(redis, stop)
        per_exchange = {
            exchange_id: sum(stream.exchange == exchange_id for stream in self.streams)
            for exchange_id in self.exchanges
        }
        for stream in self.streams:
            exchange = self.exchanges[stream.exchange]
            # Polling: about two requests a stream a round, within the exchange's rate limit.
            rate_s = float(exchange.rateLimit or 0) / 1000
            poll_s = max(self.settings.poll_min_s, 2 * per_exchange[stream.exchange] * rate_s)
            writer = StreamWriter(redis, stream, maxlen, batch_size, stop)
            self.followers.append(
                CcxtFollower(
                    exchange,
                    stream.exchange,
                    stream,
                    self.history(stream),
                    self.settings,
                    writer,
                    self.clock_ms,
                    poll_s,
                )
            )
            UPDATES.labels(stream=stream.name)
            STALE.labels(stream=stream.name).set(0)
        for follower in self.followers:
            log.info(
                "following %s %s by %s",
                follower.exchange_id,
                follower.symbol,
                "websocket" if follower.use_websocket else f"polling every {follower.poll_s:g} s",
                extra={"stream": follower.stream.key},
            )
        try:
            async with asyncio.TaskGroup() as group:
                for follower in self.followers:
                    group.create_task(follower.run())
                group.create_task(self._watch_staleness(stop))
        finally:
            await self.close()

    async def _watch_staleness(self, stop: asyncio.Event) -> None:
        """SPEC 4.1 rule 2 for a live source: ready while every stream hears from its exchange."""
        stale_streams: set[str] = set()
        while not stop.is_set():
            now_ms = self.clock_ms()
            for follower in self.followers:
                name = follower.stream.name
                stale = follower.stale(now_ms)
                STALE.labels(stream=name).set(1 if stale else 0)
                if stale and name not in stale_streams:
                    log.warning(
                        "stale: no word from %s for %s periods",
                        follower.exchange_id,
                        f"{self.settings.stale_periods:g}",
                        extra={"stream": follower.stream.key},
                    )
                    stale_streams.add(name)
                elif not stale and name in stale_streams:
                    log.info("fresh again", extra={"stream": follower.stream.key})
                    stale_streams.discard(name)
            self.health.set_check(FRESH_CHECK, not stale_streams)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.check_s)
            except TimeoutError:
                continue

    async def close(self) -> None:
        for exchange in self.exchanges.values():
            try:
                await exchange.close()
            except Exception as error:  # closing is best effort
                log.debug("closing %s: %s", exchange.id, error)


async def warn_of_changed_terms(
    redis: Redis | RedisNodes, bot: BotConfig, terms: Mapping[str, MarketTerms]
) -> None:
    """A WARNING naming each term the exchange changed since the bot's state froze it."""
    frozen = await RedisNodes.wrapping(redis).for_bot(bot.id).hget(keys.meta(bot.id), "config")
    if frozen is None:
        return
    for change in changed_terms(bot, frozen_terms(frozen), terms):
        log.warning(
            "bot %s: the exchange changed %s; the frozen value stays until "
            "`bandwagon reset --bot %s` (SPEC 4.1 rule 6)",
            bot.id,
            change,
            bot.id,
            extra={"bot": bot.id},
        )
