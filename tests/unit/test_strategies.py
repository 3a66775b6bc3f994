"""Strategies (SPEC 3.2): the built-ins' exactness against TA-Lib, their two paths (one update at
a time, a batch at once) against each other, and what the machine does with a plug-in that
fails or answers outside the contract.

The "property" tests draw their inputs from seeded generators (random walks with flat stretches,
one-ulp moves, jumps and trends, as klines rows or as several trades per kline; random strategy
parameters, trading parameters, risk exits and batch sizes), so every failure is reproducible
from its test id.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import talib
from talib._ta_lib import MA_Type

from libs.core.market import Kline, MarketUpdate
from libs.core.risk_exits import RiskExits
from libs.core.sim_exchange import Fill
from libs.core.strategies import MACD, RSI, BollingerBands, Evaluation, Strategy, WindowBatch
from libs.core.strategies import macd as macd_module
from libs.core.strategies import rsi as rsi_module
from libs.core.strategies.contract import (
    Bools,
    Floats,
    KlineWindow,
    StrategyFailed,
    check_declaration,
)
from libs.core.strategies.harness import (
    Trading,
    check_conditions_match,
    check_paths_match,
    machine,
    machine_state,
)
from libs.core.strategy import AnnotatedKline, SymbolStrategy
from libs.exchange.market_files import read_market_file

DATA = Path(__file__).parents[1] / "data"
MINUTE_MS = 60_000
T0 = 1_700_000_000_000


def window_of(closes: list[float] | Floats) -> KlineWindow:
    """A window of klines whose closes are `closes` (open = high = low = close, volume 1)."""
    close = np.asarray(closes, dtype=np.float64)
    columns: dict[str, Any] = {
        "time": T0 + MINUTE_MS * np.arange(len(close), dtype=np.int64),
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": np.ones(len(close)),
    }
    return KlineWindow(lambda name: columns[name])


def walk(seed: int, count: int, start: float, sigma: float = 0.01) -> Floats:
    rng = np.random.default_rng(seed)
    closes = np.asarray(start * np.cumprod(1 + rng.normal(0, sigma, count)), dtype=np.float64)
    return closes


def klines_rows(closes: list[float] | Floats) -> list[MarketUpdate]:
    """One update per kline, at its close_time, priced at its close (SPEC 3.1 rule 1)."""
    updates = []
    for n, close in enumerate(np.asarray(closes, dtype=np.float64).tolist()):
        open_time = T0 + n * MINUTE_MS
        kline = Kline(open_time, close, close, close, close, 1.0)
        updates.append(MarketUpdate(open_time + MINUTE_MS - 1, close, kline))
    return updates


# --- exactness: evaluate is TA-Lib on the window ------------------------------------------------


RSI_PARAMS = [(14, 100), (2, 3), (2, 40), (5, 6), (9, 30)]


@pytest.mark.parametrize(("period", "window"), RSI_PARAMS)
@pytest.mark.parametrize("start", [0.00162, 2.5, 31_000.0])
def test_rsi_is_talib_rsi_of_the_window_and_its_conditions_are_the_thresholds(
    period: int, window: int, start: float
) -> None:
    seen_buy = seen_sell = seen_neither = False
    for seed in range(40):
        sigma = 0.002 if seed % 2 else 0.03
        closes = walk(seed, window, start, sigma)
        if seed % 5 == 0:
            closes = closes * np.linspace(1.0, 1.2 if seed % 10 else 0.8, window)  # a trend
        strategy = RSI(period, window, oversold=30.0, overbought=70.0)
        evaluation = strategy.evaluate(window_of(closes))
        rsi = float(talib.RSI(closes, timeperiod=period)[-1])
        assert evaluation.values == (rsi,)  # the very bits
        assert (evaluation.buy, evaluation.sell) == (rsi < 30.0, rsi > 70.0)
        seen_buy |= evaluation.buy
        seen_sell |= evaluation.sell
        seen_neither |= not evaluation.buy and not evaluation.sell
    assert seen_buy and seen_sell and seen_neither


def test_rsi_thresholds_are_strict() -> None:
    closes = walk(3, 50, 10.0)
    rsi = float(talib.RSI(closes, timeperiod=14)[-1])
    window = window_of(closes)
    above = math.nextafter(rsi, math.inf)
    below = math.nextafter(rsi, 0.0)
    assert RSI(14, 50, oversold=rsi, overbought=99.0).evaluate(window).buy is False  # rsi < rsi
    assert RSI(14, 50, oversold=above, overbought=99.0).evaluate(window).buy is True
    assert RSI(14, 50, oversold=1.0, overbought=rsi).evaluate(window).sell is False
    assert RSI(14, 50, oversold=1.0, overbought=below).evaluate(window).sell is True


MACD_PARAMS = [(12, 26, 9, 200), (12, 26, 9, 34), (2, 3, 1, 3), (2, 3, 2, 4), (3, 5, 2, 20)]


@pytest.mark.parametrize(("fast", "slow", "signal", "window"), MACD_PARAMS)
@pytest.mark.parametrize("start", [0.00162, 2.5, 31_000.0])
def test_macd_is_talib_macd_of_the_window_and_its_conditions_are_the_histogram_s_sign(
    fast: int, slow: int, signal: int, window: int, start: float
) -> None:
    signs = set()
    for seed in range(40):
        closes = walk(seed, window, start, 0.002 if seed % 2 else 0.03)
        evaluation = MACD(fast, slow, signal, window).evaluate(window_of(closes))
        macd, macdsignal, macdhist = talib.MACD(
            closes, fastperiod=fast, slowperiod=slow, signalperiod=signal
        )
        expected = (float(macd[-1]), float(macdsignal[-1]), float(macdhist[-1]))
        assert evaluation.values == expected  # the very bits
        assert (evaluation.buy, evaluation.sell) == (expected[2] > 0, expected[2] < 0)
        signs.add((evaluation.buy, evaluation.sell))
    if signal == 1:
        # a signal line of period 1 is the MACD line itself: the histogram is always 0, so
        # this MACD never has a condition
        assert signs == {(False, False)}
    else:
        assert signs == {(True, False), (False, True)}


def test_a_flat_window_has_no_condition_and_keeps_talib_s_values() -> None:
    # RSI: TA-Lib gives 0 for a flat window, below any oversold: still no buy (SPEC 3.2 rule 5)
    for value in (0.1, 7.25, 0.00162008, 123.456):
        for period, window in ((14, 100), (2, 3)):
            flat = np.full(window, value)
            evaluation = RSI(period, window).evaluate(window_of(flat))
            rsi = float(talib.RSI(flat, timeperiod=period)[-1])
            assert rsi == 0.0 and evaluation == Evaluation(False, False, (rsi,))
    # MACD: on some flat windows TA-Lib's histogram is not exactly 0 (its averages round); the
    # values stay TA-Lib's, the condition is none
    for (fast, slow, signal, window), value in (
        ((3, 5, 2, 10), 811.3),
        ((2, 3, 2, 4), 505.4797),
        ((12, 26, 9, 200), 0.1),
        ((2, 3, 1, 3), 7.25),
    ):
        flat = np.full(window, value)
        expected = tuple(
            float(series[-1])
            for series in talib.MACD(flat, fastperiod=fast, slowperiod=slow, signalperiod=signal)
        )
        evaluation = MACD(fast, slow, signal, window).evaluate(window_of(flat))
        assert evaluation == Evaluation(False, False, expected)
        if value in (811.3, 505.4797):
            assert expected[2] > 0  # TA-Lib alone would call it a buy
    # BollingerBands: 3.1 rule 2's values, the close itself, not TA-Lib's rounding of it
    flat = np.full(20, 0.1)
    assert float(talib.BBANDS(flat, 20, 2.0, 2.0, MA_Type.SMA)[0][-1]) == 0.10000000000000002
    evaluation = BollingerBands(20, 2.0, 2.0).evaluate(window_of(flat))
    assert evaluation == Evaluation(False, False, (0.1, 0.1, 0.1, None, 0.0))


FLAT_CASES = [
    pytest.param(RSI(2, 3), 7.25, (0.0,), id="rsi"),
    pytest.param(MACD(3, 5, 2, 10), 811.3, None, id="macd"),
    pytest.param(BollingerBands(3, 1.0, 1.0), 0.1, (0.1, 0.1, 0.1, None, 0.0), id="bollinger"),
]


@pytest.mark.parametrize(("strategy", "value", "values"), FLAT_CASES)
def test_flat_klines_place_nothing_on_either_path(
    strategy: Strategy, value: float, values: tuple[float | None, ...] | None
) -> None:
    updates = klines_rows([value] * 40)
    for use_batch in (False, True):
        symbol = machine(strategy)
        symbol.small_batch = 0  # type: ignore[misc]  # the vector path
        if use_batch:
            step = symbol.on_batch(updates)
            klines, fills = list(step.klines), list(step.fills)
        else:
            steps = [symbol.on_update(update) for update in updates]
            klines, fills = [s.kline for s in steps], [f for s in steps for f in s.fills]
        assert fills == [] and symbol.order is None
        last = klines[-1].annotation
        assert (last.buy_cross_count, last.sell_cross_count) == (0, 0)
        assert all(
            k.annotation.buy_cross_count == k.annotation.sell_cross_count == 0 for k in klines
        )
        if values is not None:
            assert last.values == values


BUILT_INS = [
    pytest.param(BollingerBands(20, 2.0, 2.0), id="bollinger-20"),
    pytest.param(BollingerBands(3, 1.0, 1.0), id="bollinger-3"),
    pytest.param(RSI(), id="rsi-default"),
    pytest.param(RSI(2, 3), id="rsi-2-3"),
    pytest.param(MACD(), id="macd-default"),
    pytest.param(MACD(2, 3, 1, 3), id="macd-2-3-1"),
]


@pytest.mark.parametrize("strategy", BUILT_INS)
def test_fewer_than_window_klines_give_no_condition_and_no_values(strategy: Strategy) -> None:
    # falling closes: every built-in would have a condition on the first full window
    closes = [1000.0 - n * (1 + n % 3) for n in range(strategy.window + 2)]
    updates = klines_rows(closes)
    nones = (None,) * len(strategy.indicators)
    for use_batch in (False, True):
        symbol = machine(strategy)
        symbol.small_batch = 0  # type: ignore[misc]
        before = updates[: strategy.window - 1]
        if use_batch and before:
            klines = list(symbol.on_batch(before).klines)
        else:
            klines = [symbol.on_update(update).kline for update in before]
        for kline in klines:
            assert kline.annotation.values == nones
            assert (kline.annotation.buy_cross_count, kline.annotation.sell_cross_count) == (0, 0)
        assert (symbol.buy_condition, symbol.sell_condition) == (False, False)
        assert symbol.order is None
        # the window-th kline has values (and may already be a cross, SPEC 3.1 rule 2)
        first = symbol.on_update(updates[strategy.window - 1]).kline.annotation
        expected = strategy.evaluate(window_of(closes[: strategy.window]))
        assert first.values == expected.values
        assert None not in first.values[:3]
        assert first.buy_cross_count == int(expected.buy)
        assert first.sell_cross_count == int(expected.sell)


def test_the_first_full_window_may_already_be_a_cross() -> None:
    symbol = machine(RSI(2, 3), Trading(order_type="taker"))
    symbol.on_update(klines_rows([3.0, 2.0, 1.0])[0])
    symbol.on_update(klines_rows([3.0, 2.0, 1.0])[1])
    step = symbol.on_update(klines_rows([3.0, 2.0, 1.0])[2])  # RSI of [3, 2, 1] = 0 < 30
    assert step.kline.annotation.values == (float(talib.RSI(np.array([3.0, 2.0, 1.0]), 2)[-1]),)
    assert step.kline.annotation.buy_cross_count == 1 and step.kline.annotation.buy_ordered
    assert symbol.signal == "buying"


def talib_values(strategy: RSI | MACD, closes: Floats) -> tuple[float, ...]:
    if isinstance(strategy, RSI):
        return (float(talib.RSI(closes, timeperiod=strategy.period)[-1]),)
    return tuple(
        float(series[-1])
        for series in talib.MACD(
            closes,
            fastperiod=strategy.fast,
            slowperiod=strategy.slow,
            signalperiod=strategy.signal,
        )
    )


@pytest.mark.parametrize("strategy", [RSI(), MACD(), MACD(3, 5, 2, 20), RSI(2, 3)])
def test_batch_kline_values_are_talib_on_each_window_of_real_klines(strategy: RSI | MACD) -> None:
    updates = real_updates("klines-1m-3000.csv")
    symbol = machine(strategy)
    step = symbol.on_batch(updates)
    closes = np.array([update.price for update in updates])
    assert len(step.klines) == len(updates)
    for index, kline in enumerate(step.klines):
        if index < strategy.window - 1:
            assert kline.annotation.values == (None,) * len(strategy.indicators)
            continue
        window = closes[index - strategy.window + 1 : index + 1]
        assert kline.annotation.values == talib_values(strategy, window)


# --- sources of updates for the property tests --------------------------------------------------


def real_updates(name: str) -> list[MarketUpdate]:
    return [update for _, update in read_market_file(DATA / name, MINUTE_MS)]


def flat_and_ulp_klines(seed: int, count: int) -> list[MarketUpdate]:
    """Klines whose closes stay equal for long stretches or move by one ulp, with returns to
    the flat value and small real moves."""
    rng = random.Random(seed)
    price, updates = 7.25, []
    for n in range(count):
        roll = rng.random()
        if roll < 0.55:
            pass
        elif roll < 0.8:
            price = math.nextafter(price, rng.choice((0.0, math.inf)))
        elif roll < 0.9:
            price = round(price * (1 + rng.gauss(0, 0.01)), 2)
        else:
            price = 7.25
        open_time = T0 + n * MINUTE_MS
        kline = Kline(open_time, price, price, price, price, 1.0)
        updates.append(MarketUpdate(open_time + MINUTE_MS - 1, price, kline))
    return updates


def random_walk_klines(seed: int, count: int, start: float) -> list[MarketUpdate]:
    """Klines rows with flat stretches, gaps in time, one-ulp moves and sharp moves."""
    rng = random.Random(seed)
    price, time_ms, updates = start, T0, []
    for _ in range(count):
        time_ms += MINUTE_MS * (1 if rng.random() > 0.05 else rng.randint(2, 30))
        roll = rng.random()
        if roll < 0.1:
            pass
        elif roll < 0.15:
            price = math.nextafter(price, rng.choice((0.0, math.inf)))
        elif roll < 0.17:
            price *= 1 + rng.choice((-1, 1)) * rng.uniform(0.05, 0.2)
        else:
            price *= 1 + rng.gauss(0, 0.004)
        kline = Kline(time_ms, price, price * 1.001, price * 0.999, price, rng.uniform(0, 5))
        updates.append(MarketUpdate(time_ms + MINUTE_MS - 1, price, kline))
    return updates


def random_trades(
    seed: int, count: int, start: float = 2.5, gaps: tuple[int, ...] = (0, 0, 1_000, 5_000, 20_000)
) -> list[MarketUpdate]:
    """Tick updates: several per kline, equal times, forming klines, flat runs."""
    rng = random.Random(seed)
    price, time_ms, updates = start, T0, []
    kline: Kline | None = None
    for _ in range(count):
        time_ms += rng.choice(gaps)
        if rng.random() < 0.8:
            price = round(price * (1 + rng.gauss(0, 0.002)), 4)
        open_time = time_ms - time_ms % MINUTE_MS
        if kline is None or kline.time_ms != open_time:
            kline = Kline(open_time, price, price, price, price, 0.0)
        kline = Kline(
            open_time,
            kline.open,
            max(kline.high, price),
            min(kline.low, price),
            price,
            kline.volume + 1.0,
        )
        updates.append(MarketUpdate(time_ms, price, kline))
    return updates


SOURCES: dict[str, Callable[[], list[MarketUpdate]]] = {
    "real-klines": lambda: real_updates("klines-1m-3000.csv"),
    "real-trades": lambda: real_updates("trades-2000.csv"),
    "flat-ulp": lambda: flat_and_ulp_klines(seed=5, count=1500),
    "walk": lambda: random_walk_klines(seed=6, count=2000, start=40.0),
    "trades": lambda: random_trades(seed=7, count=3000),
}

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "bollinger-20": lambda: BollingerBands(20, 2.0, 2.0),
    "bollinger-3": lambda: BollingerBands(3, 1.0, 1.0),
    "rsi-default": lambda: RSI(),
    "rsi-2-3": lambda: RSI(2, 3),
    "rsi-5-12": lambda: RSI(5, 12, oversold=40.0, overbought=60.0),
    "macd-default": lambda: MACD(),
    "macd-2-3-1": lambda: MACD(2, 3, 1, 3),
    "macd-2-3-2": lambda: MACD(2, 3, 2, 4),
    "macd-3-5-2": lambda: MACD(3, 5, 2, 30),
}

TRADINGS = [
    (Trading(), (500, 3, 1000, 17)),
    (Trading(order_type="taker", exits=RiskExits(stop_loss_pct=1.5)), (1, 64, 7)),
    (Trading(mode="long", exits=RiskExits(take_profit_pct=0.5)), (37, 300)),
    (Trading(order_type="taker", exits=RiskExits(trailing_stop_pct=0.3)), (5000,)),
    (
        Trading(
            mode="short",
            exits=RiskExits(stop_loss_pct=2, take_profit_pct=1, trailing_stop_pct=0.5),
            leverage=50,
            order_timeout_ms=0,
        ),
        (250, 2, 90),
    ),
]


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_conditions_are_evaluate_and_batches_trade_like_single_updates(
    name: str, source: str
) -> None:
    updates = SOURCES[source]()
    strategy = STRATEGIES[name]()
    check_conditions_match(strategy, updates)
    fills = [
        check_paths_match(strategy, updates, batch_sizes=sizes, trading=trading)
        for trading, sizes in TRADINGS
    ]
    if name == "macd-2-3-1":
        assert fills == [0] * len(TRADINGS)  # its histogram is always 0 (see above)
    else:
        assert fills[0] > 0 and fills[1] > 0 and fills[3] > 0, fills


@pytest.mark.parametrize("source", ["flat-ulp", "walk", "trades"])
@pytest.mark.parametrize("name", ["rsi-default", "rsi-2-3", "macd-default", "macd-3-5-2"])
def test_the_vector_path_in_tiny_batches_and_blocks_trades_like_single_updates(
    name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SymbolStrategy, "small_batch", 0)  # vectors even for one update
    monkeypatch.setattr(rsi_module, "BLOCK_ROWS", 7)
    monkeypatch.setattr(macd_module, "BLOCK_ROWS", 5)
    if source == "trades":  # two or three trades a kline: enough klines for MACD's 200
        updates = random_trades(seed=8, count=1200, gaps=(0, 20_000, 40_000, 60_000))
    else:
        updates = SOURCES[source]()[:1200]
    strategy = STRATEGIES[name]()
    check_conditions_match(strategy, updates)
    trading = Trading(order_type="taker", exits=RiskExits(stop_loss_pct=0.5))
    assert check_paths_match(strategy, updates, batch_sizes=(1, 2, 3, 50), trading=trading) > 0


def random_updates(rng: random.Random, count: int) -> list[MarketUpdate]:
    """Regimes of random length: walks, flat runs, one-ulp steps, jumps and trends; as klines
    rows (with gaps in time) or as several trades per kline."""
    trades = rng.random() < 0.5
    price = rng.choice((0.0016, 2.5, 7.25, 100.0, 31_000.0))
    time_ms, updates, regime, left = T0, [], "walk", 0
    kline: Kline | None = None
    for _ in range(count):
        if left == 0:
            regime = rng.choice(("walk", "flat", "ulp", "jump", "up", "down"))
            left = rng.randint(1, 40)
        left -= 1
        if regime == "walk":
            price *= 1 + rng.gauss(0, 0.004)
        elif regime == "ulp":
            price = math.nextafter(price, rng.choice((0.0, math.inf)))
        elif regime == "jump":
            price *= 1 + rng.choice((-1, 1)) * rng.uniform(0.02, 0.12)
        elif regime == "up":
            price *= 1.002
        elif regime == "down":
            price *= 0.998
        if trades:
            time_ms += rng.choice((0, 0, 1_000, 5_000, 20_000, 60_000))
            open_time = time_ms - time_ms % MINUTE_MS
            if kline is None or kline.time_ms != open_time:
                kline = Kline(open_time, price, price, price, price, 0.0)
            kline = Kline(
                open_time,
                kline.open,
                max(kline.high, price),
                min(kline.low, price),
                price,
                kline.volume + 1.0,
            )
            updates.append(MarketUpdate(time_ms, price, kline))
        else:
            time_ms += MINUTE_MS * (1 if rng.random() > 0.05 else rng.randint(2, 30))
            kline = Kline(time_ms, price, price, price, price, rng.uniform(0, 5))
            updates.append(MarketUpdate(time_ms + MINUTE_MS - 1, price, kline))
    return updates


def random_strategy(rng: random.Random) -> Strategy:
    kind = rng.choice(("bollinger", "rsi", "macd"))
    if kind == "bollinger":
        return BollingerBands(rng.randint(2, 25), rng.choice((0.5, 1.0, 2.0)), rng.choice((1, 2.5)))
    if kind == "rsi":
        period = rng.randint(2, 20)
        return RSI(
            period,
            period + rng.randint(1, 40),
            oversold=rng.uniform(10, 45),
            overbought=rng.uniform(55, 90),
        )
    fast = rng.randint(2, 10)
    slow = rng.randint(fast + 1, 20)
    signal = rng.randint(1, 9)
    return MACD(fast, slow, signal, slow + signal - 1 + rng.randint(0, 30))


def random_exit(rng: random.Random) -> float | None:
    return rng.choice((None, None, rng.uniform(0.05, 3.0)))


def random_trading(rng: random.Random) -> Trading:
    return Trading(
        mode=rng.choice(("both", "long", "short")),
        order_type=rng.choice(("maker", "taker")),
        exits=RiskExits(random_exit(rng), random_exit(rng), random_exit(rng)),
        leverage=rng.choice((1.0, 10.0, 60.0)),
        isolated=rng.random() < 0.7,
        min_size=rng.choice(("0.00001", "0.001")),
        order_timeout_ms=rng.choice((0, MINUTE_MS, 10 * MINUTE_MS)),
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_strategies_and_trading_agree_on_both_paths(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property: whatever the data, parameters, exits and batch sizes, `conditions` is
    `evaluate` and batches trade like single updates."""
    rng = random.Random(seed)
    if rng.random() < 0.3:
        monkeypatch.setattr(SymbolStrategy, "small_batch", 0)
    if rng.random() < 0.3:
        monkeypatch.setattr(rsi_module, "BLOCK_ROWS", rng.randint(1, 40))
        monkeypatch.setattr(macd_module, "BLOCK_ROWS", rng.randint(1, 40))
    updates = random_updates(rng, rng.randint(200, 900))
    strategy = random_strategy(rng)
    check_conditions_match(strategy, updates)
    for _ in range(3):
        sizes = [rng.choice((1, 2, 5, 17, 64, 333, 5000)) for _ in range(rng.randint(1, 4))]
        check_paths_match(strategy, updates, batch_sizes=sizes, trading=random_trading(rng))


