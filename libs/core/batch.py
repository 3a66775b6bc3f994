"""Columnar updates and their Bollinger conditions, computed for a whole batch at once.

The strategy's decisions depend on the bands only through two booleans per update: price below
the lower band, price above the upper band (SPEC 3.1 rules 2 and 3). They are computed here for
every update with numpy, from approximate bands, and every update whose price lies within a hair
of a band is settled by TA-Lib itself on that update's exact window. The conditions are therefore
exactly those the one-update path gets from TA-Lib, at a small fraction of its cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.core.bands import band_conditions, bollinger_bands
from libs.core.market import Kline, MarketUpdate

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# Relative distance to a band under which the approximate bands cannot decide; they differ from
# TA-Lib's by about 1e-16 of the price, so this margin is ten million times that.
UNDECIDED_RELATIVE = 1e-9
# Windows whose spread is this small relative to the price also go to TA-Lib (zero-width guard).
NARROW_RELATIVE = 1e-7


@dataclass(frozen=True, slots=True)
class UpdateColumns:
    """A batch of updates of one symbol, column by column, in stream order."""

    time_ms: Ints
    price: Floats
    kline_time_ms: Ints
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats

    def __len__(self) -> int:
        return len(self.time_ms)

    @classmethod
    def of(cls, updates: Sequence[MarketUpdate]) -> UpdateColumns:
        def floats(values: list[float]) -> Floats:
            return np.array(values, dtype=np.float64)

        def ints(values: list[int]) -> Ints:
            return np.array(values, dtype=np.int64)

        return cls(
            time_ms=ints([u.time_ms for u in updates]),
            price=floats([u.price for u in updates]),
            kline_time_ms=ints([u.kline.time_ms for u in updates]),
            open=floats([u.kline.open for u in updates]),
            high=floats([u.kline.high for u in updates]),
            low=floats([u.kline.low for u in updates]),
            close=floats([u.kline.close for u in updates]),
            volume=floats([u.kline.volume for u in updates]),
        )

    def kline(self, index: int) -> Kline:
        return Kline(
            int(self.kline_time_ms[index]),
            float(self.open[index]),
            float(self.high[index]),
            float(self.low[index]),
            float(self.close[index]),
            float(self.volume[index]),
        )

    def update(self, index: int) -> MarketUpdate:
        return MarketUpdate(int(self.time_ms[index]), float(self.price[index]), self.kline(index))

    def between(self, start: int, stop: int) -> UpdateColumns:
        """Updates start..stop-1, as views (no copy)."""
        part = slice(start, stop)
        return UpdateColumns(
            self.time_ms[part],
            self.price[part],
            self.kline_time_ms[part],
            self.open[part],
            self.high[part],
            self.low[part],
            self.close[part],
            self.volume[part],
        )

    def take(self, keep: Bools) -> UpdateColumns:
        return UpdateColumns(
            self.time_ms[keep],
            self.price[keep],
            self.kline_time_ms[keep],
            self.open[keep],
            self.high[keep],
            self.low[keep],
            self.close[keep],
            self.volume[keep],
        )


@dataclass(frozen=True, slots=True)
class Windows:
    """Each update's band window: the closes of the `period - 1` klines closed before it
    (`history[start:stop]`), then its own kline's current close."""

    history: Floats
    stop: Ints  # closes of closed klines known at each update
    valid: Bools  # at least period - 1 closed klines: bands exist

    def closes(self, index: int, period: int, close: float) -> list[float]:
        stop = int(self.stop[index])
        return [*self.history[max(0, stop - period + 1) : stop].tolist(), close]


