"""Market updates as the strategy sees them (SPEC 3.1 rule 1, 4.1 rule 8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

from libs.core.periods import kline_close_time, kline_open_time
from libs.errors import BadMarketData


@dataclass(frozen=True, slots=True)
class Kline:
    """A kline as it stands after some update; `time_ms` is its open time."""

    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class MarketUpdate:
    """One update: a trade (at its time and price) or a klines row (at its close_time and close).

    `kline` is the kline of the update's period after the update; the strategy sees only
    `time_ms` and `price`, the kline is what clients are shown.
    """

    time_ms: int
    price: float
    kline: Kline


# --- Parsing and validation of market rows (SPEC 5.1 rule 11) -----------------------------------
#
# Reasons are fixed phrases without values, so that they can label
# `bandwagon_ingest_rejected_total{stream,reason}`; the value travels in `BadMarketData.value`.

NOT_AN_INTEGER = "not an integer"
NOT_A_NUMBER = "not a number"
NOT_POSITIVE = "not a finite number > 0"
NEGATIVE = "not a finite number >= 0"
LOW_ABOVE_OPEN_CLOSE = "low > min(open, close)"
HIGH_BELOW_OPEN_CLOSE = "high < max(open, close)"
TRADE_TIME_BACKWARDS = "earlier than the previous trade"
TRADE_ID_REPEATED = "same id as the previous trade"
ROW_TIME_NOT_INCREASING = "not after the previous row"
ROW_TIME_OFF_PERIOD = "not a multiple of the period"
MISSING_FIELD = "missing"


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade as a trades file or an exchange reports it; `trade_id` is compared only
    for equality with the previous trade's (SPEC 5.1 rule 11)."""

    time_ms: int
    trade_id: str
    price: float
    amount: float


def parse_time_ms(text: str) -> int:
    """An integer in any plain spelling (`1509836520000`, `1509836520000.0`); else rejected."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise BadMarketData("time", text, NOT_AN_INTEGER) from None
    if not math.isfinite(number) or not number.is_integer() or abs(number) >= 2**53:
        raise BadMarketData("time", text, NOT_AN_INTEGER)
    return int(number)


def parse_number(field: str, text: str) -> float:
    """A float; `nan` and `inf` parse here and are rejected by the validation that follows."""
    try:
        return float(text)
    except ValueError:
        raise BadMarketData(field, text, NOT_A_NUMBER) from None


def parse_kline_row(time: str, open: str, high: str, low: str, close: str, volume: str) -> Kline:
    """The strings of one klines row, fields in SPEC order; `time` is the kline's open time."""
    return Kline(
        time_ms=parse_time_ms(time),
        open=parse_number("open", open),
        high=parse_number("high", high),
        low=parse_number("low", low),
        close=parse_number("close", close),
        volume=parse_number("volume", volume),
    )


def parse_trade_row(time: str, trade_id: str, price: str, amount: str) -> Trade:
    """The strings of one trades row (the taker side is not needed by any rule)."""
    return Trade(
        time_ms=parse_time_ms(time),
        trade_id=trade_id,
        price=parse_number("price", price),
        amount=parse_number("amount", amount),
    )


