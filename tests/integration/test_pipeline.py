"""Strategy and accounting workers over a real redis-server, on real klines.

The workers run in-process so a test can drive them batch by batch; the e2e suite runs them as
processes. What they commit is checked against the pure core run directly on the same updates.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from libs.config import BotConfig
from libs.core.market import Kline, MarketUpdate
from libs.ops.health import Health
from libs.store import keys
from libs.store.bot_state import ensure_state
from libs.store.leases import LeaseKeeper
from libs.store.partitions import accounting_partitions, strategy_partitions
from libs.store.published import read_snapshot
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.market import encode_update
from libs.wire.status import RefreshMessage
from services.accounting.worker import AccountingWorker
from services.strategy.worker import WITHIN_CAP_CHECK, StrategyWorker

KLINES = Path(__file__).parents[1] / "data" / "klines-1m-3000.csv"


def bot_config(**strategy: object) -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": "alt",
            "exchange": "binance",
            "start_capital": 1.0,
            "trade_history": 1000,
            "kline_history": 50,
            "strategy": {"order_type": "taker", **strategy},
            "symbols": [
                {"product_id": "ALT-BTC", "min_size": "0.01", "price_decimals": 8, "leverage": 3}
            ],
        }
    )


def klines_updates(limit: int) -> list[MarketUpdate]:
    updates = []
    with KLINES.open() as handle:
        for _, row in zip(range(limit), csv.DictReader(handle), strict=False):
            time_ms = int(row["time"])
            kline = Kline(
                time_ms,
                float(row["open"]),
                float(row["high"]),
                float(row["low"]),
                float(row["close"]),
                float(row["volume"]),
            )
            updates.append(MarketUpdate(time_ms + 59_999, kline.close, kline))
    return updates


class SteppedClock:
    """Accounting's wall clock, moved by the test so every refresh is due when asked."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 5.0
        return self.now_s


async def run_pipeline(
    redis: Redis, bot: BotConfig, updates: list[MarketUpdate], strategy_batch: int = 400
) -> None:
    stream = keys.market_stream(bot.exchange, bot.symbols[0].product_id, bot.kline_size)
    async with redis.pipeline(transaction=False) as pipe:
        for line, update in enumerate(updates):
            pipe.xadd(stream, encode_update(update, f"test:{line}"))  # type: ignore[arg-type]
        await pipe.execute()
    await ensure_state(redis, bot, 0)
    strategy_keeper = LeaseKeeper(
        redis, service="strategy", worker_id="s1", partitions=strategy_partitions([bot])
    )
    strategy = StrategyWorker(redis, [bot], strategy_keeper, batch_size=strategy_batch)
    await strategy.load()
    while await strategy.run_once(block_ms=10):
        pass
    accounting_keeper = LeaseKeeper(
        redis, service="accounting", worker_id="a1", partitions=accounting_partitions([bot])
    )
    accounting = AccountingWorker(
        redis, [bot], accounting_keeper, clock=SteppedClock(), batch_size=7
    )
    await accounting.load()
    book = accounting.books[bot.id]
    while True:
        newest = await redis.xrevrange(keys.events(bot.id), count=1)
        if book.unsaved_events == 0 and (not newest or book.checkpoint == newest[0][0]):
            return
        await accounting.run_once(max_block_ms=10)


def closes_a_round_trip(trade: dict[str, object]) -> bool:
    """A sell of a long, a buy of a short, or a liquidation."""
    return (trade["type"] == "sell") == (trade["position_side"] == "long")


async def test_committed_trades_and_status_are_the_fold_of_the_pure_core(redis: Redis) -> None:
    bot = bot_config()
    updates = klines_updates(3000)
    await run_pipeline(redis, bot, updates)

    core = new_symbol_strategy(bot, 0)
    expected = [trade_wire(f, 8) for u in updates for f in core.on_update(u).fills]
    stored = [orjson.loads(t) for t in await redis.lrange(keys.trades(bot.id, "ALT-BTC"), 0, -1)]
    assert len(expected) >= 10, "the slice should trade"
    assert stored == expected

    snapshot = await read_snapshot(redis, bot.id)
    status, symbol = snapshot.status, snapshot.symbols[0]
    assert status["tradeNum"] == len(expected)
    realized = 0.0
    for trade in expected:
        realized += trade["usdtProfit"]
    assert symbol["usdtProfit"] == realized == status["usdtProfit"]
    assert status["totalCapital"] == 1.0 + status["usdtProfit"] + status["dynamicUsdtProfit"]
    assert status["win"] + status["lost"] == sum(map(closes_a_round_trip, expected)) > 0
    assert symbol["price"] == updates[-1].price
    assert status["startTime"] == updates[0].time_ms
    assert [k["time"] for k in symbol["klines"]] == [u.kline.time_ms for u in updates[-50:]]
    assert symbol["signal"] == core.signal


async def test_the_refresh_log_has_every_seq_once_and_each_refresh_is_valid(redis: Redis) -> None:
    bot = bot_config(order_type="maker", mode="long")
    await run_pipeline(redis, bot, klines_updates(600), strategy_batch=25)
    entries = await redis.xrange(keys.refresh_log(bot.id))
    seqs = [int(entry_id.split("-")[0]) for entry_id, _ in entries]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3
    meta = await redis.hgetall(keys.meta(bot.id))
    assert int(meta["seq"]) == seqs[-1]
    for _, fields in entries:
        message = RefreshMessage.model_validate_json(fields["msg"])
        assert message.epoch == meta["epoch"]
        assert [s.product_id for s in message.data.symbols] == ["ALT-BTC"]


