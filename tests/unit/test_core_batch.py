"""The batch path must be the one-update path, bit for bit: same fills, same klines, same state.

The one-update path calls TA-Lib on every window and is the reference (SPEC 3.1 rule 2); the batch
path (what the live worker and the backtest run) is checked against it on real data and on random
walks built to hit every branch: flat windows, gaps, ties, maker timeouts, liquidations, flips.
"""

from __future__ import annotations

import math
import random
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from libs.core import batch
from libs.core.bands import band_conditions, bollinger_bands
from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger
from libs.core.sim_exchange import Fill, OrderType, SymbolTerms
from libs.core.strategies import BollingerBands, bollinger
from libs.core.strategy import AnnotatedKline, Mode, StrategyParams, SymbolStrategy
from libs.errors import BadMarketData
from libs.exchange.market_files import read_market_file
from libs.wire.checkpoint import strategy_state

DATA = Path(__file__).parents[1] / "data"
MINUTE_MS = 60_000


def strategy(
    *,
    mode: Mode = "both",
    order_type: OrderType = "maker",
    leverage: float = 10,
    isolated: bool = True,
    timeout_ms: int = 60_000,
    period: int = 20,
    min_size: str = "0.001",
) -> SymbolStrategy:
    terms = SymbolTerms(
        index=1,
        symbol_count=3,
        min_size=min_size,
        price_decimals=8,
        leverage=leverage,
        isolated=isolated,
        maker_fee_pct=0.02,
        taker_fee_pct=0.1,
        buy_pct=20,
        slippage_pct=0.05,
        order_timeout_ms=timeout_ms,
        strategy_name="BollingerBands",
    )
    params = StrategyParams(BollingerBands(period, 2, 2), mode=mode, order_type=order_type)
    return SymbolStrategy(terms=terms, params=params, ledger=Ledger(allocation=1000.0))


def one_by_one(
    machine: SymbolStrategy, updates: list[MarketUpdate]
) -> tuple[list[Fill], dict[int, AnnotatedKline]]:
    fills: list[Fill] = []
    klines: dict[int, AnnotatedKline] = {}
    for update in updates:
        try:
            step = machine.on_update(update)
        except BadMarketData:
            continue
        fills += step.fills
        klines[step.kline.kline.time_ms] = step.kline
    return fills, klines


def in_batches(
    machine: SymbolStrategy, updates: list[MarketUpdate], sizes: list[int]
) -> tuple[list[Fill], dict[int, AnnotatedKline]]:
    fills: list[Fill] = []
    klines: dict[int, AnnotatedKline] = {}
    cuts = [0]
    while cuts[-1] < len(updates):
        cuts.append(min(len(updates), cuts[-1] + sizes[len(cuts) % len(sizes)]))
    for start, stop in pairwise(cuts):
        step = machine.on_batch(updates[start:stop])
        fills += step.fills
        klines.update({k.kline.time_ms: k for k in step.klines})
    return fills, klines


def random_klines(seed: int, count: int, start_price: float) -> list[MarketUpdate]:
    """Klines rows with flat stretches, gaps and sharp moves (liquidations)."""
    rng = random.Random(seed)
    price, time_ms, updates = start_price, 1_700_000_000_000, []
    for _ in range(count):
        time_ms += MINUTE_MS * (1 if rng.random() > 0.05 else rng.randint(2, 30))
        roll = rng.random()
        if roll < 0.1:
            pass  # a flat kline: zero-width windows appear
        elif roll < 0.12:
            price *= 1 + rng.choice((-1, 1)) * rng.uniform(0.05, 0.2)
        else:
            price *= 1 + rng.gauss(0, 0.004)
        kline = Kline(time_ms, price, price * 1.001, price * 0.999, price, rng.uniform(0, 5))
        updates.append(MarketUpdate(time_ms + MINUTE_MS - 1, price, kline))
    return updates


