"""The strategy state machine against values worked out by hand from SPEC sections 3 and 3.1.

Scenarios use period 3 and nbdev 1 so every band can be checked on paper; expected money values
are written as the SPEC's formulas, evaluated left to right, next to the literal figures.
"""

from __future__ import annotations

import math
from dataclasses import replace

import orjson
import pytest

from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger
from libs.core.sim_exchange import Fill, OrderType, SymbolTerms
from libs.core.strategies import BollingerBands
from libs.core.strategy import Mode, StrategyParams, SymbolStrategy
from libs.wire.checkpoint import strategy_from_state, strategy_state

MINUTE_MS = 60_000
ENTRY = 92.0 * (1 + 0.05 / 100)  # the taker buy at 92 in the scenarios below: 92.046, in doubles
T0 = 1_681_105_620_000  # a kline open time from the Status API document


def make_strategy(
    *,
    mode: Mode = "both",
    order_type: OrderType = "taker",
    min_size: str = "0.001",
    leverage: float = 10,
    isolated: bool = True,
    allocation: float = 1000.0,
    timeout_ms: int = 60_000,
) -> SymbolStrategy:
    terms = SymbolTerms(
        index=0,
        symbol_count=1,
        min_size=min_size,
        price_decimals=2,
        leverage=leverage,
        isolated=isolated,
        maker_fee_pct=0.02,
        taker_fee_pct=0.1,
        buy_pct=20,
        slippage_pct=0.05,
        order_timeout_ms=timeout_ms,
        strategy_name="BollingerBands",
    )
    params = StrategyParams(BollingerBands(3, 1, 1), mode=mode, order_type=order_type)
    return SymbolStrategy(terms=terms, params=params, ledger=Ledger(allocation=allocation))


def row(minute: int, close: float) -> MarketUpdate:
    """A klines-file row: one update at its close_time, priced at its close (SPEC 3.1 rule 1)."""
    open_time = T0 + minute * MINUTE_MS
    kline = Kline(open_time, close, close, close, close, 1.0)
    return MarketUpdate(time_ms=open_time + MINUTE_MS - 1, price=close, kline=kline)


def feed(strategy: SymbolStrategy, closes: list[float]) -> list[Fill]:
    fills: list[Fill] = []
    for minute, close in enumerate(closes):
        fills += strategy.on_update(row(minute, close)).fills
    return fills


def population_bands(window: list[float], nbdev: float) -> tuple[float, float, float]:
    mean = sum(window) / len(window)
    deviation = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))
    return mean, mean + nbdev * deviation, mean - nbdev * deviation


def test_bands_are_null_until_period_closes_and_zero_width_on_equal_closes() -> None:
    strategy = make_strategy()
    first = strategy.on_update(row(0, 100.0)).kline.annotation
    assert first.values == (None, None, None, None, None)  # middle, upper, lower, pb, pw
    strategy.on_update(row(1, 100.0))
    third = strategy.on_update(row(2, 100.0)).kline.annotation
    assert third.values == (100.0, 100.0, 100.0, None, 0.0)
    assert strategy.order is None and strategy.signal is None


def test_bands_pb_and_pw_follow_the_spec_formulas() -> None:
    strategy = make_strategy()
    annotation = None
    for minute, close in enumerate([100.0, 104.0, 101.0]):
        annotation = strategy.on_update(row(minute, close)).kline.annotation
    assert annotation is not None
    band_middle, band_upper, band_lower, pb, pw = annotation.values
    assert band_middle is not None and band_upper is not None and band_lower is not None
    middle, upper, lower = population_bands([100.0, 104.0, 101.0], 1)
    assert band_middle == pytest.approx(middle, rel=1e-12)
    assert band_upper == pytest.approx(upper, rel=1e-12)
    assert band_lower == pytest.approx(lower, rel=1e-12)
    assert pb == (101.0 - band_lower) / (band_upper - band_lower)
    assert pw == (band_upper - band_lower) / band_middle * 100