def windows_of(
    prior_closes: Sequence[float],
    current_kline: Kline | None,
    columns: UpdateColumns,
    period: int,
) -> tuple[Windows, Bools]:
    """The windows of every update, and where a new kline starts (the previous one closes)."""
    kline_time = columns.kline_time_ms
    starts = np.empty(len(columns), dtype=np.bool_)
    if len(columns):
        starts[0] = current_kline is None or kline_time[0] != current_kline.time_ms
        starts[1:] = kline_time[1:] != kline_time[:-1]
    closing = starts.copy()
    if len(columns) and current_kline is None:
        closing[0] = False  # the very first kline closes nothing
    previous_close = np.empty(len(columns), dtype=np.float64)
    if len(columns):
        previous_close[0] = current_kline.close if current_kline is not None else np.nan
        previous_close[1:] = columns.close[:-1]
    history = np.concatenate([np.asarray(prior_closes, dtype=np.float64), previous_close[closing]])
    stop = len(prior_closes) + np.cumsum(closing, dtype=np.int64)
    return Windows(history, stop, stop >= period - 1), starts


def band_flags(
    windows: Windows,
    price: Floats,
    close: Floats,
    period: int,
    nbdev_up: float,
    nbdev_dn: float,
) -> tuple[Bools, Bools]:
    """(buy, sell) conditions of every update, equal to `band_conditions` of TA-Lib's bands."""
    count = len(price)
    buy = np.zeros(count, dtype=np.bool_)
    sell = np.zeros(count, dtype=np.bool_)
    rows = np.flatnonzero(windows.valid)
    if len(rows) == 0:
        return buy, sell
    columns = _window_columns(windows, close, rows, period)

    total = np.zeros(len(rows), dtype=np.float64)
    for column in columns:
        total += column
    middle = total / period
    squares = np.zeros(len(rows), dtype=np.float64)
    flat = np.ones(len(rows), dtype=np.bool_)
    for column in columns:
        deviation = column - middle
        squares += deviation * deviation
        flat &= column == columns[0]
    deviation = np.sqrt(squares / period)
    upper = middle + deviation * nbdev_up
    lower = middle - deviation * nbdev_dn

    row_price = price[rows]
    margin = np.abs(row_price) * UNDECIDED_RELATIVE
    undecided = ~flat & (
        (np.abs(row_price - lower) <= margin)
        | (np.abs(row_price - upper) <= margin)
        | (deviation <= np.abs(middle) * NARROW_RELATIVE)
    )
    buy[rows] = ~flat & (row_price < lower)
    sell[rows] = ~flat & (row_price > upper)
    for row in np.flatnonzero(undecided):
        index = int(rows[row])
        window = windows.closes(index, period, float(close[index]))
        bands = bollinger_bands(window, period, nbdev_up, nbdev_dn)
        buy[index], sell[index] = band_conditions(float(price[index]), bands)
    return buy, sell


def _window_columns(windows: Windows, close: Floats, rows: Ints, period: int) -> list[Floats]:
    """Column k of every row's window, oldest first, the row's own close last. When each row
    closes one more kline than the previous (a klines file), the columns are plain slices."""
    stop = windows.stop[rows]
    history = windows.history
    columns: list[Floats] = []
    first = int(stop[0]) - (period - 1)
    if int(stop[-1]) - int(stop[0]) == len(rows) - 1 and bool(np.all(np.diff(stop) == 1)):
        for offset in range(period - 1):
            columns.append(history[first + offset : first + offset + len(rows)])
    else:
        for offset in range(period - 1):
            columns.append(history[stop - (period - 1) + offset])
    columns.append(close[rows])
    return columns


def crosses(condition: Bools, previous: bool) -> Bools:
    """An update where the condition holds and did not on the previous update (SPEC 3.1 rule 3)."""
    before = np.empty_like(condition)
    if len(condition):
        before[0] = previous
        before[1:] = condition[:-1]
    return condition & ~before


def next_true(mask: Bools) -> Ints:
    """For each index i (and len(mask)), the first index >= i where mask holds, else len(mask)."""
    count = len(mask)
    indexes = np.where(mask, np.arange(count, dtype=np.int64), count)
    following: Ints = np.minimum.accumulate(indexes[::-1])[::-1]
    return np.append(following, count)