# --- a plug-in that fails (SPEC 3.2 rule 9) ------------------------------------------------------

BAD = 13.0  # the close at which the faulty plug-in misbehaves

FAULTS: dict[str, Callable[[bool, bool, float], Any]] = {
    "raises": lambda buy, sell, last: 1 / 0,
    "int-condition": lambda buy, sell, last: (1, False, (last,)),
    "string-condition": lambda buy, sell, last: (buy, "no", (last,)),
    "none-condition": lambda buy, sell, last: (None, sell, (last,)),
    "nan-value": lambda buy, sell, last: (buy, sell, (math.nan,)),
    "inf-value": lambda buy, sell, last: (buy, sell, (-math.inf,)),
    "string-value": lambda buy, sell, last: (buy, sell, ("13",)),
    "bool-value": lambda buy, sell, last: (buy, sell, (True,)),
    "no-values": lambda buy, sell, last: (buy, sell, ()),
    "two-values": lambda buy, sell, last: (buy, sell, (last, last)),
    "not-a-tuple": lambda buy, sell, last: None,
    "two-items": lambda buy, sell, last: (buy, sell),
}


class Faulty(Strategy):
    """Buy when the close is below the window's first, sell when above; at a close of `BAD` it
    misbehaves as `fault` says. `vectorized`: "none" (no `conditions`), "faithful" (raises on a
    batch holding a window `evaluate` would fail on, as the contract asks), "raises" (always)."""

    name: ClassVar[str] = "Faulty"
    indicators: ClassVar[tuple[str, ...]] = ("last",)

    def __init__(self, fault: str | None, vectorized: str = "none") -> None:
        self.window = 3
        self.fault, self.vectorized = fault, vectorized

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        closes = klines.close
        last = float(closes[-1])
        buy, sell = last < float(closes[0]), last > float(closes[0])
        if last == BAD and self.fault is not None:
            answer: Evaluation = FAULTS[self.fault](buy, sell, last)
            return answer
        return Evaluation(buy, sell, (last,))

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools] | None:
        if self.vectorized == "none":
            return None
        if self.vectorized == "raises":
            raise RuntimeError("no vectors today")
        closes = windows.column("close")
        if self.fault is not None and bool((closes[:, -1] == BAD).any()):
            raise ValueError("a window this plug-in fails on")
        buy: Bools = closes[:, -1] < closes[:, 0]
        sell: Bools = closes[:, -1] > closes[:, 0]
        return buy, sell


