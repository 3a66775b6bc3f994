"""Checkpoints of the trading core as JSON: a symbol strategy's whole state (the strategy worker's
`state` field, `libs.store.keys.strategy_state`) and a symbol's ledger (inside that, in every
strategy event and in accounting's book).

The core keeps plain values and knows nothing of this format. Names, order and nesting are those
Redis already holds, so a checkpoint written before a deploy loads after it: change them only
with a migration. Floats are written as orjson writes doubles, which round-trips every one
exactly, so a restored strategy makes the very trades the uninterrupted one would.
"""

from __future__ import annotations

from collections import deque
from typing import TypedDict

import orjson

from libs.core.bands import Bands
from libs.core.market import Kline
from libs.core.pnl import Ledger, Position, PositionSide, Side
from libs.core.sim_exchange import Order, OrderType, Signal, SymbolTerms
from libs.core.strategy import AnnotatedKline, KlineAnnotation, StrategyParams, SymbolStrategy


class PositionState(TypedDict):
    side: PositionSide
    entry_price: float
    size: str
    margin: float
    opening_fee: float


class LedgerState(TypedDict):
    allocation: float
    realized_pnl: float
    fill_count: int
    win: int
    lost: int
    last_trade_time_ms: int
    position: PositionState | None


class OrderState(TypedDict):
    side: Side
    closes: bool
    opens: bool
    order_type: OrderType
    signal_time_ms: int
    signal_price: float
    previous_signal: Signal | None


class KlineState(TypedDict):
    kline: list[float]
    """[time_ms, open, high, low, close, volume]"""
    counts: list[int]
    """[buy_cross_count, sell_cross_count]"""
    ordered: list[bool]
    """[buy_ordered, sell_ordered]"""
    bands: list[float] | None
    """[middle, upper, lower]"""
    percent_b: float | None
    width_pct: float | None


class StrategyState(TypedDict):
    ledger: LedgerState
    closed_closes: list[float]
    kline: KlineState | None
    price: float
    last_time_ms: int
    first_time_ms: int
    signal: Signal | None
    order: OrderState | None
    buy_condition: bool
    sell_condition: bool


# --- a ledger ------------------------------------------------------------------------------------


def ledger_state(ledger: Ledger) -> LedgerState:
    position = ledger.position
    return {
        "allocation": ledger.allocation,
        "realized_pnl": ledger.realized_pnl,
        "fill_count": ledger.fill_count,
        "win": ledger.win,
        "lost": ledger.lost,
        "last_trade_time_ms": ledger.last_trade_time_ms,
        "position": None
        if position is None
        else {
            "side": position.side,
            "entry_price": position.entry_price,
            "size": position.size,
            "margin": position.margin,
            "opening_fee": position.opening_fee,
        },
    }


def ledger_from_state(state: LedgerState) -> Ledger:
    position = state["position"]
    return Ledger(
        allocation=state["allocation"],
        realized_pnl=state["realized_pnl"],
        fill_count=state["fill_count"],
        win=state["win"],
        lost=state["lost"],
        last_trade_time_ms=state["last_trade_time_ms"],
        position=None if position is None else Position(**position),
    )


# --- a symbol strategy ---------------------------------------------------------------------------


def strategy_state(strategy: SymbolStrategy) -> StrategyState:
    """Everything `strategy_from_state` needs besides the bot's terms and parameters, which the
    bots file gives (and the bot's frozen config pins, SPEC 4.1 rule 6)."""
    kline, order = strategy.kline, strategy.order
    return {
        "ledger": ledger_state(strategy.ledger),
        "closed_closes": list(strategy.closed_closes),
        "kline": None if kline is None else _kline_state(kline),
        "price": strategy.price,
        "last_time_ms": strategy.last_time_ms,
        "first_time_ms": strategy.first_time_ms,
        "signal": strategy.signal,
        "order": None if order is None else _order_state(order),
        "buy_condition": strategy.buy_condition,
        "sell_condition": strategy.sell_condition,
    }


def strategy_from_state(
    terms: SymbolTerms, params: StrategyParams, state: StrategyState
) -> SymbolStrategy:
    kline, order = state["kline"], state["order"]
    return SymbolStrategy(
        terms=terms,
        params=params,
        ledger=ledger_from_state(state["ledger"]),
        closed_closes=deque(state["closed_closes"]),
        kline=None if kline is None else _kline_from_state(kline),
        price=state["price"],
        last_time_ms=state["last_time_ms"],
        first_time_ms=state["first_time_ms"],
        signal=state["signal"],
        order=None if order is None else Order(**order),
        buy_condition=state["buy_condition"],
        sell_condition=state["sell_condition"],
    )


def encode_strategy(strategy: SymbolStrategy) -> bytes:
    """The strategy's checkpoint as Redis holds it."""
    return orjson.dumps(strategy_state(strategy))


def decode_strategy(
    terms: SymbolTerms, params: StrategyParams, text: str | bytes
) -> SymbolStrategy:
    """Inverse of `encode_strategy`."""
    state: StrategyState = orjson.loads(text)
    return strategy_from_state(terms, params, state)


def _order_state(order: Order) -> OrderState:
    return {
        "side": order.side,
        "closes": order.closes,
        "opens": order.opens,
        "order_type": order.order_type,
        "signal_time_ms": order.signal_time_ms,
        "signal_price": order.signal_price,
        "previous_signal": order.previous_signal,
    }


def _kline_state(annotated: AnnotatedKline) -> KlineState:
    kline, annotation = annotated.kline, annotated.annotation
    bands = annotation.bands
    return {
        "kline": [kline.time_ms, kline.open, kline.high, kline.low, kline.close, kline.volume],
        "counts": [annotation.buy_cross_count, annotation.sell_cross_count],
        "ordered": [annotation.buy_ordered, annotation.sell_ordered],
        "bands": None if bands is None else [bands.middle, bands.upper, bands.lower],
        "percent_b": annotation.percent_b,
        "width_pct": annotation.width_pct,
    }


def _kline_from_state(state: KlineState) -> AnnotatedKline:
    time_ms, open_, high, low, close, volume = state["kline"]
    bands = state["bands"]
    return AnnotatedKline(
        kline=Kline(int(time_ms), open_, high, low, close, volume),
        annotation=KlineAnnotation(
            buy_cross_count=state["counts"][0],
            sell_cross_count=state["counts"][1],
            buy_ordered=state["ordered"][0],
            sell_ordered=state["ordered"][1],
            bands=None if bands is None else Bands(*bands),
            percent_b=state["percent_b"],
            width_pct=state["width_pct"],
        ),
    )
