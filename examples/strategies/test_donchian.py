"""Tests of the Donchian plug-in: what a plug-in author writes (docs/strategies.md, "Test it").

Hand-computed channels on tiny windows first, then the harness of `libs.core.strategies.harness`
on real and random data: `conditions` must be `evaluate` on every window, and the machine fed
updates in batches must trade exactly as fed one at a time. Last, the bot's side: the config
loads the plug-in by `donchian:DonchianBreakout` and refuses a bad `period` naming the field.

This directory has no `__init__.py`, so pytest puts it on `sys.path` and `donchian` imports as the
strategy worker imports it with `PYTHONPATH=examples/strategies`. Run with `make test` or
`.venv/bin/pytest examples/strategies`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from donchian import DonchianBreakout
from pydantic import ValidationError

from libs.config import BotConfig, load_bots
from libs.core.market import Kline, MarketUpdate
from libs.core.risk_exits import RiskExits
from libs.core.strategies.contract import Evaluation, KlineWindow, check_declaration
from libs.core.strategies.harness import (
    Trading,
    check_conditions_match,
    check_paths_match,
    machine,
)
from libs.errors import ConfigError
from libs.exchange.market_files import read_market_file
from libs.trading import load_strategy

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KLINES_FILE = REPO / "tests" / "data" / "klines-1m-3000.csv"
BOTS_FILE = REPO / "deploy" / "bots-strategies.yaml"
MINUTE_MS = 60_000


def donchian(period: int = 20) -> DonchianBreakout:
    return DonchianBreakout(DonchianBreakout.Params(period=period))


def window_of(high: list[float], low: list[float], close: list[float]) -> KlineWindow:
    """A window as the machine hands it to `evaluate`: one numpy column per kline field."""
    count = len(close)
    columns = {
        "time": np.arange(count, dtype=np.int64) * MINUTE_MS,
        "open": np.asarray(close, dtype=np.float64),
        "high": np.asarray(high, dtype=np.float64),
        "low": np.asarray(low, dtype=np.float64),
        "close": np.asarray(close, dtype=np.float64),
        "volume": np.ones(count, dtype=np.float64),
    }
    return KlineWindow(lambda name: columns[name])


def kline_update(time_ms: int, open_: float, high: float, low: float, close: float) -> MarketUpdate:
    """A klines-file row: one update at its close_time, priced at its close (SPEC 3.1 rule 1)."""
    kline = Kline(time_ms, open_, high, low, close, 1.0)
    return MarketUpdate(time_ms + MINUTE_MS - 1, close, kline)


def file_updates() -> list[MarketUpdate]:
    return [update for _, update in read_market_file(KLINES_FILE, MINUTE_MS)]


def random_klines(seed: int, count: int) -> list[MarketUpdate]:
    """Klines rows of a random walk with flat stretches longer than a window (so flat channels,
    and breakouts out of them), gaps in time and sharp jumps."""
    rng = random.Random(seed)
    price, time_ms, flat_left = 50.0, 1_700_000_000_000, 0
    updates = []
    for _ in range(count):
        time_ms += MINUTE_MS * (1 if rng.random() > 0.05 else rng.randint(2, 30))
        if flat_left == 0 and rng.random() < 0.02:
            flat_left = rng.randint(10, 40)
        if flat_left > 0:  # a flat kline: open = high = low = close
            flat_left -= 1
            updates.append(kline_update(time_ms, price, price, price, price))
            continue
        open_ = price
        if rng.random() < 0.02:
            price *= 1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.1)
        else:
            price *= 1 + rng.gauss(0, 0.004)
        high = max(open_, price) * (1 + abs(rng.gauss(0, 0.002)))
        low = min(open_, price) * (1 - abs(rng.gauss(0, 0.002)))
        updates.append(kline_update(time_ms, open_, high, low, price))
    return updates


def random_trades(seed: int, count: int) -> list[MarketUpdate]:
    """Trades: several updates per kline, each moving the forming kline's high, low and close,
    with quiet stretches of one repeated price."""
    rng = random.Random(seed)
    price, time_ms = 2.5, 1_700_000_000_000
    kline: Kline | None = None
    updates = []
    for _ in range(count):
        time_ms += rng.choice((0, 1_000, 5_000, 20_000, 60_000))
        if rng.random() > 0.3:  # else the same price again: flat klines appear
            price = round(price * (1 + rng.gauss(0, 0.003)), 4)
        open_time = time_ms - time_ms % MINUTE_MS
        if kline is None or kline.time_ms != open_time:
            kline = Kline(open_time, price, price, price, price, 0.0)
        high, low = max(kline.high, price), min(kline.low, price)
        kline = Kline(open_time, kline.open, high, low, price, kline.volume + 1)
        updates.append(MarketUpdate(time_ms, price, kline))
    return updates


# -- the strategy on its own ----------------------------------------------------------------------


def test_the_channel_is_the_highs_and_lows_of_the_klines_before_the_forming_one() -> None:
    # period 3: three closed klines, then the forming one, whose own high and low do not count
    window = window_of(high=[10, 12, 11, 99], low=[8, 9, 7, 1], close=[9, 11, 8, 12.5])
    assert donchian(3).evaluate(window) == Evaluation(True, False, (12.0, 7.0))


def test_a_close_below_the_channel_sells() -> None:
    window = window_of(high=[10, 12, 11, 13], low=[8, 9, 7, 6], close=[9, 11, 8, 6.5])
    assert donchian(3).evaluate(window) == Evaluation(False, True, (12.0, 7.0))


@pytest.mark.parametrize("close", [12.0, 7.0, 9.5])
def test_a_close_on_or_inside_the_channel_is_no_breakout(close: float) -> None:
    window = window_of(high=[10, 12, 11, 13], low=[8, 9, 7, 6], close=[9, 11, 8, close])
    assert donchian(3).evaluate(window) == Evaluation(False, False, (12.0, 7.0))


def test_the_window_is_the_period_and_the_forming_kline() -> None:
    assert DonchianBreakout(DonchianBreakout.Params()).window == 21
    assert donchian(2).window == 3
    check_declaration(DonchianBreakout)  # what the loader checks: display and indicator names


@pytest.mark.parametrize("params", [{"period": 1}, {"period": 1001}, {"perod": 20}])
def test_params_refuse_a_period_out_of_range_and_an_unknown_name(params: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        DonchianBreakout.Params.model_validate(params)


def test_a_breakout_from_a_flat_channel_buys_at_the_next_update_as_a_taker() -> None:
    start = 1_700_000_000_000
    updates = [kline_update(start + n * MINUTE_MS, 100, 100, 100, 100) for n in range(3)]
    updates.append(kline_update(start + 3 * MINUTE_MS, 100, 103, 100, 103))  # the breakout
    updates.append(kline_update(start + 4 * MINUTE_MS, 103, 104, 103, 104))  # the fill
    symbol = machine(donchian(3), Trading(order_type="taker"))
    fills = [fill for update in updates for fill in symbol.on_update(update).fills]
    assert [(fill.action, fill.price) for fill in fills] == [
        ("Donchian_buy_long", 104 * (1 + 0.05 / 100))  # SPEC 3.1 rule 8, the harness's slippage
    ]
    assert symbol.kline is not None
    assert symbol.kline.annotation.values == (103.0, 100.0)  # the channel at the last update


# -- the harness: conditions == evaluate, batches == one update at a time ----------------------

TRADINGS = [
    pytest.param(Trading(), id="maker"),
    pytest.param(Trading(order_type="taker"), id="taker"),
    pytest.param(Trading(mode="long", order_type="taker"), id="taker-long"),
    pytest.param(
        Trading(
            order_type="taker",
            exits=RiskExits(stop_loss_pct=1.5, take_profit_pct=3, trailing_stop_pct=1),
        ),
        id="taker-risk-exits",
    ),
    pytest.param(
        Trading(exits=RiskExits(stop_loss_pct=0.5, take_profit_pct=1)), id="maker-risk-exits"
    ),
]


@pytest.mark.parametrize("period", [2, 20, 55])
def test_conditions_equal_evaluate_on_the_real_klines(period: int) -> None:
    check_conditions_match(donchian(period), file_updates())


@pytest.mark.parametrize("trading", TRADINGS)
def test_batches_trade_like_one_update_at_a_time_on_the_real_klines(trading: Trading) -> None:
    assert check_paths_match(donchian(20), file_updates(), trading=trading) > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_conditions_equal_evaluate_on_random_walks_with_flat_stretches(seed: int) -> None:
    check_conditions_match(donchian(10), random_klines(seed, 3000))
    check_conditions_match(donchian(10), random_trades(seed, 4000))


@pytest.mark.parametrize("trading", TRADINGS)
@pytest.mark.parametrize("source", ["klines", "trades"])
def test_batches_trade_like_one_update_at_a_time_on_random_walks(
    source: str, trading: Trading
) -> None:
    if source == "klines":
        updates = random_klines(seed=7, count=3000)
    else:
        updates = random_trades(seed=7, count=4000)
    assert check_paths_match(donchian(10), updates, (500, 3, 1000, 17, 1), trading) > 0


def test_risk_exits_close_donchian_positions_on_the_real_klines() -> None:
    exits = RiskExits(stop_loss_pct=1.5, take_profit_pct=3, trailing_stop_pct=1)
    symbol = machine(donchian(20), Trading(order_type="taker", exits=exits))
    actions = {fill.action for fill in symbol.on_batch(file_updates()).fills}
    assert {"Donchian_buy_long", "Donchian_sell_short"} <= actions
    triggers = {action.split("_", 1)[0] for action in actions}
    assert triggers & {"stopLoss", "trailingStop", "takeProfit"}  # SPEC 3.3 rule 3's actions


# -- the bot: config, loader, backtest ----------------------------------------------------------


def bot_with(strategy: dict[str, object]) -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": "breakout",
            "strategy": strategy,
            "symbols": [{"product_id": "ALT-BTC", "min_size": "0.01", "price_decimals": 8}],
        }
    )


def test_the_loader_builds_the_plugin_from_a_bots_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # what PYTHONPATH=examples/strategies does
    strategy = load_strategy(bot_with({"name": "donchian:DonchianBreakout", "period": 10}))
    assert isinstance(strategy, DonchianBreakout)
    assert (strategy.name, strategy.period, strategy.window) == ("Donchian", 10, 11)


def test_a_period_the_plugin_refuses_is_a_config_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(ConfigError) as raised:
        load_strategy(bot_with({"name": "donchian:DonchianBreakout", "period": 1}))
    assert raised.value.path == "bots[breakout].strategy.period"
    assert str(raised.value).startswith("config error: bots[breakout].strategy.period: 1: ")


def test_the_example_bots_file_loads_every_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    bots = load_bots(BOTS_FILE).bots
    assert [(bot.id, type(load_strategy(bot)).name) for bot in bots] == [
        ("rsi", "RSI"),
        ("macd", "MACD"),
        ("donchian", "Donchian"),
    ]


def test_the_documented_backtest_of_the_plugin_runs() -> None:
    """docs/strategies.md's command, as a user types it (from the repository's root)."""
    command = "backtest --config deploy/bots-strategies.yaml --bot donchian"
    command += " --klines tests/data/klines-1m-3000.csv"
    env = {**os.environ, "PYTHONPATH": "examples/strategies"}
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", *command.split()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Donchian" in result.stdout
