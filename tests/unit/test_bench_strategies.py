"""The benchmark's peers make the core's trades: on a small seeded series, the numpy floor, the
backtesting.py strategies (Bollinger, RSI, MACD) and vectorbt's sweep of `benches/strategies.py`
fill at the same updates, on the same sides, as Bandwagon's live core (taker fills, mode both,
no liquidation), so `make bench` times the same work. The per-window indicators the RSI and MACD
peers are given are checked by hand and against TA-Lib window by window. No timing here:
benchmarks are never assertions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benches.data import Floats, Ints, prices_of, random_walk_klines, read_updates, write_klines_csv
from benches.strategies import (
    FillMark,
    LevelRules,
    MacdRules,
    RsiRules,
    Rules,
    Terms,
    backtesting_frame,
    backtesting_marks,
    backtesting_price_difference,
    bandwagon_marks,
    indicator_per_window,
    macd_hist_per_window,
    numpy_floor,
    per_window,
    rsi_per_window,
    run_backtesting_py,
    run_vectorbt_sweep,
)
from libs.config import BotConfig
from libs.core.sim_exchange import Fill
from tools.backtest.engine import run_backtest

pytestmark = pytest.mark.timeout(60)

ROWS = 3000
SEED = 4  # its first cross comes a few updates after the first bands
PERIOD = 20
BACKTESTING_PY = "the bench extra is not installed ('.[bench]')"


@dataclass(frozen=True)
class Run:
    rules: Any  # Rules, RsiRules or MacdRules
    time_ms: Ints
    price: Floats
    fills: tuple[Fill, ...]
    marks: list[FillMark]


def bench_like_bot(leverage: float, strategy: dict[str, Any] | None = None) -> BotConfig:
    """The benchmark's kind of bot, written out: SPEC section 3 defaults, taker, mode both;
    `strategy` another one's name and parameters (Bollinger with period `PERIOD` by default)."""
    return BotConfig.model_validate(
        {
            "id": "bench",
            "start_capital": 100_000,
            "taker_fee": 0.1,
            "strategy": {
                "order_type": "taker",
                "mode": "both",
                **(strategy or {"period": PERIOD}),
            },
            "symbols": [
                {
                    "product_id": "ETH-USDT",
                    "min_size": "0.00001",
                    "price_decimals": 2,
                    "leverage": leverage,
                }
            ],
        }
    )


def core_run_of(bot: BotConfig, rules: Any, path: Path) -> Run:
    """The core on a klines file, read as the backtest reads it."""
    updates = read_updates(path)
    time_ms, price = prices_of(updates)
    result = run_backtest(bot, {"ETH-USDT": updates}, time_zone_offset_min=0, with_bands=False)
    fills = tuple(result.symbols[0].fills)
    return Run(rules, time_ms, price, fills, bandwagon_marks(fills, time_ms))


@pytest.fixture(scope="module")
def klines_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A klines file of the benchmark's generator."""
    path: Path = tmp_path_factory.mktemp("bench") / "klines.csv"
    write_klines_csv(random_walk_klines(ROWS, SEED), path)
    return path


@pytest.fixture(scope="module", params=[1.0, 5.0], ids=["leverage-1", "leverage-5"])
def core_run(request: pytest.FixtureRequest, klines_file: Path) -> Run:
    bot = bench_like_bot(request.param)
    return core_run_of(bot, Rules.of(bot), klines_file)


@pytest.fixture(scope="module", params=["RSI", "MACD"])
def level_run(request: pytest.FixtureRequest, klines_file: Path) -> Run:
    """The core trading RSI or MACD with its default parameters."""
    bot = bench_like_bot(1.0, {"name": request.param})
    rules: LevelRules = RsiRules.of(bot) if request.param == "RSI" else MacdRules.of(bot)
    return core_run_of(bot, rules, klines_file)