def faulty_updates(*, trades: bool, bad_at: int, count: int = 60) -> list[MarketUpdate]:
    """A random walk around 15 (never exactly BAD) whose update `bad_at` is priced BAD;
    `trades`: three updates per kline."""
    rng = random.Random(23)
    price, updates = 15.0, []
    kline: Kline | None = None
    for n in range(count):
        price = round(price * (1 + rng.gauss(0, 0.02)), 4)
        if price == BAD:
            price += 0.0001
        p = BAD if n == bad_at else price
        if trades:
            time_ms = T0 + n * 20_000
            open_time = time_ms - time_ms % MINUTE_MS
            if kline is None or kline.time_ms != open_time:
                kline = Kline(open_time, p, p, p, p, 0.0)
            kline = Kline(open_time, kline.open, max(kline.high, p), min(kline.low, p), p, 1.0)
            updates.append(MarketUpdate(time_ms, p, kline))
        else:
            open_time = T0 + n * MINUTE_MS
            updates.append(
                MarketUpdate(open_time + MINUTE_MS - 1, p, Kline(open_time, p, p, p, p, 1.0))
            )
    return updates


def feed(symbol: SymbolStrategy, updates: list[MarketUpdate]) -> tuple[list[Fill], list[Any]]:
    fills: list[Fill] = []
    klines: dict[int, AnnotatedKline] = {}
    for update in updates:
        step = symbol.on_update(update)
        fills += step.fills
        klines[step.kline.kline.time_ms] = step.kline
    return fills, list(klines.values())


