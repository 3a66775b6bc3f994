"""A symbol's recent klines as a strategy reads them: the closed klines its window needs and the
forming one, in six numpy columns, so that each update's window is a view, not a copy.

One update costs six scalar writes here, whatever the window (200 klines for MACD), which keeps
the one-update path as cheap for a long window as for Bollinger's 20.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from libs.core.market import Kline
from libs.core.strategies.contract import KLINE_FIELDS, Column, KlineWindow

_FLOAT_FIELDS = KLINE_FIELDS[1:]


class Mark(NamedTuple):
    """Where the history stood before an update, to undo it when the strategy fails there."""

    start: int
    end: int
    has_current: bool
    rows: tuple[tuple[float, ...], ...]  # rows end and end + 1, one of which the update writes


class KlineHistory:
    """The last `window - 1` closed klines and the forming kline of one symbol.

    Closed klines sit at rows start..end-1 of each column and the forming kline at row `end`;
    a new kline moves `end` on by one, and the rows are moved back to the front only when the
    columns fill up, so appending costs O(1) amortized.
    """

    def __init__(self, window: int, closed: Iterable[Kline] = (), current: Kline | None = None):
        if window < 1:
            raise ValueError(f"window={window!r} must be >= 1")
        self.window = window
        self.keep = window - 1
        capacity = max(4 * window, 64)
        self._columns: dict[str, Column] = {"time": np.zeros(capacity, dtype=np.int64)}
        for name in _FLOAT_FIELDS:
            self._columns[name] = np.zeros(capacity, dtype=np.float64)
        self._start = self._end = 0
        self.has_current = False
        for kline in closed:
            self.advance(kline, new_kline=True)
        if self.has_current:  # the last of `closed` is closed too
            self._close_current()
        if current is not None:
            self.advance(current, new_kline=True)

    # --- reading -----------------------------------------------------------------------------

    @property
    def closed_count(self) -> int:
        return self._end - self._start

    def full(self) -> bool:
        """A window exists: `window - 1` closed klines and the forming one (SPEC 3.2 rule 2)."""
        return self.has_current and self.closed_count >= self.keep

    def window_view(self) -> KlineWindow:
        """The window of the last update, as views into the columns (valid until the next one)."""
        start, stop, columns = self._end - self.keep, self._end + 1, self._columns
        return KlineWindow(lambda name: columns[name][start:stop])

    def closed(self) -> list[Kline]:
        """The closed klines kept, oldest first: what a checkpoint stores."""
        rows = range(self._start, self._end)
        columns = self._columns
        return [
            Kline(int(columns["time"][row]), *(float(columns[n][row]) for n in _FLOAT_FIELDS))
            for row in rows
        ]

    def closed_columns(self) -> dict[str, Column]:
        """The closed klines kept, column by column (copies): what a batch starts from."""
        return {name: column[self._start : self._end].copy() for name, column in self.items()}

    def items(self) -> Iterable[tuple[str, Column]]:
        return self._columns.items()

    # --- writing -----------------------------------------------------------------------------

    def mark(self) -> Mark:
        """Call before `advance`; `restore` with it puts the history back exactly. An update
        writes row `end` (the forming kline changed) or row `end + 1` (a new kline)."""
        self._make_room(2)
        columns = self._columns
        rows = tuple(
            tuple(float(columns[name][row]) for name in KLINE_FIELDS)
            for row in (self._end, self._end + 1)
        )
        return Mark(self._start, self._end, self.has_current, rows)

    def restore(self, mark: Mark) -> None:
        self._start, self._end, self.has_current = mark.start, mark.end, mark.has_current
        for offset, values in enumerate(mark.rows):
            for name, value in zip(KLINE_FIELDS, values, strict=True):
                self._columns[name][mark.end + offset] = value

    def advance(self, kline: Kline, *, new_kline: bool) -> None:
        """The forming kline after an update: a kline of a new period closes the forming one."""
        if new_kline and self.has_current:
            self._close_current()
        self._make_room(1)
        row = self._end
        columns = self._columns
        columns["time"][row] = kline.time_ms
        columns["open"][row] = kline.open
        columns["high"][row] = kline.high
        columns["low"][row] = kline.low
        columns["close"][row] = kline.close
        columns["volume"][row] = kline.volume
        self.has_current = True

    def replace(self, closed: Mapping[str, Column], current: Kline) -> None:
        """The history after a batch: its last `window - 1` closed klines and the forming one."""
        count = min(len(closed["close"]), self.keep)
        self._start, self._end, self.has_current = 0, count, False
        for name in KLINE_FIELDS:
            if count:
                self._columns[name][:count] = closed[name][-count:]
        self.advance(current, new_kline=True)

    def _close_current(self) -> None:
        self._end += 1
        self.has_current = False
        if self._end - self._start > self.keep:
            self._start = self._end - self.keep

    def _make_room(self, rows_after_end: int) -> None:
        """Room for rows up to `end + rows_after_end`: move the rows to the front when the
        columns are full. `mark` asks for two, so the update after it never moves them."""
        capacity = len(self._columns["close"])
        if self._end + rows_after_end < capacity:
            return
        rows = slice(self._start, self._end + (1 if self.has_current else 0))
        count = rows.stop - rows.start
        for column in self._columns.values():
            column[:count] = column[rows].copy()
        self._end -= self._start
        self._start = 0