def test_the_series_flips_often_without_liquidation_or_a_cross_on_the_first_bands(
    core_run: Run,
) -> None:
    """What makes the comparison exact: backtesting.py starts one bar after the first bands,
    and neither peer liquidates."""
    assert len(core_run.fills) > 50
    assert sum(not mark.opens for mark in core_run.marks) > 20
    assert not any(fill.action.startswith("liquidation_") for fill in core_run.fills)
    assert core_run.marks[0].index > PERIOD  # the first order is placed after update PERIOD - 1


def test_the_numpy_floor_fills_where_the_core_fills(core_run: Run) -> None:
    floor = numpy_floor(core_run.price, core_run.rules)
    assert floor.marks() == core_run.marks
    # Its sizes are not floored to min_size: the same PnL, up to that rounding.
    core_pnl = sum(fill.usdt_profit for fill in core_run.fills)
    assert floor.realized_pnl == pytest.approx(core_pnl, rel=1e-4)


def test_the_backtesting_py_strategy_fills_where_the_core_fills(core_run: Run) -> None:
    pytest.importorskip("backtesting", reason=BACKTESTING_PY)
    stats = run_backtesting_py(backtesting_frame(core_run.time_ms, core_run.price), core_run.rules)
    assert backtesting_marks(stats) == core_run.marks
    # Its entries take the slippage as Bandwagon's taker fills do (its exits do not).
    entries = [fill.price for fill in core_run.fills if fill.round_trip is None]
    assert list(stats["_trades"]["EntryPrice"]) == pytest.approx(entries[: len(stats["_trades"])])
    assert (
        backtesting_price_difference(
            stats, core_run.fills, core_run.time_ms, core_run.rules.slippage_pct
        )
        is None
    )


# --- RSI and MACD -------------------------------------------------------------------------------


def test_per_window_gives_each_window_its_value_and_nan_before_the_first_and_where_flat() -> None:
    close = np.array([1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0])
    sums = per_window(close, 3, lambda rows: rows.sum(axis=1))
    # windows: -, -, [1 2 3], [2 3 3], [3 3 3] flat, [3 3 3] flat, [3 3 4]
    np.testing.assert_array_equal(sums, [np.nan, np.nan, 6.0, 8.0, np.nan, np.nan, 10.0])
    assert np.isnan(per_window(close[:2], 3, lambda rows: rows.sum(axis=1))).all()


def test_the_rsi_of_each_window_by_hand() -> None:
    """RSI(2) of [1, 2, 3]: average gain 1, loss 0: 100. Of [2, 3, 2]: gain (1 + 0) / 2 = 0.5,
    loss (0 + 1) / 2 = 0.5: 50. Of [1, 2, 3, 2]: seeded on the first two changes (gain 1, loss
    0), then gain (1 * 1 + 0) / 2 = 0.5, loss (0 * 1 + 1) / 2 = 0.5: 50."""
    close = np.array([1.0, 2.0, 3.0, 2.0])
    three = rsi_per_window(close, RsiRules(period=2, window=3))
    np.testing.assert_array_equal(three, [np.nan, np.nan, 100.0, 50.0])
    four = rsi_per_window(close, RsiRules(period=2, window=4))
    np.testing.assert_array_equal(four, [np.nan, np.nan, np.nan, 50.0])


def test_rsi_and_macd_per_window_are_talib_on_each_window_not_on_the_series() -> None:
    talib = pytest.importorskip("talib")
    close = random_walk_klines(400, SEED).close
    rsi_rules, macd_rules = RsiRules(), MacdRules()
    rsi = rsi_per_window(close, rsi_rules)
    hist = macd_hist_per_window(close, macd_rules)
    for last in range(len(close)):
        rsi_window = close[max(0, last - rsi_rules.window + 1) : last + 1]
        macd_window = close[max(0, last - macd_rules.window + 1) : last + 1]
        if last + 1 < rsi_rules.window:
            assert math.isnan(rsi[last])
        else:
            assert rsi[last] == talib.RSI(rsi_window, timeperiod=rsi_rules.period)[-1]
        if last + 1 < macd_rules.window:
            assert math.isnan(hist[last])
        else:
            assert hist[last] == talib.MACD(macd_window, 12, 26, 9)[2][-1]
    # TA-Lib over the whole series seeds its averages from the series' start: other values.
    assert not np.array_equal(talib.RSI(close, 14)[99:], rsi[99:])
    assert not np.array_equal(talib.MACD(close, 12, 26, 9)[2][199:], hist[199:])