def _check_positive(field: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise BadMarketData(field, value, NOT_POSITIVE)


def _check_not_negative(field: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise BadMarketData(field, value, NEGATIVE)


def _check_integer_time(time_ms: object) -> None:
    if type(time_ms) is not int:  # bool is an int subclass and not a time either
        raise BadMarketData("time", time_ms, NOT_AN_INTEGER)


def validate_kline(kline: Kline) -> None:
    """The row-local checks of SPEC 5.1 rule 11 for a klines row, in a fixed order."""
    _check_integer_time(kline.time_ms)
    _check_positive("open", kline.open)
    _check_positive("high", kline.high)
    _check_positive("low", kline.low)
    _check_positive("close", kline.close)
    _check_not_negative("volume", kline.volume)
    if kline.low > min(kline.open, kline.close):
        raise BadMarketData("low", kline.low, LOW_ABOVE_OPEN_CLOSE)
    if kline.high < max(kline.open, kline.close):
        raise BadMarketData("high", kline.high, HIGH_BELOW_OPEN_CLOSE)


def validate_trade(trade: Trade) -> None:
    """The row-local checks of SPEC 5.1 rule 11 for a trade."""
    _check_integer_time(trade.time_ms)
    _check_positive("price", trade.price)
    _check_not_negative("amount", trade.amount)


# --- From rows to market updates (SPEC 3.1 rule 1, 4.1 rule 8) ------------------------------------


class KlineRowReaderState(TypedDict):
    last_time_ms: int | None


class KlineRowReader:
    """Klines rows in, one update per row out, at the row's close_time and priced at its close.

    Only an accepted row moves `last_time_ms`: a rejected row changes nothing (SPEC 5.1 rule 11).
    """

    def __init__(self, period_ms: int) -> None:
        if period_ms <= 0:
            raise ValueError(f"period_ms={period_ms!r} must be > 0")
        self.period_ms = period_ms
        self.last_time_ms: int | None = None

    def accept(self, row: Kline) -> MarketUpdate:
        validate_kline(row)
        if self.last_time_ms is not None and row.time_ms <= self.last_time_ms:
            raise BadMarketData("time", row.time_ms, ROW_TIME_NOT_INCREASING)
        if row.time_ms % self.period_ms != 0:
            raise BadMarketData("time", row.time_ms, ROW_TIME_OFF_PERIOD)
        self.last_time_ms = row.time_ms
        return MarketUpdate(
            time_ms=kline_close_time(row.time_ms, self.period_ms), price=row.close, kline=row
        )

    def snapshot(self) -> KlineRowReaderState:
        return {"last_time_ms": self.last_time_ms}

    @classmethod
    def restore(cls, period_ms: int, state: KlineRowReaderState) -> KlineRowReader:
        reader = cls(period_ms)
        reader.last_time_ms = state["last_time_ms"]
        return reader


class KlineState(TypedDict):
    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class TradeKlineBuilderState(TypedDict):
    last_time_ms: int | None
    last_trade_id: str | None
    kline: KlineState | None


class TradeKlineBuilder:
    """Trades in, one update per trade out, carrying the kline of the trade's period so far.

    SPEC 4.1 rule 8: open = first trade's price, high/low = running max/min, close = last trade's
    price, volume = running sum of amounts in arrival order. The forming kline closes when a trade
    of a later period arrives; a period without trades has no kline.
    """

    def __init__(self, period_ms: int) -> None:
        if period_ms <= 0:
            raise ValueError(f"period_ms={period_ms!r} must be > 0")
        self.period_ms = period_ms
        self.last_time_ms: int | None = None
        self.last_trade_id: str | None = None
        self.kline: Kline | None = None

    def accept(self, trade: Trade) -> MarketUpdate:
        validate_trade(trade)
        if self.last_time_ms is not None and trade.time_ms < self.last_time_ms:
            raise BadMarketData("time", trade.time_ms, TRADE_TIME_BACKWARDS)
        if self.last_trade_id is not None and trade.trade_id == self.last_trade_id:
            raise BadMarketData("id", trade.trade_id, TRADE_ID_REPEATED)
        open_time_ms = kline_open_time(trade.time_ms, self.period_ms)
        kline = self.kline
        if kline is None or open_time_ms > kline.time_ms:
            kline = Kline(
                time_ms=open_time_ms,
                open=trade.price,
                high=trade.price,
                low=trade.price,
                close=trade.price,
                volume=trade.amount,
            )
        else:
            kline = Kline(
                time_ms=kline.time_ms,
                open=kline.open,
                high=max(kline.high, trade.price),
                low=min(kline.low, trade.price),
                close=trade.price,
                volume=kline.volume + trade.amount,
            )
        self.kline = kline
        self.last_time_ms = trade.time_ms
        self.last_trade_id = trade.trade_id
        return MarketUpdate(time_ms=trade.time_ms, price=trade.price, kline=kline)

    def snapshot(self) -> TradeKlineBuilderState:
        kline = self.kline
        return {
            "last_time_ms": self.last_time_ms,
            "last_trade_id": self.last_trade_id,
            "kline": None
            if kline is None
            else {
                "time_ms": kline.time_ms,
                "open": kline.open,
                "high": kline.high,
                "low": kline.low,
                "close": kline.close,
                "volume": kline.volume,
            },
        }

    @classmethod
    def restore(cls, period_ms: int, state: TradeKlineBuilderState) -> TradeKlineBuilder:
        builder = cls(period_ms)
        builder.last_time_ms = state["last_time_ms"]
        builder.last_trade_id = state["last_trade_id"]
        kline = state["kline"]
        builder.kline = None if kline is None else Kline(**kline)
        return builder

    @classmethod
    def after(cls, period_ms: int, update: MarketUpdate, trade_id: str | None) -> TradeKlineBuilder:
        """The builder as it stood right after emitting `update` (e.g. a stream's last entry):
        a restarted source continues the same kline without a duplicate or a gap."""
        builder = cls(period_ms)
        builder.last_time_ms = update.time_ms
        builder.last_trade_id = trade_id
        builder.kline = update.kline
        return builder
