"""The ccxt source against a local stand-in of Binance's public API (REST and websocket) and a
real redis-server: backfill in pages, live trades, a dropped socket, a gap, bad candles, HTTP 429,
staleness, polling, an unknown symbol. No test reaches the internet; CCXT is pointed at
127.0.0.1 through `exchange.urls['api']`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import pytest
import yaml
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from libs.config import BotsFile, MarketTerms
from libs.core.market import NOT_A_NUMBER, ROW_TIME_NOT_INCREASING, ROW_TIME_OFF_PERIOD
from libs.errors import ConfigError
from libs.exchange.markets import market_metadata, new_exchange
from libs.ops.health import Health
from libs.store.bot_state import ensure_state
from libs.store.market_terms import write_supplied_terms
from libs.wire.market import decode_update
from services.ingest.ccxt_source import FRESH_CHECK, CcxtIngest, CcxtSettings
from services.ingest.main import watched_streams
from tests.integration.exchange_standin import MINUTE, StandinExchange, StandinMarket
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

T0 = 1_700_000_040_000  # a minute's open (2023-11-14 22:14 UTC)
KEY = "bw:market:{binance.ETH-USDT.1m}"
WAIT_S = 15.0  # for the ingest's writes and health, unless a test says otherwise


class Clock:
    """The source's wall clock, moved by the tests (CCXT keeps its own)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bots(*products: str, history: int = 300, exchange: str = "binance") -> BotsFile:
    symbols = [{"product_id": p, "min_size": "0.0001", "price_decimals": 2} for p in products]
    return BotsFile.model_validate(
        {
            "bots": [
                {"id": "live", "exchange": exchange, "kline_history": history, "symbols": symbols}
            ]
        }
    )


def settings(standin: StandinExchange, **changes: Any) -> CcxtSettings:
    values: dict[str, Any] = {
        "urls": {"binance": standin.urls()},
        "backoff_first_s": 0.01,
        "backoff_cap_s": 0.05,
        "quiet_check_s": 0.2,
        "poll_min_s": 0.05,
        "check_s": 0.02,
    }
    values.update(changes)
    return CcxtSettings(**values)


def fill_klines(standin: StandinExchange, market_id: str, first_ms: int, count: int) -> None:
    for n in range(count):
        price = 2000 + (n % 17)
        standin.add_kline(
            market_id,
            first_ms + n * MINUTE,
            f"{price}",
            f"{price + 3}",
            f"{price - 2}",
            f"{price + 1}",
            "12.5",
        )


@pytest.fixture
async def standin() -> AsyncIterator[StandinExchange]:
    exchange = StandinExchange(
        markets=[
            StandinMarket("ETH", "USDT"),
            StandinMarket(
                "BTC", "USDT", tick_size="0.10000000", step_size="0.00001000", min_qty="0.00001000"
            ),
            StandinMarket(
                "ETH", "BTC", tick_size="0.00001000", step_size="0.00100000", min_qty="0.00100000"
            ),
        ],
        now_ms=T0 + 30_000,
    )
    await exchange.start()
    yield exchange
    await exchange.stop()


class Running:
    """A `CcxtIngest` in the background of the test's loop."""

    def __init__(self, ingest: CcxtIngest, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.ingest, self.task, self.stop = ingest, task, stop

    @property
    def follower(self) -> Any:
        return self.ingest.followers[0]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def start(
    redis: Redis, config: BotsFile, chosen: CcxtSettings, clock: Clock, health: Health | None = None
) -> Running:
    ingest = CcxtIngest(config, watched_streams(config), chosen, health or Health("ingest"), clock)
    stop = asyncio.Event()
    await asyncio.wait_for(ingest.open(stop), 10)
    task = asyncio.create_task(ingest.run(redis, 1_000_000, 500, stop))
    return Running(ingest, task, stop)


async def entries(redis: Redis, key: str = KEY) -> list[tuple[str, Any]]:
    raw = cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))
    return [(fields["src"], decode_update(fields)) for _, fields in raw]


def in_order_without_duplicates(written: list[tuple[str, Any]]) -> None:
    sources = [src for src, _ in written]
    assert len(sources) == len(set(sources))
    times = [update.time_ms for _, update in written]
    assert times == sorted(times)