BAD_AT = 40
TRADING = Trading(order_type="taker", exits=RiskExits(stop_loss_pct=2))


def fault_cases() -> Iterator[Any]:
    for fault in FAULTS:
        for vectorized in ("none", "faithful", "raises"):
            for trades in (False, True):
                source = "trades" if trades else "klines"
                yield pytest.param(fault, vectorized, trades, id=f"{fault}-{vectorized}-{source}")


@pytest.mark.parametrize(("fault", "vectorized", "trades"), list(fault_cases()))
def test_a_failing_plug_in_stops_a_batch_before_the_update_it_fails_on(
    fault: str, vectorized: str, trades: bool
) -> None:
    updates = faulty_updates(trades=trades, bad_at=BAD_AT)
    reference = machine(Faulty(fault, vectorized), TRADING)
    fills_before, klines_before = feed(reference, updates[:BAD_AT])
    assert fills_before, "the updates before the failure trade"

    for first_batch in (0, 25):  # the failing update in the first batch, or in a later one
        batched = machine(Faulty(fault, vectorized), TRADING)
        fills: list[Fill] = []
        klines: dict[int, AnnotatedKline] = {}
        if first_batch:
            step = batched.on_batch(updates[:first_batch])
            assert step.failure is None
            fills += step.fills
            klines.update((k.kline.time_ms, k) for k in step.klines)
        step = batched.on_batch(updates[first_batch:])
        failure = step.failure
        assert failure is not None
        assert failure.index == BAD_AT - first_batch
        assert failure.time_ms == updates[BAD_AT].time_ms
        assert failure.reason
        fills += step.fills
        klines.update((k.kline.time_ms, k) for k in step.klines)
        assert fills == fills_before  # nothing of the failing update or any later one
        assert list(klines.values()) == klines_before
        assert machine_state(batched) == machine_state(reference)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("trades", [False, True], ids=["klines", "trades"])
