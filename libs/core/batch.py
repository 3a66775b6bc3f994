"""A batch of updates as columns, the window of every update, and the crosses of a batch.

The batch path decides a whole batch's conditions at once (a strategy's `conditions`), so each
update's window must be at hand without building it: the windows here are slices of one series
(a klines file) or rows gathered from the closed klines' columns (trades).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from libs.core.market import Kline, MarketUpdate
from libs.core.strategies.contract import (
    KLINE_FIELDS,
    Bools,
    Column,
    Floats,
    Ints,
    KlineWindow,
    WindowBatch,
)


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


class Windows:
    """Each update's window: the `window - 1` klines closed before it (rows stop-window+1 ..
    stop-1 of `history(field)`), then its own kline as it stands.

    The closed klines' columns are built on first use, field by field: most strategies read
    the closes alone, and a year's batch would otherwise build five more columns for nothing.
    """

    def __init__(
        self,
        prior: Mapping[str, Column],
        current_kline: Kline | None,
        columns: UpdateColumns,
        closing: Bools,
        window: int,
    ) -> None:
        self.window = window
        self._prior, self._current_kline, self._columns = prior, current_kline, columns
        self._closing = closing
        self._every_closes = bool(closing.all())
        self._history: dict[str, Column] = {}
        known = len(prior["close"])
        count = len(columns)
        if self._every_closes:  # every update closes a kline, as in a klines file
            self.stop: Ints = np.arange(known + 1, known + count + 1, dtype=np.int64)
        else:
            self.stop = known + np.cumsum(closing, dtype=np.int64)
        self.valid: Bools = self.stop >= window - 1  # a window exists

    def history(self, name: str) -> Column:
        """The closed klines' `name` field, oldest first: before the batch, then those the
        batch closes (each update that starts a kline closes the one before it)."""
        found = self._history.get(name)
        if found is None:
            own = _current(self._columns, name)
            previous = np.empty(len(own), dtype=own.dtype)
            if len(own):
                current = self._current_kline
                previous[0] = _kline_field(current, name) if current is not None else 0
                previous[1:] = own[:-1]
            closed = previous if self._every_closes else previous[self._closing]
            prior = np.asarray(self._prior[name], dtype=own.dtype)
            found = self._history[name] = np.concatenate([prior, closed])
        return found

    def closed_tail(self, count: int) -> dict[str, Column]:
        """The last `count` closed klines (fewer if there are not as many), field by field:
        what the history keeps after the batch, without building the batch's columns."""
        if count <= 0:
            return {name: self._prior[name][:0] for name in KLINE_FIELDS}
        closes_at = np.flatnonzero(self._closing)[-count:]  # updates that close a kline
        from_prior = count - len(closes_at)
        tail: dict[str, Column] = {}
        for name in KLINE_FIELDS:
            own = _current(self._columns, name)
            values = own[np.maximum(closes_at - 1, 0)]
            if len(closes_at) and closes_at[0] == 0:  # the batch's first update closes the
                current = self._current_kline  # kline it continues from
                assert current is not None
                values[0] = _kline_field(current, name)
            prior = np.asarray(self._prior[name], dtype=own.dtype)
            earlier = prior[max(0, len(prior) - from_prior) :] if from_prior > 0 else prior[:0]
            tail[name] = np.concatenate([earlier, values])
        return tail

    @property
    def first(self) -> int:
        """The first update with a window; windows only grow, so all after it have one too."""
        count = len(self.valid)
        if count == 0 or not self.valid[-1]:
            return count
        return int(np.argmax(self.valid))

    def contiguous_from(self, first: int) -> bool:
        """Each update from `first` on closes one more kline than the one before (a klines
        file): windows are then overlapping slices of one series."""
        stop = self.stop[first:]
        return len(stop) == 0 or int(stop[-1]) - int(stop[0]) == len(stop) - 1

    def kline_window(self, index: int, columns: UpdateColumns) -> KlineWindow:
        """The window `evaluate` gets at update `index`."""
        stop, keep = int(self.stop[index]), self.window - 1

        def load(name: str) -> Column:
            own = _current(columns, name)[index : index + 1]
            return np.concatenate([self.history(name)[stop - keep : stop], own])

        return KlineWindow(load)

    def batch(self, columns: UpdateColumns) -> WindowBatch:
        """The windows of updates `first`.. as one `WindowBatch` (row 0 = update `first`)."""
        first, keep = self.first, self.window - 1
        rows: Callable[[str, int, int], Column]
        if self.contiguous_from(first):
            base = int(self.stop[first]) - keep if first < len(columns) else 0
            series: dict[str, Column] = {}

            def sliding(name: str, start: int, stop: int) -> Column:
                found = series.get(name)
                if found is None:
                    closed = self.history(name)[base : base + keep]
                    found = series[name] = np.concatenate([closed, _current(columns, name)[first:]])
                return sliding_window_view(found[start : stop + keep], keep + 1)

            rows = sliding
        else:
            stops = self.stop[first:]
            offsets = np.arange(-keep, 0, dtype=np.int64)

            def gathered(name: str, start: int, stop: int) -> Column:
                closed = self.history(name)[stops[start:stop, None] + offsets]
                own = _current(columns, name)[first + start : first + stop, None]
                return np.concatenate([closed, own], axis=1)

            rows = gathered
        return WindowBatch(self.window, columns.price[first:], rows)


def _current(columns: UpdateColumns, name: str) -> Column:
    """Each update's own kline's field."""
    column: Column = columns.kline_time_ms if name == "time" else getattr(columns, name)
    return column


def no_klines() -> dict[str, Column]:
    """The closed klines of a symbol that has seen none, column by column."""
    return {
        name: np.empty(0, dtype=np.int64 if name == "time" else np.float64) for name in KLINE_FIELDS
    }


def windows_of(
    prior: Mapping[str, Column],
    current_kline: Kline | None,
    columns: UpdateColumns,
    window: int,
) -> tuple[Windows, Bools]:
    """The windows of every update, and where a new kline starts (the previous one closes).
    `prior` holds the closed klines before the batch, column by column."""
    count = len(columns)
    kline_time = columns.kline_time_ms
    starts = np.empty(count, dtype=np.bool_)
    if count:
        starts[0] = current_kline is None or kline_time[0] != current_kline.time_ms
        starts[1:] = kline_time[1:] != kline_time[:-1]
    closing = starts.copy()
    if count and current_kline is None:
        closing[0] = False  # the very first kline closes nothing
    return Windows(prior, current_kline, columns, closing, window), starts


def _kline_field(kline: Kline, name: str) -> float | int:
    return kline.time_ms if name == "time" else float(getattr(kline, name))


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