async def test_markets_give_min_size_and_price_decimals(standin: StandinExchange) -> None:
    exchange = new_exchange("binance", standin.urls())
    try:
        markets = await exchange.load_markets()
    finally:
        await exchange.close()
    eth = market_metadata(markets["ETH/USDT"], counts_decimals=False)
    btc = market_metadata(markets["BTC/USDT"], counts_decimals=False)
    alt = market_metadata(markets["ETH/BTC"], counts_decimals=False)
    assert eth is not None and (eth.min_size, eth.price_decimals) == ("0.0001", 2)
    assert btc is not None and (btc.min_size, btc.price_decimals) == ("0.00001", 1)
    assert alt is not None and (alt.min_size, alt.price_decimals, alt.asset) == ("0.001", 5, "ETH")
    assert [path for path, _ in standin.requests] == ["/api/v3/exchangeInfo"]


async def test_the_markets_terms_are_stored_for_bots_that_leave_them_to_the_exchange(
    redis: Redis, standin: StandinExchange, caplog: pytest.LogCaptureFixture
) -> None:
    config = BotsFile.model_validate(
        {
            "bots": [
                {"id": "old", "exchange": "binance", "symbols": [{"product_id": "ETH-USDT"}]},
                {"id": "new", "exchange": "binance", "symbols": [{"product_id": "BTC-USDT"}]},
            ]
        }
    )
    # `old` froze other terms when the exchange still said them
    await write_supplied_terms(
        redis, "binance", {"ETH-USDT": MarketTerms(min_size="0.01", price_decimals=2)}
    )
    await ensure_state(redis, config.bots[0], 0)

    with caplog.at_level(logging.WARNING):
        running = await start(redis, config, settings(standin), Clock(T0 + 30_000))
        await eventually(
            lambda: redis.exists("bw:terms:{binance.BTC-USDT}"),
            timeout_s=WAIT_S,
            what="BTC-USDT's terms stored",
        )
        await running.finish()

    assert await redis.hgetall("bw:terms:{binance.ETH-USDT}") == {
        "min_size": "0.0001",
        "price_decimals": "2",
        "updated_ms": ANY,
    }
    assert (await redis.hget("bw:terms:{binance.BTC-USDT}", "min_size")) == "0.00001"
    assert "bot old: the exchange changed ETH-USDT: min_size 0.01 (now 0.0001)" in caplog.text
    assert (await ensure_state(redis, config.bots[0], 0)).bot.symbols[0].terms.min_size == "0.01"
    created = await ensure_state(redis, config.bots[1], 0)
    assert created.created and created.bot.symbols[0].terms.min_size == "0.00001"


async def test_backfill_pages_the_last_kline_history_klines_then_builds_the_forming_one(
    redis: Redis, standin: StandinExchange
) -> None:
    standin.klines_page_max = 300
    fill_klines(standin, "ETHUSDT", T0 - 800 * MINUTE, 801)  # 800 closed + the forming one
    standin.add_trade("ETHUSDT", 500, T0 + 1_000, "2001.5", "0.5")
    standin.add_trade("ETHUSDT", 501, T0 + 2_000, "2003.0", "0.25")
    standin.add_trade("ETHUSDT", 502, T0 + 2_000, "1999.0", "1")
    running = await start(
        redis, bots("ETH-USDT", history=700), settings(standin), Clock(T0 + 30_000)
    )

    async def complete() -> bool:
        return len(await entries(redis)) == 703

    await eventually(complete, timeout_s=WAIT_S, what="700 klines and 3 trades written")
    await running.finish()
    written = await entries(redis)
    in_order_without_duplicates(written)
    klines = written[:700]
    assert [u.kline.time_ms for _, u in klines] == [T0 - n * MINUTE for n in range(700, 0, -1)]
    first = klines[0][1]
    assert (first.time_ms, first.price) == (T0 - 700 * MINUTE + MINUTE - 1, first.kline.close)
    assert klines[0][0] == f"ccxt:binance:ETH/USDT:k{T0 - 700 * MINUTE}"
    forming = [u for _, u in written[700:]]
    assert [src for src, _ in written[700:]] == [
        f"ccxt:binance:ETH/USDT:t{n}" for n in (500, 501, 502)
    ]
    last = forming[-1].kline
    assert (last.time_ms, last.open, last.high, last.low, last.close) == (
        T0,
        2001.5,
        2003.0,
        1999.0,
        1999.0,
    )
    assert last.volume == 0.5 + 0.25 + 1.0
    pages = standin.paths("/api/v3/klines")
    assert len(pages) == 3  # 300 + 300 + 100 klines
    assert [int(page["startTime"]) for page in pages] == [
        T0 - 700 * MINUTE,
        T0 - 400 * MINUTE,
        T0 - 100 * MINUTE,
    ]


