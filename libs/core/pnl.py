"""Money arithmetic of SPEC 3.1 rules 6, 7, 12 and 16, and the per-symbol ledger it folds into.

Every formula is written exactly as the SPEC writes it, left to right in IEEE doubles, because an
independent implementation is compared with this one to a relative 1e-9: reordering a sum is a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from libs.core.decimals import format_decimal

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
    step = float(min_size)
    steps = math.floor(margin * leverage / fill_price / step)
    decimals = len(min_size.split(".", 1)[1]) if "." in min_size else 0
    return format_decimal(steps * step, decimals)


@dataclass(frozen=True, slots=True)
class Position:
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
        return gross_pnl(self.side, self.entry_price, price, self.size_value)


@dataclass(frozen=True, slots=True)
class Ledger:
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
        return self.allocation + self.realized_pnl - self.locked_margin

    def after_fill(
        self,
        *,
        usdt_profit: float,
        time_ms: int,
        position: Position | None,
        round_trip: RoundTrip | None,
    ) -> Ledger:
        return Ledger(
            allocation=self.allocation,
            realized_pnl=self.realized_pnl + usdt_profit,
            fill_count=self.fill_count + 1,
            win=self.win + (round_trip == "win"),
            lost=self.lost + (round_trip == "lost"),
            last_trade_time_ms=time_ms,
            position=position,
        )