def test_a_failing_plug_in_raises_from_on_update_and_changes_nothing(
    fault: str, trades: bool
) -> None:
    updates = faulty_updates(trades=trades, bad_at=BAD_AT)
    strategy = Faulty(fault)
    symbol = machine(strategy, TRADING)
    feed(symbol, updates[:BAD_AT])
    before = machine_state(symbol)
    for _ in range(2):  # and again: the same update fails the same way
        with pytest.raises(StrategyFailed) as failed:
            symbol.on_update(updates[BAD_AT])
        assert failed.value.time_ms == updates[BAD_AT].time_ms
        assert machine_state(symbol) == before
    if fault == "raises":
        assert "ZeroDivisionError" in failed.value.reason

    # fixed, it resumes from that very update: as if it had never failed (SPEC 3.2 rule 9)
    strategy.fault = None
    resumed, _ = feed(symbol, updates[BAD_AT:])
    never_failed = machine(Faulty(None), TRADING)
    fills, _ = feed(never_failed, updates)
    assert [*feed(machine(Faulty(None), TRADING), updates[:BAD_AT])[0], *resumed] == fills
    assert machine_state(symbol) == machine_state(never_failed)


@pytest.mark.parametrize("vectorized", ["none", "faithful", "raises"])
def test_a_failed_batch_resumes_after_a_fix_as_if_it_had_never_failed(vectorized: str) -> None:
    updates = faulty_updates(trades=True, bad_at=BAD_AT)
    strategy = Faulty("nan-value", vectorized)
    batched = machine(strategy, TRADING)
    first = batched.on_batch(updates)
    assert first.failure is not None and first.failure.index == BAD_AT
    strategy.fault = None
    second = batched.on_batch(updates[BAD_AT:])
    assert second.failure is None
    never_failed = machine(Faulty(None), TRADING)
    fills, _ = feed(never_failed, updates)
    assert [*first.fills, *second.fills] == fills
    assert machine_state(batched) == machine_state(never_failed)


