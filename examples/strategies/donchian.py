"""`Donchian`: a Donchian channel breakout, the example strategy plug-in (docs/strategies.md).

The channel of an update is the highest high and the lowest low of the `period` klines closed
before the forming one. A close above the channel is a breakout up (buy: close a short, open a
long), a close below it a breakout down (sell). The forming kline is left out of the channel on
purpose: its own high is at least its close, so a channel that included it could never be broken.

A bot names it `strategy: {name: "donchian:DonchianBreakout", period: 20}`, with this directory
on the PYTHONPATH of the strategy worker and of `bandwagon backtest`, so that the module is
`donchian`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from libs.core.strategies.contract import Bools, Evaluation, KlineWindow, Strategy, WindowBatch


class DonchianBreakout(Strategy):
    """Buy when the price closes above the channel, sell when it closes below it."""

    name: ClassVar[str] = "Donchian"  # trade actions read Donchian_buy_long, Donchian_sell_short...
    indicators: ClassVar[tuple[str, ...]] = ("upper", "lower")

    class Params(BaseModel):
        """The strategy's own parameters, validated at start: a bad one is a config error naming
        `bots[<id>].strategy.<field>`. `extra="forbid"` turns a misspelt parameter into such an
        error too, instead of a silent default."""

        model_config = ConfigDict(frozen=True, extra="forbid")

        period: int = Field(20, ge=2, le=1000)

    def __init__(self, params: Params) -> None:
        self.period = params.period
        # The channel's klines and the forming one: the machine hands `evaluate` exactly this many.
        self.window = params.period + 1

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        """The channel of the closed klines and where the forming kline's close (the update's
        price) stands against it. Only max, min and comparisons: exact in floating point, so
        `conditions` below gets the same answers bit for bit."""
        upper = float(klines.high[:-1].max())
        lower = float(klines.low[:-1].min())
        close = float(klines.close[-1])
        # Every kline has low <= high, so lower <= upper and both conditions can never hold.
        return Evaluation(close > upper, close < lower, (upper, lower))

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        """`evaluate` for a whole batch at once, one block of rows at a time: a block's columns
        are (rows x window) views (or copies) that would not all fit in memory for a year of
        klines. Same operations on the same numbers as `evaluate`, so the same conditions."""
        rows = len(windows)
        buy = np.zeros(rows, dtype=np.bool_)
        sell = np.zeros(rows, dtype=np.bool_)
        for start, stop in windows.blocks():
            upper = windows.column("high", start, stop)[:, :-1].max(axis=1)
            lower = windows.column("low", start, stop)[:, :-1].min(axis=1)
            close = windows.column("close", start, stop)[:, -1]
            np.greater(close, upper, out=buy[start:stop])
            np.less(close, lower, out=sell[start:stop])
        return buy, sell