async def test_live_trades_over_the_websocket_build_klines_that_close_on_a_later_trade(
    redis: Redis, standin: StandinExchange
) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 5 * MINUTE, 5)
    clock = Clock(T0 + 10_000)
    # no REST check of a quiet socket within the test: the trades can come only by websocket
    running = await start(redis, bots("ETH-USDT"), settings(standin, quiet_check_s=60), clock)
    await standin.wait_subscribed(1)
    await standin.push_trade("ETHUSDT", 1, T0 + 11_000, "2010", "1")
    await standin.push_trade("ETHUSDT", 2, T0 + 12_000, "2012", "2")
    clock.now_ms = T0 + MINUTE + 1_000
    await standin.push_trade("ETHUSDT", 3, T0 + MINUTE + 500, "2008", "3")

    async def three_trades() -> bool:
        return len(await entries(redis)) == 5 + 3

    await eventually(three_trades, timeout_s=WAIT_S, what="3 trades after 5 klines")
    await running.finish()
    written = await entries(redis)
    in_order_without_duplicates(written)
    trades = [u for _, u in written[5:]]
    assert [u.kline.time_ms for u in trades] == [T0, T0, T0 + MINUTE]
    assert (trades[1].kline.open, trades[1].kline.close, trades[1].kline.volume) == (2010, 2012, 3)
    assert (trades[2].kline.open, trades[2].price) == (2008, 2008)


async def test_a_dropped_socket_backfills_the_gap_in_order_then_follows_live_again(
    redis: Redis, standin: StandinExchange
) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 3 * MINUTE, 3)
    clock = Clock(T0 + 5_000)
    running = await start(redis, bots("ETH-USDT"), settings(standin, quiet_check_s=60.0), clock)
    await standin.wait_subscribed(1)
    await standin.push_trade("ETHUSDT", 10, T0 + 6_000, "2000", "1")

    async def one_trade() -> bool:
        return len(await entries(redis)) == 4

    await eventually(one_trade, timeout_s=WAIT_S, what="a trade after 3 klines")

    async def idle() -> bool:  # the REST fill after the first socket batch is done
        return len(standin.paths("/api/v3/aggTrades")) == 3

    await eventually(idle, timeout_s=WAIT_S, what="the REST fill after the first socket batch")
    # The market goes on without the socket telling (trades of T0 the source never saw, two
    # whole periods, a trade of the current one), then the socket drops.
    standin.add_trade("ETHUSDT", 11, T0 + 40_000, "2004", "1")
    standin.add_kline("ETHUSDT", T0, "2000", "2006", "1998", "2004", "2")
    standin.add_kline("ETHUSDT", T0 + MINUTE, "2004", "2005", "2001", "2002", "7")
    standin.add_kline("ETHUSDT", T0 + 2 * MINUTE, "2002", "2002", "1990", "1995", "3")
    standin.add_trade("ETHUSDT", 40, T0 + 3 * MINUTE + 1_000, "1996", "0.5")
    clock.now_ms = standin.now_ms = T0 + 3 * MINUTE + 2_000
    standin.fail_next("/api/v3/klines", 503)  # the first catch-up fails too
    await standin.drop_sockets()
    await standin.wait_subscribed(2)
    await standin.push_trade("ETHUSDT", 41, T0 + 3 * MINUTE + 3_000, "1997", "0.5")

    async def resumed() -> bool:
        return len(await entries(redis)) == 4 + 3 + 2

    await eventually(
        resumed, timeout_s=WAIT_S, what="the gap backfilled and the live trade after it"
    )
    await running.finish()
    written = await entries(redis)
    in_order_without_duplicates(written)
    tail = [src.rpartition(":")[2] for src, _ in written[3:]]
    # The kline the dropped trade had started is replaced by the exchange's whole kline.
    assert tail == ["t10", f"k{T0}", f"k{T0 + MINUTE}", f"k{T0 + 2 * MINUTE}", "t40", "t41"]
    completed = written[4][1]
    assert (completed.kline.close, completed.kline.volume, completed.time_ms) == (
        2004,
        2,
        T0 + MINUTE - 1,
    )
    assert written[-1][1].kline.open == 1996 and written[-1][1].kline.volume == 1.0
    assert any(kind == "network" for kind, _ in running.follower.delays)