def test_a_plug_in_is_not_consulted_before_its_window_is_full() -> None:
    updates = faulty_updates(trades=False, bad_at=1)  # the 2nd kline of a 3-kline window
    symbol = machine(Faulty("raises"), TRADING)
    assert symbol.on_update(updates[0]).kline.annotation.values == (None,)
    assert symbol.on_update(updates[1]).kline.annotation.values == (None,)
    assert symbol.on_batch(updates[2:30]).failure is None


@pytest.mark.parametrize("trades", [False, True], ids=["klines", "trades"])
def test_a_vectorized_conditions_that_raises_falls_back_to_evaluate(trades: bool) -> None:
    """`conditions` raising is not itself a failure: the machine finds the failing update one
    by one, and there is none here."""
    updates = faulty_updates(trades=trades, bad_at=-1)
    reference = machine(Faulty(None), TRADING)
    fills, klines = feed(reference, updates)
    assert fills
    for sizes in ((60,), (17, 43), (1, 20, 39)):
        batched = machine(Faulty(None, "raises"), TRADING)
        got_fills: list[Fill] = []
        got_klines: dict[int, AnnotatedKline] = {}
        start = 0
        for size in sizes:
            step = batched.on_batch(updates[start : start + size])
            start += size
            assert step.failure is None
            got_fills += step.fills
            got_klines.update((k.kline.time_ms, k) for k in step.klines)
        assert got_fills == fills
        assert list(got_klines.values()) == klines
        assert machine_state(batched) == machine_state(reference)