def test_a_buy_cross_places_a_taker_order_that_fills_on_the_next_update_with_slippage() -> None:
    strategy = make_strategy()
    feed(strategy, [100.0, 100.0, 100.0])
    step = strategy.on_update(row(3, 90.0))  # window [100, 100, 90]: lower 91.95..., 90 < lower
    assert step.fills == ()
    assert step.kline.annotation.buy_cross_count == 1 and step.kline.annotation.buy_ordered
    assert strategy.signal == "buying"

    step = strategy.on_update(row(4, 92.0))
    (fill,) = step.fills
    fill_price = 92.0 * (1 + 0.05 / 100)
    margin = 1000.0 * 20 / 100
    assert fill.price == fill_price == ENTRY
    assert fill.size == "21.728"  # floor(200 * 10 / 92.046 / 0.001) = 21728 steps
    assert math.floor(margin * 10 / fill_price / 0.001) == 21728
    assert fill.fee == 21.728 * fill_price * 0.1 / 100
    assert fill.usdt_profit == -fill.fee
    assert fill.profit == fill.usdt_profit / (fill_price * 21.728)
    assert fill.slippage_pct == (fill_price - 90.0) / 90.0 * 100
    assert fill.execution_time_ms == MINUTE_MS
    assert (fill.order_id, fill.side, fill.order_type) == (1, "buy", "taker")
    assert (fill.action, fill.position_side) == ("BollingerBands_buy_long", "long")
    assert strategy.signal == "bought"
    assert strategy.ledger.position is not None and strategy.ledger.locked_margin == margin
    assert strategy.ledger.available_capital == 1000.0 + -fill.fee - margin


def test_a_sell_cross_flips_a_long_into_a_short_with_two_fills_at_one_price() -> None:
    strategy = make_strategy()
    opening = feed(strategy, [100.0, 100.0, 100.0, 90.0, 92.0])[0]
    strategy.on_update(row(5, 110.0))  # window [90, 92, 110]: upper 106.3, 110 > upper
    assert strategy.signal == "selling"
    closing, reopening = strategy.on_update(row(6, 108.0)).fills

    exit_price = 108.0 * (1 - 0.05 / 100)
    gross = (exit_price - ENTRY) * 21.728
    closing_fee = 21.728 * exit_price * 0.1 / 100
    assert closing.price == exit_price
    assert closing.usdt_profit == gross - closing_fee
    assert closing.profit == (gross - closing_fee) / (ENTRY * 21.728)
    assert closing.slippage_pct == -((exit_price - 110.0) / 110.0 * 100)
    assert (closing.order_id, closing.action, closing.round_trip) == (
        2,
        "BollingerBands_sell_long",
        "win",
    )

    realized = -opening.fee + closing.usdt_profit
    margin = (1000.0 + realized - 0.0) * 20 / 100
    steps = math.floor(margin * 10 / exit_price / 0.001)
    assert reopening.size == f"{steps * 0.001:.3f}"
    assert (reopening.order_id, reopening.action, reopening.position_side) == (
        3,
        "BollingerBands_sell_short",
        "short",
    )
    assert reopening.execution_time_ms == closing.execution_time_ms == MINUTE_MS
    assert strategy.signal == "sold"
    assert strategy.ledger.win == 1 and strategy.ledger.lost == 0


def test_a_maker_order_fills_at_its_limit_with_the_maker_fee() -> None:
    strategy = make_strategy(order_type="maker", timeout_ms=5 * MINUTE_MS)
    feed(strategy, [100.0, 100.0, 100.0, 90.0])  # limit buy at 90
    assert strategy.on_update(row(4, 91.0)).fills == ()  # 91 > 90: not reached, not timed out
    (fill,) = strategy.on_update(row(5, 89.5)).fills
    assert fill.price == 90.0 and fill.order_type == "maker"
    assert fill.fee == float(fill.size) * 90.0 * 0.02 / 100
    assert fill.slippage_pct == 0.0
    assert fill.execution_time_ms == 2 * MINUTE_MS


def test_a_maker_order_left_open_past_the_timeout_fills_as_a_taker() -> None:
    strategy = make_strategy(order_type="maker", timeout_ms=2 * MINUTE_MS)
    feed(strategy, [100.0, 100.0, 100.0, 90.0])
    assert strategy.on_update(row(4, 95.0)).fills == ()  # 1 minute after the signal
    (fill,) = strategy.on_update(row(5, 96.0)).fills  # 2 minutes: timeout reached
    assert fill.order_type == "taker"
    assert fill.price == 96.0 * (1 + 0.05 / 100)
    assert fill.fee == float(fill.size) * fill.price * 0.1 / 100


