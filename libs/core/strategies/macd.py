"""`MACD` (SPEC 3.2 rule 7): buy while the histogram is above zero, sell while it is below.

Like RSI, TA-Lib's MACD seeds its moving averages from the first closes it is given, so each
update's window is computed afresh. The batch path computes every window with a numpy replica of
TA-Lib's order of operations (`libs.core.talib_replica`) and settles by TA-Lib itself any window
whose histogram lies within a hair of zero, so its conditions are the one-update path's.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import talib

from libs.core.strategies.contract import (
    Bools,
    Evaluation,
    Floats,
    KlineWindow,
    Strategy,
    WindowBatch,
)
from libs.core.strategies.rsi import is_flat
from libs.core.talib_replica import macd_last

# The histogram is a difference of averages of prices; the replica differs from TA-Lib's by a
# few ulps of the price at most, this margin by ten million times that.
UNDECIDED_RELATIVE = 1e-9
BLOCK_ROWS = 16_384


class MACD(Strategy):
    name: ClassVar[str] = "MACD"
    indicators: ClassVar[tuple[str, ...]] = ("macd", "macdsignal", "macdhist")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9, window: int = 200) -> None:
        self.fast, self.slow, self.signal, self.window = fast, slow, signal, window

    def _exact(self, closes: Floats) -> tuple[float, float, float]:
        macd, signal, hist = talib.MACD(
            closes, fastperiod=self.fast, slowperiod=self.slow, signalperiod=self.signal
        )
        return float(macd[-1]), float(signal[-1]), float(hist[-1])

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        closes = klines.close
        values = self._exact(closes)
        if is_flat(closes):
            return Evaluation(False, False, values)
        hist = values[2]
        return Evaluation(hist > 0, hist < 0, values)

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        rows = len(windows)
        buy = np.zeros(rows, dtype=np.bool_)
        sell = np.zeros(rows, dtype=np.bool_)
        for start, stop in windows.blocks(BLOCK_ROWS):
            closes = windows.column("close", start, stop)
            hist = macd_last(closes, self.fast, self.slow, self.signal)[2]
            moving = closes.max(axis=1) != closes.min(axis=1)
            np.logical_and(hist > 0, moving, out=buy[start:stop])
            np.logical_and(hist < 0, moving, out=sell[start:stop])
            margin = np.abs(windows.price[start:stop]) * UNDECIDED_RELATIVE
            for row in np.flatnonzero(np.abs(hist) <= margin).tolist():
                window = np.ascontiguousarray(closes[row])
                exact = self._exact(window)[2]
                flat = is_flat(window)
                buy[start + row] = exact > 0 and not flat
                sell[start + row] = exact < 0 and not flat
        return buy, sell
