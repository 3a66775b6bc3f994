"""Columnar updates and their Bollinger conditions, computed for a whole batch at once.

The strategy's decisions depend on the bands only through two booleans per update: price below
the lower band, price above the upper band (SPEC 3.1 rules 2 and 3). They are computed here for
every update with numpy, from approximate bands, and every update whose price lies within a hair
of a band is settled by TA-Lib itself on that update's exact window. The conditions are therefore
exactly those the one-update path gets from TA-Lib, at a small fraction of its cost.
"""

from __future__ import annotations

from bisect import bisect_left
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
# Rows of approximate bands computed at a time: a block's columns stay in the CPU's caches.
BLOCK_ROWS = 32_768


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
    prior = np.asarray(prior_closes, dtype=np.float64)
    if closing.all():  # every update closes a kline, as in a klines file: no selection needed
        history = np.concatenate([prior, previous_close])
        stop = np.arange(len(prior) + 1, len(prior) + len(columns) + 1, dtype=np.int64)
    else:
        history = np.concatenate([prior, previous_close[closing]])
        stop = len(prior) + np.cumsum(closing, dtype=np.int64)
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
    # Windows only grow along a batch, so the updates with bands are a suffix of it: slices.
    first = int(np.argmax(windows.valid)) if count else 0
    if count == 0 or not windows.valid[first]:
        return buy, sell
    columns = _window_columns(windows, close, first, period)
    for start in range(0, count - first, BLOCK_ROWS):
        stop = min(count - first, start + BLOCK_ROWS)
        block = [column[start:stop] for column in columns]
        part = slice(first + start, first + stop)
        undecided = _approximate_flags(
            block, price[part], buy[part], sell[part], period, nbdev_up, nbdev_dn
        )
        for row in undecided.tolist():
            index = first + start + row
            window = windows.closes(index, period, float(close[index]))
            bands = bollinger_bands(window, period, nbdev_up, nbdev_dn)
            buy[index], sell[index] = band_conditions(float(price[index]), bands)
    return buy, sell


def _approximate_flags(
    columns: list[Floats],
    price: Floats,
    buy: Bools,
    sell: Bools,
    period: int,
    nbdev_up: float,
    nbdev_dn: float,
) -> Ints:
    """Write the conditions of the rows the approximate bands decide into `buy` and `sell`
    (views); return the rows they leave undecided."""
    rows = len(price)
    # Mean and population deviation, two-pass, column by column into preallocated arrays. A flat
    # window needs no test of its own: its deviation comes out within rounding of zero, below
    # the narrow margin, so it goes to TA-Lib with the other undecided rows.
    total = columns[0].copy()
    for column in columns[1:]:
        np.add(total, column, out=total)
    middle = np.divide(total, period, out=total)
    squares = np.zeros(rows, dtype=np.float64)
    scratch = np.empty(rows, dtype=np.float64)
    for column in columns:
        np.subtract(column, middle, out=scratch)
        np.multiply(scratch, scratch, out=scratch)
        np.add(squares, scratch, out=squares)
    deviation = np.sqrt(np.divide(squares, period, out=squares), out=squares)

    # Price minus each band, approximately: only the sign is used, and only where the value lies
    # farther from zero than the margin, which any rounding here is far below.
    below_lower = price - middle
    above_upper = below_lower.copy()
    below_lower += deviation * nbdev_dn  # price - (middle - deviation * nbdev_dn)
    above_upper -= deviation * nbdev_up  # price - (middle + deviation * nbdev_up)
    margin = np.abs(price) * UNDECIDED_RELATIVE
    undecided = np.abs(below_lower) <= margin
    undecided |= np.abs(above_upper) <= margin
    undecided |= deviation <= np.abs(middle) * NARROW_RELATIVE
    np.less(below_lower, 0.0, out=buy)
    np.greater(above_upper, 0.0, out=sell)
    found: Ints = np.flatnonzero(undecided)
    return found


def _window_columns(windows: Windows, close: Floats, first: int, period: int) -> list[Floats]:
    """Column k of the windows of updates first.., oldest first, the update's own close last.
    When each update closes one more kline than the previous (a klines file), the columns are
    plain slices."""
    stop = windows.stop[first:]
    history = windows.history
    columns: list[Floats] = []
    rows = len(stop)
    start = int(stop[0]) - (period - 1)
    # `stop` rises by 0 or 1 per update, so rising by rows - 1 in all means by 1 at each.
    if int(stop[-1]) - int(stop[0]) == rows - 1:
        for offset in range(period - 1):
            columns.append(history[start + offset : start + offset + rows])
    else:
        for offset in range(period - 1):
            columns.append(history[stop - (period - 1) + offset])
    columns.append(close[first:])
    return columns


def crosses(condition: Bools, previous: bool) -> Bools:
    """An update where the condition holds and did not on the previous update (SPEC 3.1 rule 3)."""
    before = np.empty_like(condition)
    if len(condition):
        before[0] = previous
        before[1:] = condition[:-1]
    return condition & ~before


@dataclass(frozen=True, slots=True)
class CrossIndex:
    """Where one side's crosses of a batch are, for the event loop: a mask for whole-range
    searches, and the sorted indexes with their set, so that "the next cross at or after update
    i" and "is update i a cross" cost a bisection or a set lookup instead of an array scan."""

    mask: Bools
    indexes: list[int]
    members: frozenset[int]

    @classmethod
    def of(cls, mask: Bools) -> CrossIndex:
        indexes = np.flatnonzero(mask).tolist()
        return cls(mask, indexes, frozenset(indexes))

    def next_at(self, start: int) -> int:
        """The first cross at or after `start`, else the batch's length."""
        indexes = self.indexes
        found = bisect_left(indexes, start)
        return indexes[found] if found < len(indexes) else len(self.mask)

    def count_in(self, start: int, stop: int) -> int:
        """How many crosses lie in updates start..stop-1."""
        indexes = self.indexes
        return bisect_left(indexes, stop) - bisect_left(indexes, start)

    def __contains__(self, index: int) -> bool:
        return index in self.members