def random_trades(seed: int, count: int) -> list[MarketUpdate]:
    """Tick updates: several per kline, equal times, forming klines."""
    rng = random.Random(seed)
    price, time_ms, updates = 2.5, 1_700_000_000_000, []
    kline: Kline | None = None
    for _ in range(count):
        time_ms += rng.choice((0, 0, 1_000, 5_000, 20_000))
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


CASES = [
    pytest.param({}, id="maker-both"),
    pytest.param({"order_type": "taker"}, id="taker-both"),
    pytest.param({"mode": "long", "timeout_ms": 600_000}, id="maker-long-slow-timeout"),
    pytest.param({"mode": "short", "order_type": "taker"}, id="taker-short"),
    pytest.param({"leverage": 60}, id="liquidations-isolated"),
    pytest.param({"leverage": 60, "isolated": False}, id="liquidations-cross"),
    pytest.param({"timeout_ms": 0, "period": 8}, id="instant-timeout-short-period"),
    pytest.param({"min_size": "5"}, id="min-size-gates-orders"),
]


@pytest.mark.parametrize("options", CASES)
@pytest.mark.parametrize("source", ["random-klines", "random-trades", "real-klines", "real-trades"])
def test_batches_of_any_size_trade_exactly_like_one_update_at_a_time(
    options: dict[str, object], source: str
) -> None:
    if source == "random-klines":
        updates = random_klines(seed=len(str(options)), count=3000, start_price=50.0)
    elif source == "random-trades":
        updates = random_trades(seed=7, count=4000)
    else:
        file = DATA / ("klines-1m-3000.csv" if source == "real-klines" else "trades-2000.csv")
        updates = [update for _, update in read_market_file(file, MINUTE_MS)]
        if "min_size" in options:
            options = {**options, "min_size": "10"}
    reference = strategy(**options)  # type: ignore[arg-type]
    expected_fills, expected_klines = one_by_one(reference, updates)
    assert expected_fills, "every case must trade"

    for sizes, small_batch in (([1], 16), ([1], 0), ([7, 64, 3], 0), ([len(updates)], 16)):
        batched = strategy(**options)  # type: ignore[arg-type]
        batched.small_batch = small_batch  # type: ignore[misc]  # 0: vectors even for one
        fills, klines = in_batches(batched, updates, sizes)
        assert fills == expected_fills
        assert klines == expected_klines
        assert strategy_state(batched) == strategy_state(reference)


@pytest.mark.parametrize("source", ["random-klines", "random-trades"])
@pytest.mark.parametrize("limit", [1, 2, 5, 300])
def test_a_kline_limit_annotates_only_the_batch_s_last_klines_and_trades_the_same(
    source: str, limit: int
) -> None:
    if source == "random-klines":
        updates = random_klines(seed=11, count=1500, start_price=30.0)
    else:
        updates = random_trades(seed=5, count=1500)
    everything, limited = strategy(), strategy()
    sizes, start = [400, 1, 37, 250], 0
    while start < len(updates):  # batches that continue a kline or open one
        chunk = updates[start : start + sizes[start % 4]]
        start += len(chunk)
        full = everything.on_batch(chunk)
        step = limited.on_batch(chunk, kline_limit=limit)
        assert step.klines == full.klines[-limit:]
        assert step.fills == full.fills
        assert strategy_state(limited) == strategy_state(everything)


def test_a_batch_skips_updates_of_an_older_kline_as_one_update_at_a_time_refuses_them() -> None:
    updates = random_klines(seed=3, count=200, start_price=20.0)
    shuffled = [*updates[:100], updates[50], *updates[100:]]
    reference = strategy()
    expected = one_by_one(reference, shuffled)
    batched = strategy()
    step = batched.on_batch(shuffled)
    assert step.rejected == (100,)
    assert list(step.fills) == expected[0]
    assert strategy_state(batched) == strategy_state(reference)


