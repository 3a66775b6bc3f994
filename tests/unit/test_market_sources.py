"""Ingest sources without Redis: the synthetic walk, replay resume points and pacing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from libs.core.market import Trade, TradeKlineBuilder
from libs.exchange.market_files import Reject
from services.ingest.sources import (
    Item,
    LastEntry,
    RandomWalk,
    ReplaySource,
    SyntheticSource,
    base_price,
)
from services.ingest.writer import Pacer

DATA = Path(__file__).parents[1] / "data"
MINUTE = 60_000
START_MS = 1_700_000_000_000


def synthetic(product_id: str = "ETH-USDT", seed: int = 1) -> SyntheticSource:
    return SyntheticSource(seed, product_id, MINUTE, START_MS)


def take(
    source: SyntheticSource | ReplaySource, count: int, last: LastEntry | None = None
) -> list[Item]:
    return list(itertools.islice(source.items(last), count))


def test_the_walk_starts_near_a_plausible_price_per_asset() -> None:
    assert (base_price("ETH-USDT"), base_price("BTC-USDT"), base_price("SOL-USDT")) == (
        3000.0,
        60000.0,
        150.0,
    )
    assert base_price("DOGE-USDT") == 100.0
    for product_id in ("ETH-USDT", "BTC-USDT", "SOL-USDT", "DOGE-USDT"):
        first = take(synthetic(product_id), 1)[0].update.price
        assert abs(first / base_price(product_id) - 1) < 0.01


def test_the_same_seed_and_symbol_give_the_same_prices_and_amounts() -> None:
    def sequence(product_id: str, seed: int) -> list[tuple[float, float]]:
        items = take(synthetic(product_id, seed), 300)
        return [(i.update.price, i.update.kline.volume) for i in items]

    assert sequence("ETH-USDT", 1) == sequence("ETH-USDT", 1)
    assert sequence("ETH-USDT", 1) != sequence("ETH-USDT", 2)
    assert sequence("ETH-USDT", 1) != sequence("SOL-USDT", 1)


def test_synthetic_times_never_go_back_and_klines_are_valid() -> None:
    items = take(synthetic(), 2000)
    times = [i.update.time_ms for i in items]
    assert times == sorted(times) and times[0] >= START_MS
    assert [i.src for i in items[:3]] == ["synthetic:1", "synthetic:2", "synthetic:3"]
    for item in items:
        kline = item.update.kline
        assert kline.time_ms <= item.update.time_ms < kline.time_ms + MINUTE
        assert (
            kline.low <= min(kline.open, kline.close) <= max(kline.open, kline.close) <= kline.high
        )
        assert kline.close == item.update.price and kline.volume > 0
    # about 20 trades a minute: 2000 trades span well over an hour of event time
    assert 60 * MINUTE < times[-1] - START_MS < 150 * MINUTE


def test_bollinger_crossings_happen_every_few_minutes_of_event_time() -> None:
    items = take(synthetic(), 6000)
    closes: list[float] = []
    crosses, previous, kline_time = 0, "", items[0].update.kline.time_ms
    last_close = items[0].update.price
    for item in items:
        if item.update.kline.time_ms != kline_time:
            closes.append(last_close)
            kline_time = item.update.kline.time_ms
        last_close = item.update.price
        window = [*closes[-19:], item.update.price]
        if len(window) < 20:
            continue
        middle = sum(window) / 20
        deviation = (sum((c - middle) ** 2 for c in window) / 20) ** 0.5
        side = (
            "buy"
            if last_close < middle - 2 * deviation
            else "sell"
            if last_close > middle + 2 * deviation
            else ""
        )
        crosses += side != "" and side != previous
        previous = side
    minutes = (items[-1].update.time_ms - items[0].update.time_ms) / MINUTE
    assert minutes / crosses < 8


def test_a_synthetic_restart_continues_the_same_sequence_and_kline() -> None:
    straight = take(synthetic(), 50)
    last = LastEntry("1-0", straight[29].src, straight[29].update)
    resumed = take(synthetic(), 20, last)
    assert resumed == straight[30:]


def test_synthetic_after_another_source_starts_a_new_kline() -> None:
    builder = TradeKlineBuilder(MINUTE)
    foreign = builder.accept(Trade(START_MS + 5_000, "x", 1.0, 1.0))
    item = take(synthetic(), 1, LastEntry("1-0", "replay:f.csv:2", foreign))[0]
    assert item.update.kline.time_ms == START_MS + MINUTE - START_MS % MINUTE
    assert item.src == "synthetic:1"


def test_the_walk_is_pure_in_step_number_and_price() -> None:
    walk = RandomWalk(7, "BTC-USDT")
    assert walk.step(5, 60_000.0) == walk.step(5, 60_000.0)
    assert walk.step(5, 60_000.0).amount > 0


@pytest.mark.parametrize("name", ["klines-1m-3000.csv", "trades-2000.csv"])
def test_a_replay_resumes_after_the_line_its_stream_names(name: str) -> None:
    rejects: list[tuple[str, int, Reject]] = []
    mismatches: list[tuple[str, int]] = []

    def source() -> ReplaySource:
        return ReplaySource(
            [DATA / name], MINUTE, lambda *r: rejects.append(r), lambda *m: mismatches.append(m)
        )

    everything = take(source(), 10_000)
    assert [i.src for i in everything[:2]] == [f"replay:{name}:2", f"replay:{name}:3"]
    last = LastEntry("1-0", everything[999].src, everything[999].update)
    assert take(source(), 10_000, last) == everything[1000:]
    assert mismatches == [] and rejects == []
    other = LastEntry("1-0", everything[999].src, everything[998].update)
    take(source(), 1, other)
    assert mismatches == [(f"replay:{name}", 1001)]


def test_a_replay_of_another_file_or_source_starts_from_the_top() -> None:
    source = ReplaySource([DATA / "trades-2000.csv"], MINUTE, lambda *r: None)
    first = take(source, 1)[0]
    for src in ("synthetic:9", "replay:other.csv:50", "replay:trades-2000.csv:x"):
        assert take(source, 1, LastEntry("1-0", src, first.update))[0] == first


def test_pacing_maps_event_time_to_wall_time_at_the_speed() -> None:
    wall = [100.0]
    pacer = Pacer(60.0, clock=lambda: wall[0])
    assert pacer.delay_s(START_MS) == 0.0
    assert pacer.delay_s(START_MS + 60_000) == 1.0  # a minute of event time a wall second
    wall[0] = 100.5
    assert pacer.delay_s(START_MS + 60_000) == 0.5
    assert Pacer(0.0).delay_s(START_MS + 10**9) == 0.0