async def test_a_restart_after_a_gap_backfills_only_what_is_missing(
    redis: Redis, standin: StandinExchange
) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 10 * MINUTE, 16)
    clock = Clock(T0 + 1_000)
    running = await start(redis, bots("ETH-USDT", history=10), settings(standin), clock)

    async def ten() -> bool:
        return len(await entries(redis)) == 10

    await eventually(ten, timeout_s=WAIT_S, what="10 klines")
    await running.finish()
    clock.now_ms = standin.now_ms = T0 + 5 * MINUTE + 1_000  # down for five periods
    running = await start(redis, bots("ETH-USDT", history=10), settings(standin), clock)

    async def fifteen() -> bool:
        return len(await entries(redis)) == 15

    await eventually(fifteen, timeout_s=WAIT_S, what="15 klines after the restart")
    await running.finish()
    written = await entries(redis)
    in_order_without_duplicates(written)
    assert [u.kline.time_ms for _, u in written] == [T0 + n * MINUTE for n in range(-10, 5)]
    since = [int(p["startTime"]) for p in standin.paths("/api/v3/klines")]
    assert since == [T0 - 10 * MINUTE, T0]


async def test_malformed_and_out_of_order_candles_are_rejected_counted_and_not_written(
    redis: Redis, standin: StandinExchange, caplog: pytest.LogCaptureFixture
) -> None:
    def row(open_ms: int, o: Any, h: Any, lo: Any, c: Any) -> list[Any]:
        return [open_ms, o, h, lo, c, "1.0", open_ms + MINUTE - 1, "0", 1, "0", "0", "0"]

    first = T0 - 6 * MINUTE
    standin.raw_klines.append(
        [
            row(first + 2 * MINUTE, "10", "11", "9", "10"),  # out of order: CCXT sorts the page
            row(first, "10", "11", "9", "10.5"),
            row(first + MINUTE, "abc", "11", "9", "10"),  # open is not a number
            row(first + 2 * MINUTE, "10", "12", "9", "11"),  # the same period again
            row(first + 3 * MINUTE + 7, "10", "11", "9", "10"),  # off the minute
            row(first + 4 * MINUTE, "10", "9.5", "9", "10"),  # high below open and close
            row(first + 5 * MINUTE, "10", "11", "9", "10"),
        ]
    )
    before = {
        reason: metric(
            "bandwagon_ingest_rejected_total", stream="binance.ETH-USDT.1m", reason=reason
        )
        for reason in (NOT_A_NUMBER, ROW_TIME_NOT_INCREASING, ROW_TIME_OFF_PERIOD)
    }
    with caplog.at_level(logging.WARNING, logger="services.ingest"):
        running = await start(redis, bots("ETH-USDT", history=6), settings(standin), Clock(T0 + 1))

        async def written_three() -> bool:
            return len(await entries(redis)) == 3 and bool(standin.paths("/api/v3/aggTrades"))

        await eventually(
            written_three, timeout_s=WAIT_S, what="3 klines written and trades asked for"
        )
        await running.finish()
    written = await entries(redis)
    assert [u.kline.time_ms for _, u in written] == [first, first + 2 * MINUTE, first + 5 * MINUTE]
    assert written[1][1].kline.close == 10  # the first of the two candles of that minute
    for reason in before:
        after = metric(
            "bandwagon_ingest_rejected_total", stream="binance.ETH-USDT.1m", reason=reason
        )
        assert after - before[reason] == 1, reason
    rejected = [r for r in caplog.records if "market row rejected" in r.getMessage()]
    assert len(rejected) == 4
    assert "ccxt:binance:ETH/USDT line k" in rejected[0].getMessage()


