"""`MACD` (SPEC 3.2 rule 7): buy while the histogram is above zero, sell while it is below.

Like RSI, TA-Lib's MACD seeds its moving averages from the first closes it is given, so each
update's window is computed afresh. TA-Lib advances its averages with a fused multiply-add,
which numpy lacks: an exact replica (`libs.core.talib_replica.macd_last`) must emulate it and is
slower than TA-Lib itself. So the batch path computes every window's histogram the plain way,
with TA-Lib's order of operations but a separate multiply and add (a few ulps of the price
off), and settles by TA-Lib itself any window whose histogram lies within a hair of zero: its
conditions are the one-update path's, at a fraction of the cost.
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

# The histogram is a difference of averages of prices; the replica differs from TA-Lib's by a
# few ulps of the price at most, this margin by ten million times that.
UNDECIDED_RELATIVE = 1e-9
BLOCK_ROWS = 16_384


class MACD(Strategy):
    name: ClassVar[str] = "MACD"
    indicators: ClassVar[tuple[str, ...]] = ("macd", "macdsignal", "macdhist")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9, window: int = 200) -> None:
        self.fast, self.slow, self.signal, self.window = fast, slow, signal, window
        self._cached_weights: Floats | None = None

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

    def _weights(self) -> Floats:
        """The histogram is linear in the window's closes (sums, divisions by the periods and
        EMA steps, all linear): its weight on each close is its answer for a unit close there.
        One dot product per window then replaces the `window` steps of the recurrence; it
        rounds differently from them, by a few ulps of the price, far inside the margin."""
        weights = self._cached_weights
        if weights is None:
            weights = self._cached_weights = self._approximate_histogram(np.eye(self.window))
        return weights

    def _approximate_histogram(self, closes: Floats) -> Floats:
        """Each row's last histogram value, TA-Lib's steps with `k * (x - prev) + prev` for
        its fused `fma(k, x - prev, prev)`. Windows are at least slow + signal - 1 closes; the
        last `window` of each row are the ones TA-Lib would see."""
        fast, slow, signal = self.fast, self.slow, self.signal
        k_fast, k_slow, k_signal = (2.0 / float(period + 1) for period in (fast, slow, signal))
        rows, width = closes.shape
        total = np.zeros(rows, dtype=np.float64)
        for column in range(slow - fast):
            total += closes[:, column]
        ema_fast = np.zeros(rows, dtype=np.float64)
        for column in range(slow - fast, slow):
            ema_fast += closes[:, column]
            total += closes[:, column]
        ema_slow = total / float(slow)
        ema_fast /= float(fast)
        macd = ema_fast - ema_slow
        ema_signal = macd.copy()
        step = np.empty(rows, dtype=np.float64)
        for column in range(slow, width):
            value = closes[:, column]
            np.subtract(value, ema_fast, out=step)
            step *= k_fast
            ema_fast += step
            np.subtract(value, ema_slow, out=step)
            step *= k_slow
            ema_slow += step
            np.subtract(ema_fast, ema_slow, out=macd)
            if signal == 1:
                continue
            if column < slow + signal - 1:
                ema_signal += macd
                if column == slow + signal - 2:
                    ema_signal /= float(signal)
            else:
                np.subtract(macd, ema_signal, out=step)
                step *= k_signal
                ema_signal += step
        if signal == 1:
            return np.zeros(rows, dtype=np.float64)
        hist: Floats = macd - ema_signal
        return hist

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        rows = len(windows)
        buy = np.zeros(rows, dtype=np.bool_)
        sell = np.zeros(rows, dtype=np.bool_)
        weights = self._weights()
        for start, stop in windows.blocks(BLOCK_ROWS):
            closes = windows.column("close", start, stop)
            # A flat window's histogram is its close times the weights' sum, zero but for
            # rounding: well inside the margin, so TA-Lib and the flat test below settle it.
            hist = closes @ weights
            np.greater(hist, 0.0, out=buy[start:stop])
            np.less(hist, 0.0, out=sell[start:stop])
            margin = np.abs(windows.price[start:stop]) * UNDECIDED_RELATIVE
            for row in np.flatnonzero(np.abs(hist) <= margin).tolist():
                window = np.ascontiguousarray(closes[row])
                exact = self._exact(window)[2]
                flat = is_flat(window)
                buy[start + row] = exact > 0 and not flat
                sell[start + row] = exact < 0 and not flat
        return buy, sell
