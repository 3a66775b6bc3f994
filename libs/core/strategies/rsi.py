"""`RSI` (SPEC 3.2 rule 6): buy while the RSI of the window is below `oversold`, sell while it is
above `overbought`.

TA-Lib's RSI smooths from the first close it is given, so the value depends on the whole window,
not only on the last `period` closes: every update's window is computed afresh. The batch path
computes every window's RSI with a numpy replica of TA-Lib's own order of operations
(`libs.core.talib_replica`) and settles by TA-Lib itself any window whose RSI lies within a hair
of a threshold, so its conditions are those of the one-update path, bit for bit.
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
from libs.core.talib_replica import rsi_last

# RSI runs 0..100; the replica differs from TA-Lib by a few ulps at most, this by 1e-11 of it.
UNDECIDED_DISTANCE = 1e-9
BLOCK_ROWS = 16_384


def is_flat(closes: Floats) -> bool:
    """All closes equal: no built-in has a condition (SPEC 3.2 rule 5)."""
    return bool((closes == closes[0]).all())


class RSI(Strategy):
    name: ClassVar[str] = "RSI"
    indicators: ClassVar[tuple[str, ...]] = ("rsi",)

    def __init__(
        self,
        period: int = 14,
        window: int = 100,
        oversold: float = 30.0,
        overbought: float = 70.0,
    ) -> None:
        self.period, self.window = period, window
        self.oversold, self.overbought = oversold, overbought

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        closes = klines.close
        rsi = float(talib.RSI(closes, timeperiod=self.period)[-1])
        if is_flat(closes):
            return Evaluation(False, False, (rsi,))
        return Evaluation(rsi < self.oversold, rsi > self.overbought, (rsi,))

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        rows = len(windows)
        buy = np.zeros(rows, dtype=np.bool_)
        sell = np.zeros(rows, dtype=np.bool_)
        for start, stop in windows.blocks(BLOCK_ROWS):
            closes = windows.column("close", start, stop)
            rsi = rsi_last(closes, self.period)
            moving = closes.max(axis=1) != closes.min(axis=1)
            np.logical_and(rsi < self.oversold, moving, out=buy[start:stop])
            np.logical_and(rsi > self.overbought, moving, out=sell[start:stop])
            undecided = np.abs(rsi - self.oversold) <= UNDECIDED_DISTANCE
            undecided |= np.abs(rsi - self.overbought) <= UNDECIDED_DISTANCE
            for row in np.flatnonzero(undecided).tolist():
                window = np.ascontiguousarray(closes[row])
                exact = float(talib.RSI(window, timeperiod=self.period)[-1])
                flat = is_flat(window)
                buy[start + row] = exact < self.oversold and not flat
                sell[start + row] = exact > self.overbought and not flat
        return buy, sell
