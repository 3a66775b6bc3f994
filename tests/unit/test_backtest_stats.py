"""The backtest's statistics on hand-made series, each value worked out by hand."""

from __future__ import annotations

import math
import random
from typing import Any

from libs.config import BotConfig
from libs.core.pnl import PositionSide, RoundTrip, Side
from libs.core.sim_exchange import Fill
from libs.trading import new_symbol_strategy
from tools.backtest.engine import (
    BacktestResult,
    SymbolRun,
    _max_drawdown_stepwise,
    backtest_stats,
    buy_and_hold_pct,
    equity_curve,
    exposure_pct,
    max_drawdown,
    position_intervals,
)


def bot_of(*symbols: dict[str, Any], start_capital: float = 100.0) -> BotConfig:
    return BotConfig.model_validate(
        {"id": "stats", "start_capital": start_capital, "symbols": list(symbols)}
    )


def fill(
    time_ms: int,
    side: Side,
    position_side: PositionSide,
    round_trip: RoundTrip | None,
    *,
    fee: float = 0.0,
    action: str | None = None,
) -> Fill:
    return Fill(
        order_id=1,
        time_ms=time_ms,
        execution_time_ms=0,
        slippage_pct=0.0,
        side=side,
        size="1",
        fee=fee,
        price=1.0,
        order_type="taker",
        action=action or f"BollingerBands_{side}_{position_side}",
        profit=0.0,
        usdt_profit=0.0,
        position_side=position_side,
        round_trip=round_trip,
    )


def test_max_drawdown_is_the_worst_fall_from_a_running_peak() -> None:
    # peaks 120 then 130: falls of 30 (25 %) and of 65 (50 %)
    drawdown = max_drawdown([100.0, 120.0, 90.0, 130.0, 65.0, 70.0])
    assert drawdown.absolute == 65.0
    assert drawdown.pct == 50.0


def test_max_drawdown_takes_each_measure_at_its_own_worst_fall() -> None:
    # 10 -> 5 is 5 (50 %), 100 -> 80 is 20 (20 %): the largest amount and the largest share differ
    drawdown = max_drawdown([10.0, 5.0, 100.0, 80.0])
    assert (drawdown.absolute, drawdown.pct) == (20.0, 50.0)


def test_a_curve_that_never_falls_has_no_drawdown() -> None:
    assert max_drawdown([1.0, 1.0, 2.0, 3.0]) == max_drawdown([]) == max_drawdown([5.0])
    assert max_drawdown([1.0, 2.0]).absolute == 0.0 and max_drawdown([1.0, 2.0]).pct == 0.0


def test_exposure_is_the_union_of_positions_over_the_span() -> None:
    # [10, 30) and [50, 60) inside [0, 100]: 20 + 10 = 30 %
    assert exposure_pct([(10, 20), (15, 30), (50, 60)], 0, 100) == 30.0
    # clipped to the span at both ends: [0, 5) and [95, 100]
    assert exposure_pct([(-5, 5), (95, 200)], 0, 100) == 10.0
    assert exposure_pct([(0, 10)], 7, 7) == 0.0


def test_positions_run_from_the_opening_fill_to_the_closing_one_or_the_end() -> None:
    fills = [
        fill(10, "buy", "long", None),
        fill(20, "sell", "long", "win"),  # a flip: close the long, open a short at once
        fill(20, "sell", "short", None),
        fill(35, "buy", "short", "lost", action="liquidation_short"),
        fill(40, "buy", "long", None),  # still open when the data ends at 50
    ]
    assert position_intervals(fills, 50) == [(10, 20), (20, 35), (40, 50)]
    assert exposure_pct(position_intervals(fills, 50), 0, 50) == 70.0


def test_buy_and_hold_is_the_price_change_in_percent() -> None:
    assert buy_and_hold_pct(2.0, 3.0) == 50.0
    assert buy_and_hold_pct(4.0, 3.0) == -25.0
    assert buy_and_hold_pct(0.0, 3.0) == 0.0  # a symbol without data


def hand_made_result() -> BacktestResult:
    """Two symbols with hand-written kline series: A at minutes 0, 1, 2; B at minutes 1, 3."""
    bot = bot_of(
        {"product_id": "AAA-USDT", "min_size": "1", "price_decimals": 2},
        {"product_id": "BBB-USDT", "min_size": "1", "price_decimals": 2},
    )
    runs = []
    for index, (times, realized, unrealized) in enumerate(
        [
            ([0, 60_000, 120_000], [0.0, -1.0, 4.0], [0.0, 2.0, 0.0]),
            ([60_000, 180_000], [0.0, -3.0], [-5.0, 0.0]),
        ]
    ):
        run = SymbolRun(bot.symbols[index].product_id, 2, new_symbol_strategy(bot, index))
        run.series.time_ms.extend(times)
        run.series.realized_pnl.extend(realized)
        run.series.unrealized_pnl.extend(unrealized)
        runs.append(run)
    return BacktestResult(bot, tuple(runs), time_zone_offset_min=0)


def test_the_equity_curve_adds_each_symbols_latest_pnl_to_the_start_capital() -> None:
    times, equity = equity_curve(hand_made_result())
    assert times == [0, 60_000, 120_000, 180_000]
    # minute 0: A 0; minute 1: A -1+2, B 0-5; minute 2: A 4+0, B still -5; minute 3: A 4, B -3
    assert equity == [100.0, 96.0, 99.0, 101.0]


def test_a_run_without_data_reports_zeros_not_errors() -> None:
    bot = bot_of({"product_id": "AAA-USDT", "min_size": "1", "price_decimals": 2})
    result = BacktestResult(
        bot, (SymbolRun("AAA-USDT", 2, new_symbol_strategy(bot, 0)),), time_zone_offset_min=0
    )
    stats = backtest_stats(result)
    assert (stats.fill_count, stats.round_trip_count, stats.win_lost_rate) == (0, 0, 0.0)
    assert stats.final_capital == 100.0 and stats.return_pct == 0.0
    assert stats.max_drawdown.absolute == 0.0 and stats.exposure_pct == 0.0
    assert stats.symbols[0].buy_and_hold_pct == 0.0


def test_the_reported_drawdown_is_that_of_the_equity_curve_from_the_start_capital() -> None:
    stats = backtest_stats(hand_made_result())
    assert (stats.max_drawdown.absolute, stats.max_drawdown.pct) == (4.0, 4.0)  # 100 -> 96


def test_the_drawdown_of_a_whole_curve_is_the_step_by_step_one() -> None:
    rng = random.Random(4)
    curves = [[rng.choice([-3.0, 0.0, -0.0, 1.0, 2.5, rng.uniform(-5, 5)]) for _ in range(40)]]
    curves += [[100.0 + rng.gauss(0, 3) for _ in range(500)] for _ in range(20)]
    curves += [[1.0, math.nan, 0.5, 2.0, 1.0], [math.inf, 1.0], [-1.0, -2.0, 3.0, 1.5]]
    for curve in curves:
        assert max_drawdown(curve) == _max_drawdown_stepwise(curve)


def test_the_equity_curve_of_symbols_that_share_no_kline_time_merges_them_all() -> None:
    result = hand_made_result()
    result.symbols[1].series.time_ms[:] = [30_000, 90_000]  # between A's
    times, equity = equity_curve(result)
    assert times == [0, 30_000, 60_000, 90_000, 120_000]
    assert equity == [100.0, 95.0, 96.0, 98.0, 101.0]