def test_level_rules_are_the_bots(level_run: Run) -> None:
    rules = level_run.rules
    assert isinstance(rules, RsiRules | MacdRules)
    assert (rules.taker_fee_pct, rules.slippage_pct, rules.buy_pct) == (0.1, 0.05, 20.0)
    assert (rules.leverage, rules.start_capital, rules.min_size) == (1.0, 100_000.0, 0.00001)
    if isinstance(rules, RsiRules):
        assert (rules.period, rules.window, rules.oversold, rules.overbought) == (14, 100, 30, 70)
    else:
        assert (rules.fast, rules.slow, rules.signal, rules.window) == (12, 26, 9, 200)
    with pytest.raises(ValueError, match="is not"):
        Rules.of(bench_like_bot(1.0, {"name": "RSI"}))


def test_the_backtesting_py_level_strategies_fill_where_the_core_fills(level_run: Run) -> None:
    pytest.importorskip("backtesting", reason=BACKTESTING_PY)
    assert len(level_run.fills) > 20
    assert not any(fill.action.startswith("liquidation_") for fill in level_run.fills)
    indicator = indicator_per_window(level_run.price, level_run.rules)
    stats = run_backtesting_py(
        backtesting_frame(level_run.time_ms, level_run.price, indicator), level_run.rules
    )
    assert backtesting_marks(stats) == level_run.marks
    slippage = level_run.rules.slippage_pct
    fills, time_ms = level_run.fills, level_run.time_ms
    assert backtesting_price_difference(stats, fills, time_ms, slippage) is None
    # The price check does look: one fill moved by a cent is found.
    moved = (fills[0]._replace(price=fills[0].price + 0.01), *fills[1:])
    assert backtesting_price_difference(stats, moved, time_ms, slippage) is not None


def test_a_level_strategy_needs_its_indicator_column(level_run: Run) -> None:
    pytest.importorskip("backtesting", reason=BACKTESTING_PY)
    with pytest.raises(ValueError, match="Indicator"):
        run_backtesting_py(backtesting_frame(level_run.time_ms, level_run.price), level_run.rules)


# --- vectorbt's sweep ---------------------------------------------------------------------------


@pytest.mark.timeout(300)  # vectorbt's numba compiles on a first run (a minute), cached after
def test_vectorbts_sweep_fills_each_combination_where_the_core_fills(klines_file: Path) -> None:
    pytest.importorskip("vectorbt", reason=BACKTESTING_PY)
    periods, nbdevs = (10, 20), (1.0, 2.5)
    updates = read_updates(klines_file)
    time_ms, price = prices_of(updates)
    base = bench_like_bot(1.0)
    terms = Terms(**Terms.terms_of(base))
    sweep = run_vectorbt_sweep(time_ms, price, terms, periods, nbdevs)
    assert sweep.combinations == ((10, 1.0), (10, 2.5), (20, 1.0), (20, 2.5))
    counts = []
    for number, (period, nbdev) in enumerate(sweep.combinations):
        strategy = {"period": period, "nbdev_up": nbdev, "nbdev_dn": nbdev}
        run = core_run_of(bench_like_bot(1.0, strategy), None, klines_file)
        assert sweep.marks(number) == run.marks, (period, nbdev)
        counts.append(len(run.fills))
    assert sweep.fill_counts() == counts
    assert len(set(counts)) == len(counts)  # the combinations trade differently
    assert len(sweep.total_profit) == len(counts)
