"""Money arithmetic of SPEC 3.1 rules 6, 7, 12 and 16, and the per-symbol ledger it folds into.

Every formula is written exactly as the SPEC writes it, left to right in IEEE doubles, because an
independent implementation is compared with this one to a relative 1e-9: reordering a sum is a bug.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, NamedTuple

from libs.core.decimals import decimals_of, format_decimal

Side = Literal["buy", "sell"]
PositionSide = Literal["long", "short"]
RoundTrip = Literal["win", "lost"]


def fee(size: float, price: float, fee_pct: float) -> float:
    return size * price * fee_pct / 100


def gross_pnl(side: PositionSide, entry_price: float, exit_price: float, size: float) -> float:
    if side == "long":
        return (exit_price - entry_price) * size
    return (entry_price - exit_price) * size


def profit_ratio(usdt_profit: float, entry_price: float, size: float) -> float:
    return usdt_profit / (entry_price * size)


def order_size(margin: float, leverage: float, fill_price: float, min_size: str) -> str:
    """size = floor(margin * leverage / fill price / min_size) * min_size, formatted to min_size's
    decimals; callers use the number in the returned string from then on (SPEC 3.1 rule 6)."""
    step, decimals = size_step(min_size)
    steps = math.floor(margin * leverage / fill_price / step)
    return format_decimal(steps * step, decimals)


@lru_cache(maxsize=256)
def size_step(min_size: str) -> tuple[float, int]:
    """min_size as a number and its decimals, parsed once per symbol rather than per order."""
    return float(min_size), decimals_of(min_size)


# The values below are built for every fill, tens of thousands of times in a year's backtest, so
# they are NamedTuples: as immutable as a frozen dataclass, and about five times cheaper to build.


class Position(NamedTuple):
    side: PositionSide
    entry_price: float
    size: str
    margin: float
    opening_fee: float

    @property
    def size_value(self) -> float:
        return float(self.size)

    def unrealized_pnl(self, price: float) -> float:
        """Gross, no fees, at the symbol's last price (SPEC 3.1 rule 12)."""
        return gross_pnl(self.side, self.entry_price, price, float(self.size))


class Ledger(NamedTuple):
    """What a symbol's fills add up to. `fill_count` numbers the next fill (SPEC 3.1 rule 13)."""

    allocation: float
    realized_pnl: float = 0.0
    fill_count: int = 0
    win: int = 0
    lost: int = 0
    last_trade_time_ms: int = 0
    position: Position | None = None

    @property
    def locked_margin(self) -> float:
        """The open position's opening margin, until it closes (SPEC 3.1 rule 7)."""
        return self.position.margin if self.position is not None else 0.0

    @property
    def available_capital(self) -> float:
        """allocation + realized PnL - locked margin, as SPEC section 3 writes it."""
        position = self.position  # the locked margin, inline: this runs for every order
        return self.allocation + self.realized_pnl - (0.0 if position is None else position.margin)

    def after_fill(
        self,
        *,
        usdt_profit: float,
        time_ms: int,
        position: Position | None,
        round_trip: RoundTrip | None,
    ) -> Ledger:
        # Positional, in field order: allocation, realized_pnl, fill_count, win, lost, last trade
        # time, position.
        return Ledger(
            self.allocation,
            self.realized_pnl + usdt_profit,
            self.fill_count + 1,
            self.win + (round_trip == "win"),
            self.lost + (round_trip == "lost"),
            time_ms,
            position,
        )
