"""Checkpoints of the trading core as JSON: a symbol strategy's whole state (the strategy worker's
`state` field, `libs.store.keys.strategy_state`) and a symbol's ledger (inside that, in every
strategy event and in accounting's book).

The core keeps plain values and knows nothing of this format. Names, order and nesting are those
Redis already holds, so a checkpoint written before a deploy loads after it: change them only
with a migration. Floats are written as orjson writes doubles, which round-trips every one
exactly, so a restored strategy makes the very trades the uninterrupted one would.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import orjson

from libs.core.history import KlineHistory
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
    exit: NotRequired[str | None]
    """the risk exit that placed it (SPEC 3.3), absent in checkpoints before them"""


class KlineState(TypedDict):
    kline: list[float]
    """[time_ms, open, high, low, close, volume]"""
    counts: list[int]
    """[buy_cross_count, sell_cross_count]"""
    ordered: list[bool]
    """[buy_ordered, sell_ordered]"""
    values: NotRequired[list[float | None]]
    """the strategy's indicator values, in its order"""
    bands: NotRequired[list[float] | None]
    """before strategies (SPEC 3.2), Bollinger's values: [middle, upper, lower], pb and pw"""
    percent_b: NotRequired[float | None]
    width_pct: NotRequired[float | None]


class StrategyState(TypedDict):
    ledger: LedgerState
    closed_klines: NotRequired[list[list[float]]]
    """[time_ms, open, high, low, close, volume] of the closed klines the window needs"""
    closed_closes: NotRequired[list[float]]
    """before strategies (SPEC 3.2), Bollinger's window: the closes alone"""
    kline: KlineState | None
    price: float
    last_time_ms: int
    first_time_ms: int
    signal: Signal | None
    order: OrderState | None
    buy_condition: bool
    sell_condition: bool
    extreme: NotRequired[float | None]
    """the open position's running extreme for a trailing stop (SPEC 3.3 rule 2)"""


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
        "closed_klines": [
            [kline.time_ms, kline.open, kline.high, kline.low, kline.close, kline.volume]
            for kline in strategy.closed_klines()
        ],
        "kline": None if kline is None else _kline_state(kline),
        "price": strategy.price,
        "last_time_ms": strategy.last_time_ms,
        "first_time_ms": strategy.first_time_ms,
        "signal": strategy.signal,
        "order": None if order is None else _order_state(order),
        "buy_condition": strategy.buy_condition,
        "sell_condition": strategy.sell_condition,
        "extreme": strategy.extreme,
    }


def strategy_from_state(
    terms: SymbolTerms, params: StrategyParams, state: StrategyState
) -> SymbolStrategy:
    kline, order = state["kline"], state["order"]
    annotated = None if kline is None else _kline_from_state(kline, params)
    if "closed_klines" in state:
        closed = [
            Kline(int(time_ms), open_, high, low, close, volume)
            for time_ms, open_, high, low, close, volume in state["closed_klines"]
        ]
    else:  # a Bollinger checkpoint from before strategies: the closes are all it read
        closed = [Kline(0, close, close, close, close, 0.0) for close in state["closed_closes"]]
    history = KlineHistory(
        params.strategy.window,
        closed[-(params.strategy.window - 1) :] if params.strategy.window > 1 else (),
        None if annotated is None else annotated.kline,
    )
    return SymbolStrategy(
        terms=terms,
        params=params,
        ledger=ledger_from_state(state["ledger"]),
        history=history,
        kline=annotated,
        price=state["price"],
        last_time_ms=state["last_time_ms"],
        first_time_ms=state["first_time_ms"],
        signal=state["signal"],
        order=None if order is None else Order(**order),
        buy_condition=state["buy_condition"],
        sell_condition=state["sell_condition"],
        extreme=state.get("extreme"),
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
        "exit": order.exit,
    }


def _kline_state(annotated: AnnotatedKline) -> KlineState:
    kline, annotation = annotated.kline, annotated.annotation
    return {
        "kline": [kline.time_ms, kline.open, kline.high, kline.low, kline.close, kline.volume],
        "counts": [annotation.buy_cross_count, annotation.sell_cross_count],
        "ordered": [annotation.buy_ordered, annotation.sell_ordered],
        "values": list(annotation.values),
    }


def _kline_from_state(state: KlineState, params: StrategyParams) -> AnnotatedKline:
    time_ms, open_, high, low, close, volume = state["kline"]
    if "values" in state:
        values = tuple(state["values"])
    else:  # a Bollinger checkpoint from before strategies
        bands = state.get("bands")
        values = (
            params.no_values
            if bands is None
            else (*bands, state.get("percent_b"), state.get("width_pct"))
        )
    return AnnotatedKline(
        kline=Kline(int(time_ms), open_, high, low, close, volume),
        annotation=KlineAnnotation(
            buy_cross_count=state["counts"][0],
            sell_cross_count=state["counts"][1],
            buy_ordered=state["ordered"][0],
            sell_ordered=state["ordered"][1],
            values=values,
        ),
    )
