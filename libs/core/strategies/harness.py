"""Proof that a strategy's vectorized `conditions` is its `evaluate`, for plug-in authors and for
the built-ins alike (SPEC 3.2: a faster method is welcome only if it gives the same answers).

Two checks, both on market updates you choose (a real klines file, random walks, flat stretches):

- `check_conditions_match`: `conditions` on a batch equals `evaluate` on each update's window;
- `check_paths_match`: the whole machine (crosses, orders, fills, risk exits) fed the updates in
  batches of any sizes ends with the same fills, klines and state as fed one update at a time.

Each raises `AssertionError` naming the first update that differs. Pure: no pytest needed, so a
plug-in's own test (pytest, hypothesis, anything) calls them. `docs/strategies.md` shows how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from libs.core.batch import UpdateColumns, no_klines, windows_of
from libs.core.history import KlineHistory
from libs.core.market import MarketUpdate
from libs.core.pnl import Ledger
from libs.core.risk_exits import RiskExits
from libs.core.sim_exchange import Fill, OrderType, SymbolTerms
from libs.core.strategies.contract import Strategy
from libs.core.strategy import AnnotatedKline, Mode, StrategyParams, SymbolStrategy


def reference_conditions(
    strategy: Strategy, updates: Sequence[MarketUpdate]
) -> tuple[list[bool], list[bool]]:
    """(buy, sell) of every update from `evaluate` on its own window, as the one-update path
    builds it (false while fewer than `window` klines exist)."""
    history = KlineHistory(strategy.window)
    buy: list[bool] = []
    sell: list[bool] = []
    last_kline_ms: int | None = None
    for update in updates:
        history.advance(update.kline, new_kline=update.kline.time_ms != last_kline_ms)
        last_kline_ms = update.kline.time_ms
        if not history.full():
            buy.append(False)
            sell.append(False)
            continue
        evaluation = strategy.evaluate(history.window_view())
        both = bool(evaluation.buy) and bool(evaluation.sell)
        buy.append(bool(evaluation.buy) and not both)
        sell.append(bool(evaluation.sell) and not both)
    return buy, sell


def batch_conditions(
    strategy: Strategy, updates: Sequence[MarketUpdate]
) -> tuple[list[bool], list[bool]] | None:
    """(buy, sell) of every update from `conditions` on one batch; None if it offers none."""
    columns = UpdateColumns.of(updates)
    windows, _ = windows_of(no_klines(), None, columns, strategy.window)
    first = windows.first
    decided = strategy.conditions(windows.batch(columns))
    if decided is None:
        return None
    buy = [False] * first + [bool(value) for value in decided[0]]
    sell = [False] * first + [bool(value) for value in decided[1]]
    both = [b and s for b, s in zip(buy, sell, strict=True)]
    return (
        [b and not x for b, x in zip(buy, both, strict=True)],
        [s and not x for s, x in zip(sell, both, strict=True)],
    )


def check_conditions_match(strategy: Strategy, updates: Sequence[MarketUpdate]) -> None:
    """`conditions` equals `evaluate` on every update (nothing to check if it offers none)."""
    decided = batch_conditions(strategy, updates)
    if decided is None:
        return
    expected = reference_conditions(strategy, updates)
    for side, got, want in zip(("buy", "sell"), decided, expected, strict=True):
        if len(got) != len(want):
            raise AssertionError(f"conditions gave {len(got)} {side} values for {len(want)}")
        for index, (one, other) in enumerate(zip(got, want, strict=True)):
            if one != other:
                raise AssertionError(
                    f"update {index} (time {updates[index].time_ms}): conditions says "
                    f"{side}={one}, evaluate says {side}={other}"
                )


@dataclass(frozen=True, slots=True)
class Trading:
    """The shared parameters the machine trades with in `check_paths_match`."""

    mode: Mode = "both"
    order_type: OrderType = "maker"
    exits: RiskExits = field(default_factory=RiskExits)
    leverage: float = 10.0
    isolated: bool = True
    min_size: str = "0.00001"
    order_timeout_ms: int = 60_000


def machine(strategy: Strategy, trading: Trading = Trading()) -> SymbolStrategy:
    """A fresh symbol of a one-symbol bot trading `strategy`."""
    terms = SymbolTerms(
        index=0,
        symbol_count=1,
        min_size=trading.min_size,
        price_decimals=8,
        leverage=trading.leverage,
        isolated=trading.isolated,
        maker_fee_pct=0.02,
        taker_fee_pct=0.1,
        buy_pct=20.0,
        slippage_pct=0.05,
        order_timeout_ms=trading.order_timeout_ms,
        strategy_name=strategy.name,
    )
    params = StrategyParams(strategy, trading.mode, trading.order_type, trading.exits)
    return SymbolStrategy(terms=terms, params=params, ledger=Ledger(allocation=1000.0))


def machine_state(symbol: SymbolStrategy) -> dict[str, Any]:
    """Everything a checkpoint keeps, to compare two machines."""
    return {
        "ledger": symbol.ledger,
        "closed_klines": symbol.closed_klines(),
        "kline": symbol.kline,
        "price": symbol.price,
        "last_time_ms": symbol.last_time_ms,
        "first_time_ms": symbol.first_time_ms,
        "signal": symbol.signal,
        "order": symbol.order,
        "conditions": (symbol.buy_condition, symbol.sell_condition),
        "extreme": symbol.extreme,
    }


def check_paths_match(
    strategy: Strategy,
    updates: Sequence[MarketUpdate],
    batch_sizes: Sequence[int] = (500, 3, 1000, 17),
    trading: Trading = Trading(),
) -> int:
    """The machine fed `updates` one at a time and in batches of `batch_sizes` (cycled) ends
    alike: same fills, same klines, same state. Returns the number of fills, so a test can
    insist that the data traded at all."""
    reference = machine(strategy, trading)
    expected_fills: list[Fill] = []
    expected_klines: dict[int, AnnotatedKline] = {}
    for update in updates:
        step = reference.on_update(update)
        expected_fills += step.fills
        expected_klines[step.kline.kline.time_ms] = step.kline
    batched = machine(strategy, trading)
    fills: list[Fill] = []
    klines: dict[int, AnnotatedKline] = {}
    cuts = [0]
    while cuts[-1] < len(updates):
        cuts.append(min(len(updates), cuts[-1] + batch_sizes[len(cuts) % len(batch_sizes)]))
    for start, stop in pairwise(cuts):
        batch_step = batched.on_batch(updates[start:stop])
        if batch_step.failure is not None:
            raise AssertionError(f"the batch path failed: {batch_step.failure}")
        fills += batch_step.fills
        klines.update((k.kline.time_ms, k) for k in batch_step.klines)
    for number, (got, want) in enumerate(zip(fills, expected_fills, strict=False)):
        if got != want:
            raise AssertionError(f"fill {number} differs:\n batch:  {got}\n update: {want}")
    if len(fills) != len(expected_fills):
        raise AssertionError(f"{len(fills)} fills in batches, {len(expected_fills)} one by one")
    for time_ms, want_kline in expected_klines.items():
        if klines.get(time_ms) != want_kline:
            raise AssertionError(
                f"kline {time_ms} differs:\n batch:  {klines.get(time_ms)}\n update: {want_kline}"
            )
    got_state, want_state = machine_state(batched), machine_state(reference)
    if got_state != want_state:
        raise AssertionError(f"final states differ:\n batch:  {got_state}\n update: {want_state}")
    return len(fills)
