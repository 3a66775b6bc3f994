"""The benchmark's peers make the core's trades: on a small seeded series, the numpy floor and the
backtesting.py strategy of `benches/strategies.py` fill at the same updates, on the same sides,
as Bandwagon's live core (taker fills, mode both, no liquidation), so `make bench` times the same
work. No timing here: benchmarks are never assertions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from benches.data import Floats, Ints, prices_of, random_walk_klines, read_updates, write_klines_csv
from benches.strategies import (
    FillMark,
    Rules,
    backtesting_frame,
    backtesting_marks,
    bandwagon_marks,
    numpy_floor,
    run_backtesting_py,
)
from libs.config import BotConfig
from libs.core.sim_exchange import Fill
from tools.backtest.engine import run_backtest

pytestmark = pytest.mark.timeout(60)

ROWS = 3000
SEED = 4  # its first cross comes a few updates after the first bands
PERIOD = 20


@dataclass(frozen=True)
class Run:
    rules: Rules
    time_ms: Ints
    price: Floats
    fills: tuple[Fill, ...]
    marks: list[FillMark]


def bench_like_bot(leverage: float) -> BotConfig:
    """The benchmark's kind of bot, written out: SPEC section 3 defaults, taker, mode both."""
    return BotConfig.model_validate(
        {
            "id": "bench",
            "start_capital": 100_000,
            "taker_fee": 0.1,
            "strategy": {"order_type": "taker", "mode": "both", "period": PERIOD},
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


@pytest.fixture(scope="module", params=[1.0, 5.0], ids=["leverage-1", "leverage-5"])
def core_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The core on a klines file of the benchmark's generator, read as the backtest reads it."""
    path: Path = tmp_path_factory.mktemp("bench") / "klines.csv"
    write_klines_csv(random_walk_klines(ROWS, SEED), path)
    updates = read_updates(path)
    time_ms, price = prices_of(updates)
    bot = bench_like_bot(request.param)
    result = run_backtest(bot, {"ETH-USDT": updates}, time_zone_offset_min=0, with_bands=False)
    fills = tuple(result.symbols[0].fills)
    return Run(Rules.of(bot), time_ms, price, fills, bandwagon_marks(fills, time_ms))


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
    pytest.importorskip("backtesting", reason="the bench extra is not installed ('.[bench]')")
    stats = run_backtesting_py(backtesting_frame(core_run.time_ms, core_run.price), core_run.rules)
    assert backtesting_marks(stats) == core_run.marks
    # Its entries take the slippage as Bandwagon's taker fills do (its exits do not).
    entries = [fill.price for fill in core_run.fills if fill.round_trip is None]
    assert list(stats["_trades"]["EntryPrice"]) == pytest.approx(entries[: len(stats["_trades"])])