def test_an_isolated_long_is_liquidated_when_the_loss_reaches_its_margin() -> None:
    strategy = make_strategy(leverage=100)
    opening = feed(strategy, [100.0, 100.0, 100.0, 90.0, 92.0])[0]
    size = float(opening.size)  # 217.282: margin 200 is gone below ENTRY - 200 / size = 91.13
    assert opening.size == "217.282"
    step = strategy.on_update(row(5, 91.0))  # window [90, 92, 91]: lower 90.18, no cross
    (liquidation,) = step.fills
    gross = (91.0 - ENTRY) * size
    fee = size * 91.0 * 0.1 / 100
    assert liquidation.action == "liquidation_long" and liquidation.side == "sell"
    assert liquidation.price == 91.0 and liquidation.order_type == "taker"
    assert liquidation.execution_time_ms == 0 and liquidation.slippage_pct == 0.0
    assert liquidation.usdt_profit == gross - fee
    assert liquidation.round_trip == "lost"
    assert strategy.signal == "sold" and strategy.order is None
    assert strategy.ledger.position is None
    assert strategy.ledger.realized_pnl == 0.0 + -opening.fee + (gross - fee)
    assert (strategy.ledger.win, strategy.ledger.lost) == (0, 1)


def test_one_update_can_liquidate_and_then_place_the_next_order() -> None:
    strategy = make_strategy()
    feed(strategy, [100.0, 100.0, 100.0, 90.0, 92.0])
    # loss at 82 = (ENTRY - 82) * 21.728 = 218.3 >= margin 200: liquidated first (rule 4), then
    # 82 is below the lower band of [90, 92, 82]: a buy cross opens a new long
    step = strategy.on_update(row(5, 82.0))
    (liquidation,) = step.fills
    assert liquidation.action == "liquidation_long"
    assert liquidation.usdt_profit == (82.0 - ENTRY) * 21.728 - 21.728 * 82.0 * 0.1 / 100
    assert strategy.signal == "buying" and strategy.order is not None
    assert step.kline.annotation.buy_ordered


def test_a_cross_margin_long_survives_a_loss_its_available_capital_covers() -> None:
    strategy = make_strategy(isolated=False)
    feed(strategy, [100.0, 100.0, 100.0, 90.0, 92.0])
    assert strategy.on_update(row(5, 82.0)).fills == ()  # loss 219 < available 799.8 + 200
    # 92.046 - (1000 - fee) / 21.728 ~ 46.03: below that, cross margin is gone too
    (liquidation,) = strategy.on_update(row(6, 45.0)).fills
    assert liquidation.action == "liquidation_long"


def test_mode_long_ignores_a_sell_cross_with_nothing_to_close() -> None:
    strategy = make_strategy(mode="long")
    feed(strategy, [100.0, 100.0, 100.0])
    step = strategy.on_update(row(3, 110.0))
    assert step.kline.annotation.sell_cross_count == 1
    assert not step.kline.annotation.sell_ordered
    assert strategy.order is None and strategy.signal is None


def test_an_opening_order_below_min_size_at_the_signal_price_is_not_placed() -> None:
    strategy = make_strategy(min_size="100")  # 200 * 10 / 90 = 22.2 < 100
    feed(strategy, [100.0, 100.0, 100.0, 90.0])
    assert strategy.order is None and strategy.signal is None


def test_an_order_whose_only_leg_comes_out_below_min_size_ends_without_a_fill() -> None:
    strategy = make_strategy(min_size="20")  # at 90: 22.2 -> 20; at the fill 101: 19.8 -> 0
    feed(strategy, [100.0, 100.0, 100.0, 90.0])
    assert strategy.signal == "buying"
    step = strategy.on_update(row(4, 101.0))
    assert step.fills == ()
    assert strategy.order is None and strategy.signal is None  # back to its previous value
    assert strategy.ledger.fill_count == 0


def test_order_ids_interleave_symbols_as_n_times_s_plus_i_plus_one() -> None:
    terms = make_strategy().terms
    second_of_three = replace(terms, index=1, symbol_count=3)
    assert [second_of_three.order_id(n) for n in range(3)] == [2, 5, 8]


def test_a_checkpointed_strategy_continues_exactly_like_an_uninterrupted_one() -> None:
    closes = [100.0, 100.0, 100.0, 90.0, 92.0, 110.0, 108.0, 95.0, 80.0, 85.0, 120.0, 118.0]
    uninterrupted = make_strategy(order_type="maker", timeout_ms=MINUTE_MS)
    expected = feed(uninterrupted, closes)

    first_half = make_strategy(order_type="maker", timeout_ms=MINUTE_MS)
    fills = [f for m, c in enumerate(closes[:5]) for f in first_half.on_update(row(m, c)).fills]
    state = orjson.loads(orjson.dumps(strategy_state(first_half)))
    resumed = strategy_from_state(first_half.terms, first_half.params, state)
    for minute, close in enumerate(closes[5:], start=5):
        fills += resumed.on_update(row(minute, close)).fills
    assert fills == expected and len(expected) >= 3
    assert strategy_state(resumed) == strategy_state(uninterrupted)