async def test_http_429_backs_off_longer_and_the_backfill_completes(
    redis: Redis, standin: StandinExchange
) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 20 * MINUTE, 20)
    standin.fail_next("/api/v3/klines", 429, count=2)
    before = metric(
        "bandwagon_ingest_exchange_errors_total", stream="binance.ETH-USDT.1m", kind="rate_limited"
    )
    chosen = settings(standin, backoff_first_s=0.02, rate_limit_factor=4.0)
    running = await start(redis, bots("ETH-USDT", history=20), chosen, Clock(T0 + 1))

    async def twenty() -> bool:
        return len(await entries(redis)) == 20

    await eventually(twenty, timeout_s=WAIT_S, what="20 klines after two 429s")
    await running.finish()
    delays = running.follower.delays
    assert [kind for kind, _ in delays] == ["rate_limited", "rate_limited"]
    assert delays[0][1] >= 0.02 * 4 / 2  # a rate limit waits rate_limit_factor times longer
    assert len(standin.paths("/api/v3/klines")) == 3
    after = metric(
        "bandwagon_ingest_exchange_errors_total", stream="binance.ETH-USDT.1m", kind="rate_limited"
    )
    assert after - before == 2
    in_order_without_duplicates(await entries(redis))


async def test_no_word_from_the_exchange_for_three_periods_is_stale_until_it_answers(
    redis: Redis, standin: StandinExchange
) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 3 * MINUTE, 3)
    clock = Clock(T0 + 1)
    health = Health("ingest")
    running = await start(redis, bots("ETH-USDT"), settings(standin), clock, health)
    await standin.wait_subscribed(1)

    async def fresh() -> bool:
        return health.checks.get(FRESH_CHECK) is True

    await eventually(fresh, timeout_s=WAIT_S, what="the source fresh")
    standin.fail_next("/api/v3/aggTrades", 500, count=10**6)
    standin.fail_next("/api/v3/klines", 500, count=10**6)
    await standin.drop_sockets()
    clock.now_ms += 3 * MINUTE + 1

    async def stale() -> bool:
        return health.checks.get(FRESH_CHECK) is False

    await eventually(stale, timeout_s=WAIT_S, what="the source stale")
    assert metric("bandwagon_ingest_stale", stream="binance.ETH-USDT.1m") == 1
    assert health.ready is False
    standin.faults.clear()
    await eventually(fresh, timeout_s=WAIT_S, what="the source fresh again")
    assert metric("bandwagon_ingest_stale", stream="binance.ETH-USDT.1m") == 0
    await running.finish()


async def test_without_websockets_trades_are_polled(redis: Redis, standin: StandinExchange) -> None:
    fill_klines(standin, "ETHUSDT", T0 - 2 * MINUTE, 2)
    running = await start(
        redis, bots("ETH-USDT"), settings(standin, websocket=False), Clock(T0 + 20_000)
    )

    async def backfilled() -> bool:
        return len(await entries(redis)) == 2

    await eventually(backfilled, timeout_s=WAIT_S, what="2 klines")
    standin.add_trade("ETHUSDT", 7, T0 + 15_000, "2001", "1")
    standin.add_trade("ETHUSDT", 8, T0 + 16_000, "2002", "1")

    async def polled() -> bool:
        return len(await entries(redis)) == 4

    await eventually(polled, timeout_s=WAIT_S, what="2 polled trades")
    await running.finish()
    assert standin.subscribe_count == 0
    assert [src.rpartition(":")[2] for src, _ in await entries(redis)][2:] == ["t7", "t8"]


