"""Ingest against a real redis-server, in process: replays, bad rows, restarts, outages."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from libs.core.market import MISSING_FIELD, NOT_POSITIVE, ROW_TIME_OFF_PERIOD, MarketUpdate
from libs.exchange.market_files import read_market_file
from libs.store import keys
from libs.store.client import worker_redis
from libs.wire.market import FIELDS, decode_update
from services.ingest.main import Options, build_sources, run_streams
from services.ingest.sources import Item
from services.ingest.writer import EARLIER_THAN_STREAM, StreamSpec, StreamWriter
from tools.run.redis_server import RedisServer

DATA = Path(__file__).parents[1] / "data"
KLINES = DATA / "klines-1m-3000.csv"
TRADES = DATA / "trades-2000.csv"
MINUTE = 60_000
STREAM = StreamSpec("mexc", "XRP-ETH", "1m")
KEY = "bw:market:{mexc.XRP-ETH.1m}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def options(*files: Path, batch_size: int = 500, speed: float = 0.0) -> Options:
    return Options("replay", tuple((None, path) for path in files), speed, 1, batch_size)


async def replay(redis: Redis, *files: Path, batch_size: int = 500) -> None:
    chosen = options(*files, batch_size=batch_size)
    plans = build_sources([STREAM], chosen, start_time_ms=0)
    await asyncio.wait_for(run_streams(redis, plans, 100_000, chosen, asyncio.Event()), 20)


async def stream_entries(redis: Redis, key: str = KEY) -> list[tuple[str, MarketUpdate]]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))
    assert all(tuple(fields) == FIELDS for _, fields in entries)
    return [(fields["src"], decode_update(fields)) for _, fields in entries]


def expected(path: Path) -> list[tuple[str, MarketUpdate]]:
    return [(f"replay:{path.name}:{line}", u) for line, u in read_market_file(path, MINUTE)]


async def test_a_klines_replay_writes_every_row_in_order_to_its_stream(redis: Redis) -> None:
    assert keys.market_stream("mexc", "XRP-ETH", "1m") == KEY == STREAM.key
    before = metric("bandwagon_ingest_updates_total", stream="mexc.XRP-ETH.1m")
    await replay(redis, KLINES, batch_size=128)
    written = await stream_entries(redis)
    assert written == expected(KLINES)
    assert len(written) == 3000
    assert written[0][1].time_ms == 1509836520000 + MINUTE - 1
    assert await redis.keys("*") == [KEY]
    after = metric("bandwagon_ingest_updates_total", stream="mexc.XRP-ETH.1m")
    assert after - before == 3000


async def test_a_trades_replay_writes_one_entry_per_trade_with_its_kline(redis: Redis) -> None:
    await replay(redis, TRADES)
    written = await stream_entries(redis)
    assert written == expected(TRADES) and len(written) == 2000
    first, second = written[0][1], written[1][1]
    assert (first.time_ms, first.price) == (1570752011620, 0.00141342)
    assert second.kline.volume == 23.0 + 54.0 and second.kline.open == 0.00141342


async def test_replaying_again_after_the_end_writes_nothing_twice(redis: Redis) -> None:
    await replay(redis, KLINES)
    await replay(redis, KLINES)
    assert await stream_entries(redis) == expected(KLINES)


async def test_bad_rows_are_skipped_logged_and_counted(
    redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad-klines.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "60000,1,2,0.5,1.5,10\n"
        "120000,1,2,0.5,NaN,10\n"
        "150000,1,2,0.5,1.5,10\n"
        "180000,1,2,0.5\n"
        "240000,1,2,0.5,1.5,10\n"
    )
    reasons = (NOT_POSITIVE, ROW_TIME_OFF_PERIOD, MISSING_FIELD)
    counts = {
        r: metric("bandwagon_ingest_rejected_total", stream=STREAM.name, reason=r) for r in reasons
    }
    with caplog.at_level(logging.WARNING, logger="services.ingest"):
        await replay(redis, path)
    assert [src for src, _ in await stream_entries(redis)] == [
        "replay:bad-klines.csv:2",
        "replay:bad-klines.csv:6",
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.__dict__["source"], r.__dict__["line"], r.__dict__["stream"]) for r in warnings] == [
        ("replay:bad-klines.csv", 3, KEY),
        ("replay:bad-klines.csv", 4, KEY),
        ("replay:bad-klines.csv", 5, KEY),
    ]
    assert "close=nan: not a finite number > 0" in warnings[0].getMessage()
    assert "line 4: time=150000: not a multiple of the period" in warnings[1].getMessage()
    for reason in reasons:
        after = metric("bandwagon_ingest_rejected_total", stream=STREAM.name, reason=reason)
        assert after - counts[reason] == 1


async def test_no_update_earlier_than_the_streams_last_entry_is_written(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    late: dict[Any, Any] = {
        name: "1" for name in ("open", "high", "low", "close", "volume", "price")
    }
    await redis.xadd(
        KEY, {**late, "time": "1609459199999", "kline_time": "1609459140000", "src": "synthetic:9"}
    )
    before = metric(
        "bandwagon_ingest_rejected_total", stream=STREAM.name, reason=EARLIER_THAN_STREAM
    )
    with caplog.at_level(logging.WARNING, logger="services.ingest"):
        await replay(redis, KLINES)
    assert await redis.xlen(KEY) == 1
    after = metric(
        "bandwagon_ingest_rejected_total", stream=STREAM.name, reason=EARLIER_THAN_STREAM
    )
    assert after - before == 3000
    assert caplog.records[-1].__dict__["line"] == "3001"


async def test_a_batch_whose_reply_was_lost_is_not_written_again(redis: Redis) -> None:
    updates = [u for _, u in read_market_file(KLINES, MINUTE)][:10]
    items = [Item(f"replay:k.csv:{n}", u) for n, u in enumerate(updates)]
    writer = StreamWriter(redis, STREAM, 100_000, 100, asyncio.Event())
    await writer.read_last()
    for item in items[:4]:
        writer.add(item)
    await writer.flush()
    before = writer.last_entry_id
    for item in items[4:]:
        writer.add(item)
    await writer.flush()
    # As if the EXEC of the second batch had been applied but its reply lost: the writer
    # still holds the batch, and must find it in the stream instead of sending it again.
    writer.batch, writer.last_entry_id, writer._uncertain = list(items[4:]), before, True
    writer.add(Item("replay:k.csv:99", updates[-1]))
    await writer.flush()
    assert [src for src, _ in await stream_entries(redis)] == [
        *(item.src for item in items),
        "replay:k.csv:99",
    ]


async def test_a_redis_outage_delays_writes_without_losing_or_doubling_any(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(data_dir=tmp_path / "redis", appendfsync="always").start()
    redis = worker_redis(server.url)
    try:
        writer = StreamWriter(redis, STREAM, 100_000, 100, asyncio.Event())
        await writer.read_last()
        updates = [u for _, u in read_market_file(KLINES, MINUTE)][:6]
        writer.add(Item("replay:k.csv:2", updates[0]))
        await writer.flush()
        server.stop()
        for line, update in enumerate(updates[1:], start=3):
            writer.add(Item(f"replay:k.csv:{line}", update))
        with caplog.at_level(logging.WARNING, logger="services.ingest"):
            flushing = asyncio.create_task(writer.flush())
            await asyncio.sleep(0.5)
            assert not flushing.done()
            server.start()
            await asyncio.wait_for(flushing, 15)
        assert any("redis unavailable" in r.getMessage() for r in caplog.records)
        assert [src for src, _ in await stream_entries(redis)] == [
            f"replay:k.csv:{line}" for line in range(2, 8)
        ]
    finally:
        await redis.aclose()
        server.stop()


async def test_the_synthetic_source_writes_increasing_times_and_valid_klines(redis: Redis) -> None:
    chosen = Options("synthetic", (), 6000.0, 1, 500)
    spec = StreamSpec("mexc", "ETH-USDT", "1m")
    start_ms = 1_700_000_000_000
    stop = asyncio.Event()

    async def run_for(seconds: float) -> None:
        plans = build_sources([spec], chosen, start_time_ms=start_ms)
        task = asyncio.create_task(run_streams(redis, plans, 100_000, chosen, stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 10)
        stop.clear()

    await run_for(0.6)
    count = await redis.xlen(spec.key)
    await run_for(0.4)  # a restart continues the walk
    written = await stream_entries(redis, spec.key)
    assert count > 50 and len(written) > count
    assert [src for src, _ in written] == [f"synthetic:{n}" for n in range(1, len(written) + 1)]
    times = [u.time_ms for _, u in written]
    assert times == sorted(times) and times[0] >= start_ms
    for _, update in written:
        kline = update.kline
        assert kline.time_ms == update.time_ms - update.time_ms % MINUTE
        assert 0 < kline.low <= min(kline.open, kline.close)
        assert max(kline.open, kline.close) <= kline.high and kline.volume > 0
    for (_, before), (_, after) in itertools.pairwise(written):
        if after.kline.time_ms == before.kline.time_ms:
            assert after.kline.open == before.kline.open
            assert after.kline.volume > before.kline.volume