class BadShape(Strategy):
    """Conditions of the wrong length or type: the batch falls back to `evaluate`."""

    name: ClassVar[str] = "BadShape"
    indicators: ClassVar[tuple[str, ...]] = ()

    def __init__(self, answer: str) -> None:
        self.window = 2
        self.answer = answer

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        closes = klines.close
        return Evaluation(bool(closes[-1] < closes[0]), bool(closes[-1] > closes[0]), ())

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools] | None:
        closes = windows.column("close")
        buy, sell = closes[:, -1] < closes[:, 0], closes[:, -1] > closes[:, 0]
        if self.answer == "short":
            return buy[1:], sell[1:]
        if self.answer == "ints":
            ints: Any = buy.astype(np.int64), sell.astype(np.int64)
            return ints  # type: ignore[no-any-return]
        one: Any = (buy,)
        return one  # type: ignore[no-any-return]


@pytest.mark.parametrize("answer", ["short", "ints", "one-array"])
def test_vectorized_conditions_of_the_wrong_shape_fall_back_to_evaluate(answer: str) -> None:
    updates = random_walk_klines(seed=2, count=200, start=10.0)
    reference = machine(BadShape("short"), TRADING)
    fills, _ = feed(reference, updates)
    assert fills
    batched = machine(BadShape(answer), TRADING)
    step = batched.on_batch(updates)
    assert step.failure is None and list(step.fills) == fills
    assert machine_state(batched) == machine_state(reference)


class Markers(Strategy):
    """Conditions read off the kline's volume: 1 buy, 2 sell, 3 both at once."""

    name: ClassVar[str] = "Markers"
    indicators: ClassVar[tuple[str, ...]] = ()

    def __init__(self, vectorized: bool) -> None:
        self.window = 1
        self.vectorized = vectorized

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        marker = float(klines.volume[-1])
        return Evaluation(marker in (1.0, 3.0), marker in (2.0, 3.0), ())

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools] | None:
        if not self.vectorized:
            return None
        marker = windows.column("volume")[:, -1]
        buy: Bools = (marker == 1.0) | (marker == 3.0)
        sell: Bools = (marker == 2.0) | (marker == 3.0)
        return buy, sell


