"""CCXT's candles and trades as core values, and `fetch_ohlcv` page by page.

Ingest's backfill and `bandwagon download` read closed klines the same way: `candle_pages` asks
for a page from `since`, keeps its rows before `end`, and asks again a period after the newest
row, until `end` or a page that brings nothing new. What a caller does with a page (a market
stream, a CSV) and how it retries a failed request are its own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.core.market import NOT_A_NUMBER, NOT_AN_INTEGER, Kline, Trade
from libs.errors import BadMarketData


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadMarketData(name, value, NOT_A_NUMBER)
    return float(value)


def _time(value: object) -> int:
    if type(value) is not int:
        raise BadMarketData("time", value, NOT_AN_INTEGER)
    return value


def parse_candle(row: Sequence[Any]) -> Kline:
    """A CCXT OHLCV row `[time, open, high, low, close, volume]`; CCXT gives None for a value
    it could not parse, which is rejected here as not a number."""
    values = list(row) + [None] * (6 - len(row))
    return Kline(
        time_ms=_time(values[0]),
        open=_number("open", values[1]),
        high=_number("high", values[2]),
        low=_number("low", values[3]),
        close=_number("close", values[4]),
        volume=_number("volume", values[5]),
    )


def parse_trade(trade: Mapping[str, Any], trade_id: str) -> Trade:
    """A CCXT trade (`timestamp`, `price`, `amount`) under the id the caller dedupes it by."""
    return Trade(
        time_ms=_time(trade.get("timestamp")),
        trade_id=trade_id,
        price=_number("price", trade.get("price")),
        amount=_number("amount", trade.get("amount")),
    )


@dataclass(frozen=True, slots=True)
class CandlePage:
    """One `fetch_ohlcv` response, cut to what was asked for."""

    since_ms: int  # the page was asked for from here
    # Rows opening in [since_ms, end): earlier ones were asked for already, later ones are not
    # wanted (the forming kline, or past --to). A row without an integer open time is kept, for
    # the caller's parser to reject.
    rows: list[Sequence[Any]]
    next_since_ms: int | None  # a period after the newest row; None: the exchange has no more


def cut_page(
    candles: Sequence[Sequence[Any]], since_ms: int, end_ms: int, period_ms: int
) -> CandlePage:
    """The rows of a response asked for from `since_ms` that open before `end_ms`, and where the
    next page starts: a period after the newest row (wanted or not), or None when no row opens
    at or after `since_ms` (no progress: the exchange has nothing more)."""
    rows: list[Sequence[Any]] = []
    newest: int | None = None
    for row in candles:
        open_ms = row[0] if row else None
        if type(open_ms) is int:
            newest = open_ms if newest is None else max(newest, open_ms)
            if open_ms < since_ms or open_ms >= end_ms:
                continue
        rows.append(row)
    next_since = None if newest is None or newest < since_ms else newest + period_ms
    return CandlePage(since_ms, rows, next_since)


async def candle_pages(
    fetch: Callable[[int], Awaitable[Sequence[Sequence[Any]]]],
    since_ms: int,
    end_ms: int,
    period_ms: int,
) -> AsyncGenerator[CandlePage, None]:
    """The closed klines of [since_ms, end_ms), page by page: `fetch(since)` is one
    `fetch_ohlcv(symbol, size, since=since)` (with the caller's waits and retries). Use it
    under `contextlib.aclosing`, so a caller that stops early closes it at once."""
    while since_ms < end_ms:
        page = cut_page(await fetch(since_ms), since_ms, end_ms, period_ms)
        yield page
        if page.next_since_ms is None:
            return
        since_ms = page.next_since_ms