async def test_an_unknown_symbol_stops_the_start_naming_close_matches(
    standin: StandinExchange,
) -> None:
    ingest = CcxtIngest(
        bots("ETH-USDT", "ETH-USDX"),
        watched_streams(bots("ETH-USDT", "ETH-USDX")),
        settings(standin),
        Health("ingest"),
    )
    with pytest.raises(ConfigError) as raised:
        await ingest.open(asyncio.Event())
    message = str(raised.value)
    assert message.startswith("config error: bots[0].symbols[1].product_id: ETH-USDX: binance")
    assert "close matches: ETH-USDT" in message


async def test_bandwagon_ingest_exits_78_on_an_unknown_symbol(
    standin: StandinExchange, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "bots.yaml"
    symbols = [{"product_id": "ETH-UDST", "min_size": "0.0001", "price_decimals": 2}]
    config.write_text(
        yaml.safe_dump({"bots": [{"id": "live", "exchange": "binance", "symbols": symbols}]})
    )
    env = {
        **os.environ,
        "BANDWAGON_CONFIG": str(config),
        "REDIS_URL": redis_server.url,
        "HEALTH_PORT": "0",
        "BANDWAGON_CCXT_URLS": __import__("json").dumps({"binance": standin.urls()}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "ingest",
        "--source",
        "ccxt",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78
    last_line = stderr.decode().strip().splitlines()[-1]
    assert last_line.startswith("config error: bots[0].symbols[0].product_id: ETH-UDST: binance")
    assert "ETH-USDT" in last_line


async def test_one_process_follows_a_hundred_symbols(
    redis: Redis, standin: StandinExchange
) -> None:
    products = [f"C{n:03d}-USDT" for n in range(100)]
    standin.markets.extend(StandinMarket(p.split("-")[0], "USDT") for p in products)
    for product in products:
        fill_klines(standin, product.replace("-", ""), T0 - 30 * MINUTE, 30)
    config = BotsFile.model_validate(
        {
            "bots": [
                {
                    "id": f"b{n}",
                    "exchange": "binance",
                    "kline_history": 30,
                    "symbols": [
                        {"product_id": p, "min_size": "0.0001", "price_decimals": 2}
                        for p in products[n * 50 : n * 50 + 50]
                    ],
                }
                for n in range(2)
            ]
        }
    )
    running = await start(redis, config, settings(standin, quiet_check_s=5.0), Clock(T0 + 1))
    await standin.wait_subscribed(100, timeout_s=60)
    for n, product in enumerate(products):
        await standin.push_trade(product.replace("-", ""), 1, T0 + 100 + n, "2000", "1")

    async def everything() -> bool:
        counts = [await redis.xlen(f"bw:market:{{binance.{p}.1m}}") for p in products]
        return all(count == 31 for count in counts)

    await eventually(everything, timeout_s=90, what="31 entries in each of 100 streams")
    await running.finish()


async def test_one_process_follows_two_exchanges_each_from_its_own_stand_in(
    redis: Redis, standin: StandinExchange
) -> None:
    """`binance` and `binanceus` (CCXT's subclass of `binance`: the same API at other URLs),
    each pointed at its own stand-in, with prices and terms that differ per exchange."""
    us = StandinExchange(
        markets=[
            StandinMarket(
                "ETH", "USDT", tick_size="0.10000000", step_size="0.00100000", min_qty="0.00100000"
            )
        ],
        now_ms=standin.now_ms,
    )
    await us.start()
    first = T0 - 10 * MINUTE
    for exchange, market_id, base in (
        (standin, "ETHUSDT", 2000),
        (standin, "BTCUSDT", 40000),
        (us, "ETHUSDT", 3000),
    ):
        for n in range(10):
            price = base + n
            o, h, lo, c = (f"{price + d}" for d in (0, 3, -2, 1))
            exchange.add_kline(market_id, first + n * MINUTE, o, h, lo, c, "4")
    config = BotsFile.model_validate(
        {
            "bots": [
                {
                    "id": "a",
                    "exchange": "binance",
                    "kline_history": 10,
                    "symbols": [{"product_id": "ETH-USDT"}, {"product_id": "BTC-USDT"}],
                },
                {
                    "id": "b",
                    "exchange": "binanceus",
                    "kline_history": 10,
                    "symbols": [{"product_id": "ETH-USDT"}],
                },
            ]
        }
    )
    # (exchange, product): (its klines' first open price, the price of its live trade)
    streams = {
        ("binance", "ETH-USDT"): (2000, 2100),
        ("binance", "BTC-USDT"): (40000, 40100),
        ("binanceus", "ETH-USDT"): (3000, 3100),
    }
    urls = {"binance": standin.urls(), "binanceus": us.urls()}
    chosen = settings(standin, urls=urls, quiet_check_s=60.0)  # live trades by websocket only
    try:
        running = await start(redis, config, chosen, Clock(T0 + 1_000))
        assert sorted(running.ingest.exchanges) == ["binance", "binanceus"]

        async def backfilled() -> bool:
            counts = [await redis.xlen(f"bw:market:{{{e}.{p}.1m}}") for e, p in streams]
            return counts == [10, 10, 10]

        await eventually(backfilled, timeout_s=WAIT_S, what="10 klines in each stream")
        await standin.wait_subscribed(2)
        await us.wait_subscribed(1)
        # The same trade id on both exchanges: each is its exchange's own trade.
        await us.push_trade("ETHUSDT", 7, T0 + 2_000, "3100", "1")

        async def us_trade() -> bool:
            return await redis.xlen("bw:market:{binanceus.ETH-USDT.1m}") == 11

        await eventually(us_trade, timeout_s=WAIT_S, what="the binanceus trade")
        await standin.push_trade("ETHUSDT", 7, T0 + 3_000, "2100", "2")
        await standin.push_trade("BTCUSDT", 8, T0 + 4_000, "40100", "0.5")

        async def binance_trades() -> bool:
            counts = [
                await redis.xlen(f"bw:market:{{binance.{p}.1m}}") for p in ("ETH-USDT", "BTC-USDT")
            ]
            return counts == [11, 11]

        await eventually(binance_trades, timeout_s=WAIT_S, what="the 2 binance trades")
        await running.finish()
    finally:
        await us.stop()

    for (exchange_id, product), (base, traded) in streams.items():
        written = await entries(redis, f"bw:market:{{{exchange_id}.{product}.1m}}")
        in_order_without_duplicates(written)
        symbol = product.replace("-", "/")
        klines, live = written[:10], written[10:]
        assert [src for src, _ in klines] == [
            f"ccxt:{exchange_id}:{symbol}:k{first + n * MINUTE}" for n in range(10)
        ]
        assert [u.kline.close for _, u in klines] == [base + n + 1 for n in range(10)]
        assert len(live) == 1 and live[0][0].startswith(f"ccxt:{exchange_id}:{symbol}:t")
        assert live[0][1].price == traded

    assert await redis.hgetall("bw:terms:{binance.ETH-USDT}") == {
        "min_size": "0.0001",
        "price_decimals": "2",
        "updated_ms": ANY,
    }
    assert await redis.hgetall("bw:terms:{binanceus.ETH-USDT}") == {
        "min_size": "0.001",
        "price_decimals": "1",
        "updated_ms": ANY,
    }
    assert await redis.hget("bw:terms:{binance.BTC-USDT}", "min_size") == "0.00001"
    assert not await redis.exists("bw:terms:{binanceus.BTC-USDT}")

    def symbols(exchange: StandinExchange, path: str) -> list[str]:
        return sorted(query["symbol"] for query in exchange.paths(path))

    # One markets load and one klines page per stream, each from its own exchange.
    assert len(standin.paths("/api/v3/exchangeInfo")) == len(us.paths("/api/v3/exchangeInfo")) == 1
    assert symbols(standin, "/api/v3/klines") == ["BTCUSDT", "ETHUSDT"]
    assert symbols(us, "/api/v3/klines") == ["ETHUSDT"]
    assert set(symbols(standin, "/api/v3/aggTrades")) == {"BTCUSDT", "ETHUSDT"}
    assert set(symbols(us, "/api/v3/aggTrades")) == {"ETHUSDT"}
    assert (standin.subscribe_count, us.subscribe_count) == (2, 1)