async def test_falling_behind_the_stream_cap_is_reported_until_caught_up(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC 4.1 rule 12: a consumer further behind than the cap loses entries, reported by a
    WARNING, a metric and readiness, never silently."""
    bot = bot_config()
    stream = keys.market_stream(bot.exchange, bot.symbols[0].product_id, bot.kline_size)
    updates = klines_updates(2600)
    await ensure_state(redis, bot, 0)
    health = Health("strategy")
    keeper = LeaseKeeper(
        redis, service="strategy", worker_id="s1", partitions=strategy_partitions([bot])
    )
    strategy = StrategyWorker(redis, [bot], keeper, batch_size=500, health=health)

    async def write(chunk: list[MarketUpdate], first_line: int) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for line, update in enumerate(chunk, start=first_line):
                fields = encode_update(update, f"test:{line}")
                pipe.xadd(stream, fields, maxlen=1000, approximate=False)  # type: ignore[arg-type]
            await pipe.execute()

    def overruns() -> float:
        name = "binance.ALT-BTC.1m"
        labels = {"stream": name}
        return REGISTRY.get_sample_value("bandwagon_strategy_stream_overruns_total", labels) or 0.0

    await write(updates[:600], 0)
    await strategy.load()
    while await strategy.run_once(block_ms=10):
        pass
    assert health.checks[WITHIN_CAP_CHECK] is True  # read from the oldest entry: by design
    before = overruns()

    await write(updates[600:], 600)  # 2,000 more: the cap of 1,000 trims the checkpoint away
    with caplog.at_level(logging.WARNING):
        await strategy.rebalance()

    assert health.checks[WITHIN_CAP_CHECK] is False and not health.ready
    assert overruns() == before + 1
    assert "a whole stream cap (market_stream_len) or more behind" in caplog.text
    while await strategy.run_once(block_ms=10):
        pass
    await strategy.rebalance()
    assert health.checks[WITHIN_CAP_CHECK] is True
    assert overruns() == before + 1
    checkpoint = await redis.hget(keys.strategy_state(bot.id, "ALT-BTC"), "checkpoint")
    assert checkpoint == (await redis.xrevrange(stream, count=1))[0][0]


async def test_a_new_bot_reading_a_stream_from_its_oldest_entry_is_no_overrun(
    redis: Redis,
) -> None:
    first = bot_config()
    second = bot_config().model_copy(update={"id": "alt-two"})
    stream = keys.market_stream(first.exchange, first.symbols[0].product_id, first.kline_size)
    async with redis.pipeline(transaction=False) as pipe:
        for line, update in enumerate(klines_updates(300)):
            pipe.xadd(stream, encode_update(update, f"test:{line}"))  # type: ignore[arg-type]
        await pipe.execute()
    for bot in (first, second):
        await ensure_state(redis, bot, 0)
    alone = StrategyWorker(
        redis,
        [first],
        LeaseKeeper(
            redis, service="strategy", worker_id="s1", partitions=strategy_partitions([first])
        ),
    )
    await alone.load()
    while await alone.run_once(block_ms=10):
        pass
    await alone.keeper.leave()

    health = Health("strategy")
    both = StrategyWorker(
        redis,
        [first, second],
        LeaseKeeper(
            redis,
            service="strategy",
            worker_id="s2",
            partitions=strategy_partitions([first, second]),
        ),
        health=health,
    )
    await both.load()  # `second` starts at the head, `first` where it stopped: nothing trimmed

    assert {p.checkpoint == "0-0" for p in both.partitions} == {True, False}
    assert health.checks[WITHIN_CAP_CHECK] is True and both.overrun == set()


@pytest.mark.parametrize("linger_ms", [0.0, 60.0])
async def test_lingering_after_a_small_read_lets_a_trickle_share_one_batch(
    redis: Redis, linger_ms: float
) -> None:
    bot = bot_config()
    stream = keys.market_stream(bot.exchange, bot.symbols[0].product_id, bot.kline_size)
    updates = klines_updates(4)
    await ensure_state(redis, bot, 0)
    keeper = LeaseKeeper(
        redis, service="strategy", worker_id="s1", partitions=strategy_partitions([bot])
    )
    strategy = StrategyWorker(redis, [bot], keeper, linger_ms=linger_ms)
    await strategy.load()
    await redis.xadd(stream, encode_update(updates[0], "test:0"))  # type: ignore[arg-type]
    assert await strategy.run_once(block_ms=10) == 1  # a small read: the next one lingers

    async def trickle() -> None:
        for line, update in enumerate(updates[1:], start=1):
            await asyncio.sleep(0.01)
            await redis.xadd(stream, encode_update(update, f"test:{line}"))  # type: ignore[arg-type]

    writer = asyncio.create_task(trickle())
    read = await strategy.run_once(block_ms=1000)
    await writer

    assert read == (3 if linger_ms else 1)