@pytest.mark.parametrize("vectorized", [False, True])
def test_a_plug_in_answering_both_conditions_has_neither(vectorized: bool) -> None:
    markers = [0, 3, 3, 0, 3, 1, 3, 1, 2, 3, 2, 3, 3, 1] + [0] * 20
    updates = []
    for n, marker in enumerate(markers):
        open_time = T0 + n * MINUTE_MS
        kline = Kline(open_time, 10.0, 10.0, 10.0, 10.0, float(marker))
        updates.append(MarketUpdate(open_time + MINUTE_MS - 1, 10.0, kline))
    symbol = machine(Markers(vectorized), TRADING)
    annotations = [symbol.on_update(update).kline.annotation for update in updates]
    # both: neither holds, so the next buy-only or sell-only update is a cross again
    buy_crosses = [a.buy_cross_count for a in annotations]
    sell_crosses = [a.sell_cross_count for a in annotations]
    assert buy_crosses[:14] == [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    assert sell_crosses[:14] == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0]
    assert not any(a.buy_ordered or a.sell_ordered for a in annotations[:5])  # 3s place nothing
    check_paths_match(Markers(vectorized), updates, batch_sizes=(20, 1, 30), trading=TRADING)
    batched = machine(Markers(vectorized), TRADING)
    batched.small_batch = 0  # type: ignore[misc]
    step = batched.on_batch(updates)
    assert [k.annotation for k in step.klines] == annotations


# --- names (SPEC 3.2 rule 3) ---------------------------------------------------------------------


def declared(name: object, indicators: object) -> type[Strategy]:
    return type("Declared", (Faulty,), {"name": name, "indicators": indicators})


@pytest.mark.parametrize(
    "name",
    ["A", "a", "Bollinger2", "x" * 32, "RSI", "MACD", "BollingerBands", "myStrategy9"],
)
def test_good_display_names_are_accepted(name: str) -> None:
    check_declaration(declared(name, ("ok", "x9", "a" * 32, "camelCase")))


@pytest.mark.parametrize(
    "name",
    [
        "",
        "9lives",
        "_x",
        "my_strategy",
        "my-strategy",
        "x" * 33,
        "caf\u00e9",
        "a b",
        "A\n",
        None,
        3,
    ],
)
def test_bad_display_names_are_refused(name: object) -> None:
    with pytest.raises(ValueError, match="display name"):
        check_declaration(declared(name, ("ok",)))


@pytest.mark.parametrize(
    "indicators",
    [
        ("Upper",),
        ("9x",),
        ("_x",),
        ("a_b",),
        ("a-b",),
        ("a" * 33,),
        ("",),
        ("ok", "ok"),
        ("ok", None),
        ("ok\n",),
        ["ok"],
        "ok",
        None,
    ],
)
def test_bad_indicator_names_are_refused(indicators: object) -> None:
    with pytest.raises(ValueError, match="indicator"):
        check_declaration(declared("Good", indicators))


def test_the_built_ins_declare_good_names() -> None:
    for strategy_class in (BollingerBands, RSI, MACD):
        check_declaration(strategy_class)
    assert BollingerBands.indicators == ("middle", "upper", "lower", "pb", "pw")
    assert RSI.indicators == ("rsi",)
    assert MACD.indicators == ("macd", "macdsignal", "macdhist")


def test_harness_checks_catch_a_conditions_that_differs_from_evaluate() -> None:
    """The harness itself: a plug-in whose vectorized answer is off by one update is caught."""

    class OffByOne(Faulty):
        def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools] | None:
            closes = windows.column("close")
            buy: Bools = np.roll(closes[:, -1] < closes[:, 0], 1)
            sell: Bools = np.roll(closes[:, -1] > closes[:, 0], 1)
            return buy, sell

    updates = random_walk_klines(seed=9, count=300, start=20.0)
    with pytest.raises(AssertionError, match="conditions says"):
        check_conditions_match(OffByOne(None), updates)
    with pytest.raises(AssertionError):
        check_paths_match(OffByOne(None), updates, batch_sizes=(100,))


def test_batch_sizes_cover_every_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cut of a short series into two batches trades like single updates (MACD, RSI)."""
    monkeypatch.setattr(SymbolStrategy, "small_batch", 0)
    updates = random_trades(seed=12, count=120)
    for strategy in (RSI(2, 3, oversold=45.0, overbought=55.0), MACD(2, 3, 2, 4)):
        reference = machine(strategy, TRADING)
        fills, klines = feed(reference, updates)
        assert fills
        for cut in range(0, len(updates) + 1, 7):
            batched = machine(strategy, TRADING)
            got: list[Fill] = []
            got_klines: dict[int, AnnotatedKline] = {}
            for start, stop in pairwise((0, cut, len(updates))):
                if stop > start:
                    step = batched.on_batch(updates[start:stop])
                    got += step.fills
                    got_klines.update((k.kline.time_ms, k) for k in step.klines)
            assert got == fills, cut
            assert list(got_klines.values()) == klines, cut
            assert machine_state(batched) == machine_state(reference), cut
