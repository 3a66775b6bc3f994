"""A bot's book: strategy events folded into SYMBOL and STATUS figures, and the refresh that tells
clients what changed since the previous one (SPEC 2.1 rules 10 and 11).

No IO and no clock here: the worker loads a book from Redis, feeds it events, asks it for a refresh
when the cadence allows, and commits what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from redis.typing import EncodableT, FieldT

from libs.config import BotConfig
from libs.core.pnl import Ledger
from libs.core.portfolio import status_figures, symbol_figures
from libs.core.sim_exchange import Signal
from libs.store.published import SymbolCommit
from libs.wire.checkpoint import ledger_from_state, ledger_state
from libs.wire.convert import status_wire, symbol_scalars
from libs.wire.events import StrategyEvent
from libs.wire.frames import JSONObject, refresh_frame, with_lists


@dataclass
class SymbolBook:
    product_id: str
    ledger: Ledger
    price: float = 0.0
    signal: Signal | None = None
    first_time_ms: int = 0
    published_scalars: JSONObject = field(default_factory=dict)
    last_published_kline: JSONObject | None = None
    last_published_order_id: int = 0
    pending_klines: dict[int, JSONObject] = field(default_factory=dict)
    pending_trades: list[JSONObject] = field(default_factory=list)

    def state(self) -> JSONObject:
        return {
            "ledger": ledger_state(self.ledger),
            "price": self.price,
            "signal": self.signal,
            "first_time_ms": self.first_time_ms,
        }

    def restore(self, state: JSONObject) -> None:
        self.ledger = ledger_from_state(state["ledger"])
        self.price = state["price"]
        self.signal = state["signal"]
        self.first_time_ms = state["first_time_ms"]


@dataclass(frozen=True, slots=True)
class Refresh:
    seq: int
    text: bytes
    status: JSONObject
    symbols: list[SymbolCommit]
    newest_entry_id: str


@dataclass
class BotBook:
    bot: BotConfig
    epoch: str
    seq: int
    symbols: list[SymbolBook]
    published_status: JSONObject
    checkpoint: str = "0-0"
    fill_pending: bool = False
    unsaved_events: int = 0
    newest_entry_id: str = ""
    redis_run_id: str = ""
    """The redis-server this book was read from: the only one it may be committed to."""

    @classmethod
    def fresh(cls, bot: BotConfig, epoch: str, seq: int) -> BotBook:
        symbols = [
            SymbolBook(symbol.product_id, Ledger(allocation=bot.allocation(index)))
            for index, symbol in enumerate(bot.symbols)
        ]
        return cls(bot=bot, epoch=epoch, seq=seq, symbols=symbols, published_status={})

    # --- folding -------------------------------------------------------------------------------

    def apply(self, entry_id: str, event: StrategyEvent) -> None:
        """Fold one strategy event. Events of one symbol arrive in the order they were made."""
        book = self._symbol(event.product_id)
        book.ledger = event.ledger
        book.price = event.price
        book.signal = event.signal
        book.first_time_ms = event.first_time_ms
        for kline in event.klines:
            book.pending_klines[kline["time"]] = kline
        if event.trades:
            book.pending_trades.extend(event.trades)
            self.fill_pending = True
        self.checkpoint = entry_id
        self.newest_entry_id = event.entry_id
        self.unsaved_events += 1

    def _symbol(self, product_id: str) -> SymbolBook:
        for book in self.symbols:
            if book.product_id == product_id:
                return book
        raise KeyError(f"event for {product_id}, which bot {self.bot.id} does not trade")

    # --- figures -------------------------------------------------------------------------------

    def scalars(self, index: int) -> JSONObject:
        book, config = self.symbols[index], self.bot.symbols[index]
        return symbol_scalars(
            product_id=config.product_id,
            exchange=self.bot.exchange,
            min_size=config.terms.min_size,
            leverage=config.leverage,
            isolated=config.isolated,
            figures=symbol_figures(book.ledger, book.price),
            signal=book.signal,
        )

    def status(self, time_zone_offset_min: int) -> JSONObject:
        figures = [symbol_figures(book.ledger, book.price) for book in self.symbols]
        started = [book.first_time_ms for book in self.symbols if book.first_time_ms]
        return status_wire(
            status_figures(self.bot.start_capital, figures),
            exchange=self.bot.exchange,
            start_time_ms=min(started) if started else 0,
            time_zone_offset_min=time_zone_offset_min,
            enabled=self.bot.enabled,
        )

    # --- refreshes -----------------------------------------------------------------------------

    def next_refresh(self, time_zone_offset_min: int) -> Refresh | None:
        """The refresh after `seq`, or None when nothing a client sees has changed."""
        status = self.status(time_zone_offset_min)
        changed = status != self.published_status
        listed: list[JSONObject] = []
        commits: list[SymbolCommit] = []
        for index, book in enumerate(self.symbols):
            scalars = self.scalars(index)
            klines, replaced = self._changed_klines(book)
            fills = [t for t in book.pending_trades if t["order_id"] > book.last_published_order_id]
            trades = fills[-self.bot.trade_history :]
            changed |= bool(klines or trades) or scalars != book.published_scalars
            listed.append(with_lists(scalars, trades=trades, klines=klines))
            encoded = [orjson.dumps(trade) for trade in fills]
            commits.append(
                SymbolCommit(
                    product_id=book.product_id,
                    scalars=scalars,
                    replaced_klines=replaced,
                    klines=[orjson.dumps(kline) for kline in klines],
                    trades=encoded[len(fills) - len(trades) :],
                    fills=encoded,
                )
            )
        if not changed:
            return None
        seq = self.seq + 1
        text = refresh_frame(seq=seq, epoch=self.epoch, symbols=listed, status=status)
        return Refresh(seq, text, status, commits, self.newest_entry_id)

    def _changed_klines(self, book: SymbolBook) -> tuple[list[JSONObject], int]:
        """Klines that differ from the previous refresh, newest `kline_history`, ascending; and
        whether the first of them replaces the last kline already published (the forming one)."""
        last = book.last_published_kline
        changed = [
            kline
            for time, kline in sorted(book.pending_klines.items())
            if last is None or time > last["time"] or (time == last["time"] and kline != last)
        ][-self.bot.kline_history :]
        replaced = int(bool(changed) and last is not None and changed[0]["time"] == last["time"])
        return changed, replaced

    def published(self, refresh: Refresh) -> None:
        """Refresh `refresh.seq` is committed: it is now what the next one is compared with."""
        self.seq = refresh.seq
        self.published_status = refresh.status
        for book, commit in zip(self.symbols, refresh.symbols, strict=True):
            book.published_scalars = dict(commit.scalars)
            if commit.klines:
                book.last_published_kline = orjson.loads(commit.klines[-1])
            if commit.trades:
                book.last_published_order_id = orjson.loads(commit.trades[-1])["order_id"]
            book.pending_klines.clear()
            book.pending_trades.clear()
        self.fill_pending = False
        self.unsaved_events = 0

    def saved(self) -> None:
        """The checkpoint and book were committed without a refresh (nothing visible changed)."""
        for book in self.symbols:
            book.pending_klines.clear()
            book.pending_trades.clear()
        self.unsaved_events = 0

    def accounting_fields(self) -> dict[FieldT, EncodableT]:
        return {
            "checkpoint": self.checkpoint,
            "book": orjson.dumps([book.state() for book in self.symbols]),
        }
