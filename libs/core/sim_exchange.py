"""The simulated exchange: when an open order fills, at what price and fee, and what the fill does
to the symbol's ledger (SPEC 3.1 rules 6 to 10 and 13).

Pure functions over frozen values: the strategy machine decides *that* an order exists; this module
decides how it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

from libs.core.pnl import (
    Ledger,
    Position,
    PositionSide,
    RoundTrip,
    Side,
    fee,
    gross_pnl,
    order_size,
    profit_ratio,
    size_step,
)

OrderType = Literal["maker", "taker"]
Signal = Literal["buying", "selling", "bought", "sold"]


@dataclass(frozen=True, slots=True)
class SymbolTerms:
    """What the exchange needs to know about one symbol of one bot."""

    index: int  # 0-based, config order
    symbol_count: int
    min_size: str
    price_decimals: int
    leverage: float
    isolated: bool
    maker_fee_pct: float
    taker_fee_pct: float
    buy_pct: float
    slippage_pct: float
    order_timeout_ms: int
    strategy_name: str

    def order_id(self, fill_number: int) -> int:
        """Fill n of symbol i of S symbols: n * S + i + 1 (SPEC 3.1 rule 13)."""
        return fill_number * self.symbol_count + self.index + 1


class Order(NamedTuple):
    """An order placed by a cross, or by a risk exit (`exit` names it, SPEC 3.3 rule 3).
    `closes` and `opens` are its legs: a flip has both, an exit only the closing one."""

    side: Side
    closes: bool
    opens: bool
    order_type: OrderType
    signal_time_ms: int
    signal_price: float
    previous_signal: Signal | None
    exit: str | None = None


class Fill(NamedTuple):
    """One TRADE of the Status API, with unrounded numbers; `round_trip` is set on closing fills.

    A NamedTuple like the ledger's values (libs.core.pnl): one is built per fill."""

    order_id: int
    time_ms: int
    execution_time_ms: int
    slippage_pct: float
    side: Side
    size: str
    fee: float
    price: float
    order_type: OrderType
    action: str
    profit: float
    usdt_profit: float
    position_side: PositionSide
    round_trip: RoundTrip | None


def taker_price(side: Side, price: float, slippage_pct: float) -> float:
    """SPEC 3.1 rule 8: a buy pays more, a sell gets less."""
    if side == "buy":
        return price * (1 + slippage_pct / 100)
    return price * (1 - slippage_pct / 100)


def slippage_of(side: Side, fill_price: float, signal_price: float) -> float:
    """(fill - signal) / signal * 100, sign flipped for sells, so positive = worse."""
    slippage = (fill_price - signal_price) / signal_price * 100
    return (-slippage if side == "sell" else slippage) + 0.0  # + 0.0 turns -0.0 into 0.0


def match(
    order: Order, time_ms: int, price: float, terms: SymbolTerms
) -> tuple[float, OrderType] | None:
    """Where an open order fills on this update, if it does (SPEC 3.1 rules 8 and 9).

    A maker limit reached fills at the limit before any timeout is considered.
    """
    if order.order_type == "taker":
        return taker_price(order.side, price, terms.slippage_pct), "taker"
    reached = price <= order.signal_price if order.side == "buy" else price >= order.signal_price
    if reached:
        return order.signal_price, "maker"
    if time_ms - order.signal_time_ms >= terms.order_timeout_ms:
        return taker_price(order.side, price, terms.slippage_pct), "taker"
    return None


def opening_size(ledger: Ledger, price: float, terms: SymbolTerms) -> str:
    """Size of an opening leg at `price` from the capital available now (SPEC 3.1 rule 6)."""
    margin = ledger.available_capital * terms.buy_pct / 100
    return order_size(margin, terms.leverage, price, terms.min_size)


def can_open(ledger: Ledger, price: float, terms: SymbolTerms) -> bool:
    return float(opening_size(ledger, price, terms)) >= size_step(terms.min_size)[0]


def _action(terms: SymbolTerms, side: Side, position_side: PositionSide) -> str:
    return _action_text(terms.strategy_name, side, position_side)


@lru_cache(maxsize=256)
def _action_text(strategy_name: str, side: Side, position_side: PositionSide) -> str:
    """TRADE.action, built once per strategy and side rather than per fill."""
    return f"{strategy_name}_{side}_{position_side}"


class Execution(NamedTuple):
    """Where and how a fill happens: shared by the legs of one order, and by a liquidation."""

    time_ms: int
    price: float
    fee_pct: float
    order_type: OrderType
    execution_time_ms: int
    slippage_pct: float

    def fill(
        self,
        ledger: Ledger,
        terms: SymbolTerms,
        *,
        side: Side,
        size: str,
        fee: float,
        action: str,
        entry_price: float,
        usdt_profit: float,
        position_side: PositionSide,
        round_trip: RoundTrip | None,
    ) -> Fill:
        """The TRADE: the ledger's next order_id, profit = usdtProfit / (entry * size)."""
        return Fill(  # positional, in field order: this runs for every fill
            terms.order_id(ledger.fill_count),
            self.time_ms,
            self.execution_time_ms,
            self.slippage_pct,
            side,
            size,
            fee,
            self.price,
            self.order_type,
            action,
            profit_ratio(usdt_profit, entry_price, float(size)),
            usdt_profit,
            position_side,
            round_trip,
        )


