"""SYMBOL and STATUS figures from the ledgers, by the formulas of SPEC section 2.

Accounting and the backtest both call these, so a status is computed one way only. Sums run over
symbols in config order, left to right (SPEC 3.1 rule 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from libs.core.pnl import Ledger


@dataclass(frozen=True, slots=True)
class SymbolFigures:
    price: float
    asset_capital: float
    realized_pnl: float
    profit: float
    unrealized_pnl: float
    unrealized_profit: float
    win: int
    lost: int
    win_lost_rate: float
    last_trade_time_ms: int
    locked_margin: float
    fill_count: int


def win_lost_rate(win: int, lost: int) -> float:
    return win / (win + lost) if win + lost else 0.0


def symbol_figures(ledger: Ledger, price: float) -> SymbolFigures:
    position = ledger.position
    unrealized = position.unrealized_pnl(price) if position is not None else 0.0
    asset_capital = position.margin + unrealized if position is not None else 0.0
    return SymbolFigures(
        price=price,
        asset_capital=asset_capital,
        realized_pnl=ledger.realized_pnl,
        profit=ledger.realized_pnl / ledger.allocation,
        unrealized_pnl=unrealized,
        unrealized_profit=unrealized / ledger.allocation,
        win=ledger.win,
        lost=ledger.lost,
        win_lost_rate=win_lost_rate(ledger.win, ledger.lost),
        last_trade_time_ms=ledger.last_trade_time_ms,
        locked_margin=ledger.locked_margin,
        fill_count=ledger.fill_count,
    )


@dataclass(frozen=True, slots=True)
class StatusFigures:
    symbol_count: int
    start_capital: float
    current_capital: float
    fill_count: int
    realized_pnl: float
    profit: float
    unrealized_pnl: float
    unrealized_profit: float
    total_capital: float
    win: int
    lost: int
    win_lost_rate: float


def status_figures(start_capital: float, symbols: Sequence[SymbolFigures]) -> StatusFigures:
    realized = unrealized = locked = 0.0
    fills = win = lost = 0
    for figures in symbols:
        realized += figures.realized_pnl
        unrealized += figures.unrealized_pnl
        locked += figures.locked_margin
        fills += figures.fill_count
        win += figures.win
        lost += figures.lost
    return StatusFigures(
        symbol_count=len(symbols),
        start_capital=start_capital,
        current_capital=start_capital + realized - locked,
        fill_count=fills,
        realized_pnl=realized,
        profit=realized / start_capital,
        unrealized_pnl=unrealized,
        unrealized_profit=unrealized / start_capital,
        total_capital=start_capital + realized + unrealized,
        win=win,
        lost=lost,
        win_lost_rate=win_lost_rate(win, lost),
    )
