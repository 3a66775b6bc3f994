"""`BollingerBands` (SPEC section 3, 3.1 rule 2): buy below the lower band, sell above the upper.

The batch path decides the conditions of a whole batch with numpy, from approximate bands, and
every update whose price lies within a hair of a band (or whose window is nearly flat) is settled
by TA-Lib itself on that update's exact window. The conditions are therefore exactly those the
one-update path gets from TA-Lib, at a small fraction of its cost.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from libs.core.bands import band_conditions, band_width_pct, bollinger_bands, percent_b
from libs.core.strategies.contract import (
    Bools,
    Evaluation,
    Floats,
    Ints,
    KlineWindow,
    Strategy,
    WindowBatch,
)

# Relative distance to a band under which the approximate bands cannot decide; they differ from
# TA-Lib's by about 1e-16 of the price, so this margin is ten million times that.
UNDECIDED_RELATIVE = 1e-9
# Windows whose spread is this small relative to the price also go to TA-Lib (zero-width guard).
NARROW_RELATIVE = 1e-7
# Rows of approximate bands computed at a time: a block's columns stay in the CPU's caches.
BLOCK_ROWS = 32_768


class BollingerBands(Strategy):
    name: ClassVar[str] = "BollingerBands"
    indicators: ClassVar[tuple[str, ...]] = ("middle", "upper", "lower", "pb", "pw")

    def __init__(self, period: int = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0) -> None:
        self.period, self.nbdev_up, self.nbdev_dn = period, nbdev_up, nbdev_dn
        self.window = period

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        closes = klines.close
        bands = bollinger_bands(closes, self.period, self.nbdev_up, self.nbdev_dn)
        assert bands is not None  # the machine calls with `window` klines
        close = float(closes[-1])  # the update's price (SPEC 3.1 rule 1)
        buy, sell = band_conditions(close, bands)
        return Evaluation(
            buy,
            sell,
            (
                bands.middle,
                bands.upper,
                bands.lower,
                percent_b(close, bands),
                band_width_pct(bands),
            ),
        )

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        rows = len(windows)
        buy = np.zeros(rows, dtype=np.bool_)
        sell = np.zeros(rows, dtype=np.bool_)
        for start, stop in windows.blocks(BLOCK_ROWS):
            block = windows.column("close", start, stop)
            # a sliding view's columns are contiguous slices of one series: cheap to add up
            columns = [block[:, offset] for offset in range(self.period)]
            part = slice(start, stop)
            undecided = self._approximate_flags(columns, windows.price[part], buy[part], sell[part])
            for row in undecided.tolist():
                window = block[row]
                bands = bollinger_bands(window, self.period, self.nbdev_up, self.nbdev_dn)
                buy[start + row], sell[start + row] = band_conditions(float(window[-1]), bands)
        return buy, sell

    def _approximate_flags(
        self, columns: list[Floats], price: Floats, buy: Bools, sell: Bools
    ) -> Ints:
        """Write the conditions of the rows the approximate bands decide into `buy` and `sell`
        (views); return the rows they leave undecided."""
        rows, period = len(price), self.period
        # Mean and population deviation, two-pass, column by column into preallocated arrays. A
        # flat window needs no test of its own: its deviation comes out within rounding of zero,
        # below the narrow margin, so it goes to TA-Lib with the other undecided rows.
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

        # Price minus each band, approximately: only the sign is used, and only where the value
        # lies farther from zero than the margin, which any rounding here is far below.
        below_lower = price - middle
        above_upper = below_lower.copy()
        below_lower += deviation * self.nbdev_dn  # price - (middle - deviation * nbdev_dn)
        above_upper -= deviation * self.nbdev_up  # price - (middle + deviation * nbdev_up)
        margin = np.abs(price) * UNDECIDED_RELATIVE
        undecided = np.abs(below_lower) <= margin
        undecided |= np.abs(above_upper) <= margin
        undecided |= deviation <= np.abs(middle) * NARROW_RELATIVE
        np.less(below_lower, 0.0, out=buy)
        np.greater(above_upper, 0.0, out=sell)
        found: Ints = np.flatnonzero(undecided)
        return found