def flat_and_near_flat_klines(seed: int, count: int) -> list[MarketUpdate]:
    """Klines whose closes stay equal for long stretches (zero-width windows) or differ from
    each other by one ulp (windows narrower than the approximate bands can decide), with prices
    at, just off and far from the flat value."""
    rng = random.Random(seed)
    price, time_ms, updates = 7.25, 1_700_000_000_000, []
    for _ in range(count):
        time_ms += MINUTE_MS
        roll = rng.random()
        if roll < 0.6:
            pass  # the same close again
        elif roll < 0.8:
            price = math.nextafter(price, rng.choice((0.0, math.inf)))  # one ulp off
        elif roll < 0.9:
            price = round(price * (1 + rng.gauss(0, 0.01)), 2)
        else:
            price = 7.25
        kline = Kline(time_ms, price, price, price, price, 1.0)
        updates.append(MarketUpdate(time_ms + MINUTE_MS - 1, price, kline))
    return updates


def reference_flags(updates: list[MarketUpdate], period: int) -> tuple[list[bool], list[bool]]:
    """(buy, sell) of every update by TA-Lib on its own window, as the one-update path sees it."""
    buy, sell, closed = [], [], []
    for number, update in enumerate(updates):
        if number and update.kline.time_ms != updates[number - 1].kline.time_ms:
            closed.append(updates[number - 1].kline.close)
        bands = bollinger_bands([*closed, update.kline.close], period, 2.0, 2.0)
        below, above = band_conditions(update.price, bands)
        buy.append(below)
        sell.append(above)
    return buy, sell


@pytest.mark.parametrize("block_rows", [1, 7, 64, bollinger.BLOCK_ROWS])
@pytest.mark.parametrize("source", ["flat", "random-klines", "random-trades"])
def test_band_flags_equal_talib_on_every_window_in_blocks_of_any_size(
    source: str, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bollinger, "BLOCK_ROWS", block_rows)
    if source == "flat":
        updates = flat_and_near_flat_klines(seed=block_rows, count=1500)
    elif source == "random-klines":
        updates = random_klines(seed=block_rows, count=1500, start_price=3.0)
    else:
        updates = random_trades(seed=block_rows, count=1500)
    columns = batch.UpdateColumns.of(updates)
    windows, _ = batch.windows_of(batch.no_klines(), None, columns, 20)
    first = windows.first
    buy, sell = bollinger.BollingerBands(20, 2.0, 2.0).conditions(windows.batch(columns))
    expected_buy, expected_sell = reference_flags(updates, 20)
    assert not any(expected_buy[:first]) and not any(expected_sell[:first])
    assert buy.tolist() == expected_buy[first:]
    assert sell.tolist() == expected_sell[first:]
    if source == "flat":
        assert any(expected_buy) and any(expected_sell)  # near-flat windows do cross


@pytest.mark.parametrize("options", [{}, {"order_type": "taker", "leverage": 60}])
def test_batches_trade_exactly_like_one_update_at_a_time_with_bands_in_small_blocks(
    options: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bollinger, "BLOCK_ROWS", 37)
    updates = [*flat_and_near_flat_klines(seed=5, count=800)]
    updates += random_klines(seed=6, count=1500, start_price=7.0)[40:]  # later klines only
    reference = strategy(**options)  # type: ignore[arg-type]
    expected_fills, expected_klines = one_by_one(reference, updates)
    assert expected_fills
    batched = strategy(**options)  # type: ignore[arg-type]
    fills, klines = in_batches(batched, updates, [500, 3, 1000])
    assert fills == expected_fills
    assert klines == expected_klines
    assert strategy_state(batched) == strategy_state(reference)


def test_a_cross_index_finds_the_next_cross_counts_them_and_knows_its_members() -> None:
    mask = np.array([False, True, False, False, True, True, False])
    index = batch.CrossIndex.of(mask)
    assert [index.next_at(start) for start in range(8)] == [1, 1, 4, 4, 4, 5, 7, 7]
    assert index.count_in(0, 7) == 3 and index.count_in(2, 5) == 1 and index.count_in(6, 7) == 0
    assert [i in index for i in range(7)] == mask.tolist()
    empty = batch.CrossIndex.of(np.zeros(3, dtype=np.bool_))
    assert empty.next_at(0) == 3 and empty.count_in(0, 3) == 0
