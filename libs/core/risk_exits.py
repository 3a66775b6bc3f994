"""Stop loss, trailing stop and take profit (SPEC 3.3): when an open position's price has moved
far enough to close it, whatever the strategy says.

One formula per trigger, written as SPEC 3.3 rule 2 writes it, in a scalar form (the update at
hand) and an array form (a batch's updates, to find the first that triggers); both evaluate the
same IEEE expressions element by element, so they agree to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from libs.core.pnl import Position
from libs.core.strategies.contract import Bools, Floats

ExitName = Literal["stopLoss", "trailingStop", "takeProfit"]


@dataclass(frozen=True, slots=True)
class RiskExits:
    """Each a percentage in (0, 1000], or None (off)."""

    stop_loss_pct: float | None = None
    take_profit_pct: float | None = None
    trailing_stop_pct: float | None = None

    @property
    def any(self) -> bool:
        return (
            self.stop_loss_pct is not None
            or self.take_profit_pct is not None
            or self.trailing_stop_pct is not None
        )

    def triggered(self, position: Position, price: float, extreme: float | None) -> ExitName | None:
        """The first trigger, in SPEC 3.3 rule 2's order, of a position at `price`; `extreme`
        is the highest (long) or lowest (short) update price since its opening fill (known
        whenever a trailing stop is on)."""
        entry = position.entry_price
        stop_loss, trailing, take_profit = (
            self.stop_loss_pct,
            self.trailing_stop_pct,
            self.take_profit_pct,
        )
        if position.side == "long":
            if stop_loss is not None and price <= entry * (1 - stop_loss / 100):
                return "stopLoss"
            if trailing is not None and price <= _known(extreme) * (1 - trailing / 100):
                return "trailingStop"
            if take_profit is not None and price >= entry * (1 + take_profit / 100):
                return "takeProfit"
            return None
        if stop_loss is not None and price >= entry * (1 + stop_loss / 100):
            return "stopLoss"
        if trailing is not None and price >= _known(extreme) * (1 + trailing / 100):
            return "trailingStop"
        if take_profit is not None and price <= entry * (1 - take_profit / 100):
            return "takeProfit"
        return None

    def mask(self, position: Position, prices: Floats, extremes: Floats) -> Bools:
        """Where any trigger holds, for consecutive updates at `prices` whose running extreme
        since the opening fill is `extremes`."""
        entry = position.entry_price
        mask = np.zeros(len(prices), dtype=np.bool_)
        long = position.side == "long"
        if self.stop_loss_pct is not None:
            if long:
                mask |= prices <= entry * (1 - self.stop_loss_pct / 100)
            else:
                mask |= prices >= entry * (1 + self.stop_loss_pct / 100)
        if self.trailing_stop_pct is not None:
            if long:
                mask |= prices <= extremes * (1 - self.trailing_stop_pct / 100)
            else:
                mask |= prices >= extremes * (1 + self.trailing_stop_pct / 100)
        if self.take_profit_pct is not None:
            if long:
                mask |= prices >= entry * (1 + self.take_profit_pct / 100)
            else:
                mask |= prices <= entry * (1 - self.take_profit_pct / 100)
        return mask


def _known(extreme: float | None) -> float:
    assert extreme is not None, "a trailing stop tracks its extreme from the opening fill"
    return extreme


def running_extreme(position: Position, seed: float | None, prices: Floats) -> Floats:
    """The extreme through each of `prices`, continuing from `seed` (the extreme before them)."""
    if position.side == "long":
        running = np.maximum.accumulate(prices)
        return running if seed is None else np.maximum(running, seed, out=running)
    running = np.minimum.accumulate(prices)
    return running if seed is None else np.minimum(running, seed, out=running)