def close_position(
    ledger: Ledger,
    execution: Execution,
    terms: SymbolTerms,
    *,
    liquidation: bool = False,
    exit: str | None = None,
) -> tuple[Ledger, Fill]:
    """Close the open position at the execution's price; a risk exit's fill is named after the
    exit (`stopLoss_sell_long`), a cross's after the strategy (SPEC 3.3 rule 3)."""
    position = ledger.position
    assert position is not None, "close_position needs an open position"
    side: Side = "sell" if position.side == "long" else "buy"
    size = float(position.size)
    closing_fee = fee(size, execution.price, execution.fee_pct)
    gross = gross_pnl(position.side, position.entry_price, execution.price, size)
    usdt_profit = gross - closing_fee
    if liquidation:
        round_trip: RoundTrip = "lost"  # always a lost round trip (SPEC 3.1 rule 10)
        action = f"liquidation_{position.side}"
    else:
        round_trip = "win" if gross - position.opening_fee - closing_fee > 0 else "lost"
        action = _action_text(exit or terms.strategy_name, side, position.side)
    fill = execution.fill(
        ledger,
        terms,
        side=side,
        size=position.size,
        fee=closing_fee,
        action=action,
        entry_price=position.entry_price,
        usdt_profit=usdt_profit,
        position_side=position.side,
        round_trip=round_trip,
    )
    ledger = ledger.after_fill(
        usdt_profit=usdt_profit, time_ms=execution.time_ms, position=None, round_trip=round_trip
    )
    return ledger, fill


def open_position(
    ledger: Ledger, execution: Execution, terms: SymbolTerms, *, side: Side
) -> tuple[Ledger, Fill] | None:
    """Open a position sized at the fill; None when the size comes out below min_size."""
    price = execution.price
    margin = ledger.available_capital * terms.buy_pct / 100
    size_text = order_size(margin, terms.leverage, price, terms.min_size)
    size = float(size_text)
    if size < size_step(terms.min_size)[0]:
        return None
    opening_fee = fee(size, price, execution.fee_pct)
    usdt_profit = -opening_fee
    position_side: PositionSide = "long" if side == "buy" else "short"
    fill = execution.fill(
        ledger,
        terms,
        side=side,
        size=size_text,
        fee=opening_fee,
        action=_action(terms, side, position_side),
        entry_price=price,
        usdt_profit=usdt_profit,
        position_side=position_side,
        round_trip=None,
    )
    position = Position(position_side, price, size_text, margin, opening_fee)
    ledger = ledger.after_fill(
        usdt_profit=usdt_profit, time_ms=execution.time_ms, position=position, round_trip=None
    )
    return ledger, fill


def execute(
    order: Order,
    ledger: Ledger,
    *,
    time_ms: int,
    fill_price: float,
    order_type: OrderType,
    terms: SymbolTerms,
) -> tuple[Ledger, list[Fill]]:
    """Fill an order's legs at one price: the closing leg first, then the opening leg sized from
    the capital after the close (SPEC 3.1 rules 5, 6 and 13)."""
    execution = Execution(  # time, price, fee_pct, order_type, execution_time, slippage
        time_ms,
        fill_price,
        terms.maker_fee_pct if order_type == "maker" else terms.taker_fee_pct,
        order_type,
        time_ms - order.signal_time_ms,
        slippage_of(order.side, fill_price, order.signal_price),
    )
    fills: list[Fill] = []
    if order.closes and ledger.position is not None:
        ledger, fill = close_position(ledger, execution, terms, exit=order.exit)
        fills.append(fill)
    if order.opens:
        opened = open_position(ledger, execution, terms, side=order.side)
        if opened is not None:
            ledger, fill = opened
            fills.append(fill)
    return ledger, fills


def liquidation_due(ledger: Ledger, price: float, isolated: bool) -> bool:
    """SPEC 3.1 rule 10: the unrealized loss reaches the margin (isolated) or the symbol's
    available capital plus that margin (cross)."""
    position = ledger.position
    if position is None:
        return False
    loss = -position.unrealized_pnl(price)
    if isolated:
        return loss >= position.margin
    return loss >= ledger.available_capital + position.margin


def liquidate(
    ledger: Ledger, *, time_ms: int, price: float, terms: SymbolTerms
) -> tuple[Ledger, Fill]:
    """Close at exactly `price`: taker fee, no slippage, execution_time 0 (SPEC 3.1 rule 10)."""
    execution = Execution(time_ms, price, terms.taker_fee_pct, "taker", 0, 0.0)
    return close_position(ledger, execution, terms, liquidation=True)
