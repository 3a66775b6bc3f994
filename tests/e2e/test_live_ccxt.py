"""Paper trading on live exchange prices through the whole stack, with no internet (issue 8).

The four services run as processes; ingest follows the local Binance stand-in
(`tests/integration/exchange_standin.py`) with `--source ccxt`, CCXT pointed at it through
`BANDWAGON_CCXT_URLS`; a websocket client written from SPEC section 2 watches the bot. The
stand-in keeps wall-clock time, as ingest uses the clock to know which kline is forming: it holds
60 closed 1m klines before now (the backfill), and the test makes live trades at the current time.

The bots file leaves out `min_size` and `price_decimals`: the ccxt source stores the exchange's
terms in `bw:terms:{binance.ETH-USDT}`, the accounting worker freezes them with the bot's state
(SPEC 4.1 rule 6), and from then on they are what the bot trades and the client sees, even after
the exchange changes them.

The stand-in runs its own event loop in a thread, so that the blocking service helpers
(`wait_ready`, `stop`) never stall the exchange that ingest is talking to.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import orjson
import pytest
import websockets
from redis.asyncio import Redis

from libs.config import MarketTerms, load_bots
from libs.core.market import Kline, MarketUpdate
from libs.store import keys
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.status import InitMessage, RefreshMessage
from tests.e2e.services import Deployment
from tests.integration.exchange_standin import MINUTE, StandinExchange, StandinMarket
from tests.support.polling import eventually

API_KEY = "live-ccxt-test-key-0123456789"
BOT = "live"
PRODUCT = "ETH-USDT"
MARKET_ID = "ETHUSDT"
TERMS_KEY = keys.market_terms("binance", PRODUCT)
BACKFILL = 60
WAIT_S = 30.0  # for what ingest and accounting write
# The exchange's terms, chosen apart from the documentation's examples: an amount step of
# 0.0001 (min_size "0.0001") and a price tick of 0.001 (3 price decimals).
STEP_SIZE, TICK_SIZE = "0.00010000", "0.00100000"
MIN_SIZE, PRICE_DECIMALS = "0.0001", 3
CHANGED_STEP_SIZE, CHANGED_MIN_SIZE = "0.00100000", "0.001"

# No min_size, no price_decimals: the exchange supplies them.
BOTS_YAML = f"""
bots:
  - id: {BOT}
    exchange: binance
    refresh_interval_ms: 100
    kline_history: 100
    symbols:
      - {{product_id: {PRODUCT}, leverage: 10}}
"""

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


class ThreadedStandin:
    """The stand-in exchange served by an event loop of its own, in a thread; every access to
    its data goes through that loop."""

    def __init__(self, exchange: StandinExchange) -> None:
        self.exchange = exchange
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="standin", daemon=True)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def do(self, change: Callable[[StandinExchange], T]) -> T:
        async def run() -> T:
            return change(self.exchange)

        return self.call(run())

    def start(self) -> None:
        self.thread.start()
        self.call(self.exchange.start())

    def stop(self) -> None:
        self.call(self.exchange.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def urls_env(self) -> str:
        return json.dumps({"binance": self.exchange.urls()})

    async def trade(self, trade_id: int, price: str, amount: str) -> int:
        """A trade now, pushed to the subscribed sockets; the minute's kline follows it, as the
        exchange's klines would. Returns its time."""
        now_ms = wall_ms()

        async def run() -> None:
            exchange = self.exchange
            exchange.now_ms = now_ms
            await exchange.push_trade(MARKET_ID, trade_id, now_ms, price, amount)
            open_ms = now_ms - now_ms % MINUTE
            mine = [t for t in exchange.trades[MARKET_ID] if t["T"] >= open_ms]
            prices = [t["p"] for t in mine]
            volume = sum(float(t["q"]) for t in mine)
            exchange.add_kline(
                MARKET_ID,
                open_ms,
                prices[0],
                max(prices, key=float),
                min(prices, key=float),
                prices[-1],
                f"{volume}",
            )

        await asyncio.to_thread(self.call, run())
        return now_ms


def wall_ms() -> int:
    return int(time.time() * 1000)


def backfill_klines(current_open_ms: int) -> list[list[Any]]:
    """60 closed klines before the current minute, as the exchange sends them (strings), with a
    swing and a slump that make the strategy trade."""
    rows = []
    for n in range(BACKFILL):
        base = 2000 + 25 * math.sin(n / 3.0) + (-60 if 35 <= n < 38 else 0)
        base += 50 if 48 <= n < 50 else 0
        close = round(base + 1.2345 * (n % 3), 3)
        open_ = round(base - 0.5, 3)
        high = round(max(open_, close) + 1.5, 3)
        low = round(min(open_, close) - 1.75, 3)
        open_ms = current_open_ms - (BACKFILL - n) * MINUTE
        rows.append([open_ms, f"{open_:.3f}", f"{high:.3f}", f"{low:.3f}", f"{close:.3f}", "12.5"])
    return rows


def expected_trades(config_path: Any, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """What the pure core trades on the backfilled klines, with the exchange's terms: each row
    one update at its close time, priced at its close (SPEC 3.1 rule 1)."""
    bot = load_bots(config_path).bots[0]
    bot = bot.with_market_terms(
        {PRODUCT: MarketTerms(min_size=MIN_SIZE, price_decimals=PRICE_DECIMALS)}
    )
    strategy = new_symbol_strategy(bot, 0)
    trades = []
    for open_ms, o, h, lo, c, v in rows:
        kline = Kline(open_ms, float(o), float(h), float(lo), float(c), float(v))
        update = MarketUpdate(time_ms=open_ms + MINUTE - 1, price=kline.close, kline=kline)
        trades += [trade_wire(fill, PRICE_DECIMALS) for fill in strategy.on_update(update).fills]
    return trades


async def receive(ws: websockets.ClientConnection, timeout_s: float = 30.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


class Client:
    """`init`, then every refresh applied in order (SPEC 2.1 rules 8 and 12)."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.state: dict[str, Any] = {}
        self.last: dict[str, Any] = {}

    async def init(self) -> dict[str, Any]:
        await self.ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
        init = await receive(self.ws)
        InitMessage.model_validate(init)
        self.state = orjson.loads(orjson.dumps(init))
        return init

    @property
    def symbol(self) -> dict[str, Any]:
        symbol: dict[str, Any] = self.state["symbols"][0]
        return symbol

    async def next_refresh(self) -> dict[str, Any]:
        refresh = await receive(self.ws)
        RefreshMessage.model_validate(refresh)
        assert refresh["epoch"] == self.state["epoch"]
        assert refresh["seq"] == self.state["seq"] + 1, "every seq, once, in order"
        self.state["seq"] = refresh["seq"]
        self.state["status"].update(refresh["data"]["status"])
        (theirs,) = refresh["data"]["symbols"]
        mine = self.symbol
        klines = {k["period_id"]: k for k in mine["klines"]}
        klines.update({k["period_id"]: k for k in theirs["klines"]})
        trades = {t["order_id"]: t for t in mine["trades"]}
        trades.update({t["order_id"]: t for t in theirs["trades"]})
        mine.update({k: v for k, v in theirs.items() if k not in ("klines", "trades")})
        mine["klines"] = sorted(klines.values(), key=lambda k: k["time"])[-100:]
        mine["trades"] = sorted(trades.values(), key=lambda t: t["order_id"])
        self.last = refresh
        return refresh

    async def refresh_until(self, done: Callable[[], bool], what: str) -> None:
        while not done():
            try:
                await self.next_refresh()
            except TimeoutError:
                raise AssertionError(f"no refresh in 30 s; waiting for {what}") from None


def log_lines(deployment: Deployment, name: str) -> list[dict[str, Any]]:
    lines = []
    for text in deployment.services[name].log().splitlines():
        if text.startswith("{"):
            lines.append(orjson.loads(text))
    return lines


@pytest.fixture
def standin() -> Iterator[ThreadedStandin]:
    market = StandinMarket("ETH", "USDT", tick_size=TICK_SIZE, step_size=STEP_SIZE)
    market.min_qty = STEP_SIZE
    threaded = ThreadedStandin(StandinExchange(markets=[market], now_ms=wall_ms()))
    threaded.start()
    yield threaded
    threaded.stop()


async def test_paper_trading_on_live_exchange_prices_with_the_exchanges_market_terms(
    standin: ThreadedStandin, deployment: Deployment, redis: Redis
) -> None:
    configured = load_bots(deployment.config_path).bots[0].symbols[0]
    assert (configured.min_size, configured.price_decimals) == (None, None)

    # The exchange: 60 closed klines before the current minute, the clock at now.
    now_ms = wall_ms()
    rows = backfill_klines(now_ms - now_ms % MINUTE)

    def fill(exchange: StandinExchange) -> None:
        exchange.now_ms = now_ms
        for row in rows:
            exchange.add_kline(MARKET_ID, *row[:6])

    standin.do(fill)
    expected = expected_trades(deployment.config_path, rows)
    assert expected, "the backfill makes the strategy trade"

    ccxt_env = {"BANDWAGON_CCXT_URLS": standin.urls_env()}
    deployment.start("ingest", "--source=ccxt", **ccxt_env)
    await asyncio.to_thread(deployment.wait_ready, "ingest")

    # 3. The source stores the exchange's terms per market ...
    async def terms_stored() -> bool:
        return bool(await redis.exists(TERMS_KEY))

    await eventually(
        terms_stored, timeout_s=WAIT_S, poll_s=0.05, what=f"{TERMS_KEY} written by ingest"
    )
    terms = await redis.hgetall(TERMS_KEY)
    assert (terms["min_size"], terms["price_decimals"]) == (MIN_SIZE, str(PRICE_DECIMALS))

    for name in ("accounting", "strategy", "gateway"):
        deployment.start(name)
    await asyncio.to_thread(deployment.wait_ready, "accounting", "strategy", "gateway")

    # ... and the accounting worker froze them with the bot's state.
    async def state_created() -> bool:
        return bool(await redis.hexists(keys.meta(BOT), "config"))

    await eventually(state_created, timeout_s=WAIT_S, poll_s=0.05, what="the bot's state")
    frozen_text = await redis.hget(keys.meta(BOT), "config")
    assert isinstance(frozen_text, str)
    (frozen_symbol,) = orjson.loads(frozen_text)["symbols"]
    assert (frozen_symbol["min_size"], frozen_symbol["price_decimals"]) == (
        MIN_SIZE,
        PRICE_DECIMALS,
    )

    async with websockets.connect(deployment.ws_url, max_size=2**26) as ws:
        client = Client(ws)
        init = await client.init()
        # 1. The client sees the exchange's min_size on the bot's symbol.
        (symbol,) = init["symbols"]
        assert symbol["min_size"] == MIN_SIZE
        assert symbol["normalized"] == f"binance.{PRODUCT}"
        assert init["status"]["exchange"] == "binance"

        # 2. The backfill reaches the client: every kline the exchange served, and the trades
        # the pure core makes of them, sized and priced with the exchange's terms.
        last_close_ms = rows[-1][0] + MINUTE - 1
        await client.refresh_until(
            lambda: (
                bool(client.symbol["klines"])
                and client.symbol["klines"][-1]["close_time"] >= last_close_ms
                and len(client.symbol["trades"]) >= len(expected)
            ),
            "the backfilled klines and their trades",
        )
        klines = client.symbol["klines"]
        assert len(klines) == BACKFILL
        assert [k["time"] for k in klines] == [row[0] for row in rows]
        assert [k["close"] for k in klines] == [float(row[4]) for row in rows]
        assert [(k["open"], k["high"], k["low"], k["volume"]) for k in klines[-3:]] == [
            (float(row[1]), float(row[2]), float(row[3]), float(row[5])) for row in rows[-3:]
        ]
        assert client.symbol["price"] == float(rows[-1][4])
        assert client.symbol["trades"] == expected
        for trade in client.symbol["trades"]:
            assert re.fullmatch(r"\d+\.\d{4}", trade["size"]), trade  # min_size's decimals
            assert re.fullmatch(r"\d+\.\d{3}", trade["price"]), trade  # price_decimals 3

        # A live trade after connecting: the socket brings it, and a later refresh carries the
        # forming kline it made and the price.
        await asyncio.to_thread(standin.call, standin.exchange.wait_subscribed(1, 30))
        trade_ms = await standin.trade(1001, "2012.345", "0.5")
        open_ms = trade_ms - trade_ms % MINUTE

        def forming_seen() -> bool:
            return any(
                k["time"] == open_ms and k["close"] == 2012.345
                for s in client.last.get("data", {}).get("symbols", [])
                for k in s["klines"]
            )

        await client.refresh_until(forming_seen, "the live trade's forming kline")
        (refreshed,) = client.last["data"]["symbols"]
        assert refreshed["price"] == 2012.345
        forming = next(k for k in refreshed["klines"] if k["time"] == open_ms)
        assert forming["period_id"] == f"m{open_ms // MINUTE}"
        assert forming["close_time"] == open_ms + MINUTE - 1
        assert (forming["open"], forming["high"], forming["low"], forming["close"]) == (
            2012.345,
            2012.345,
            2012.345,
            2012.345,
        )
        assert forming["volume"] == 0.5
        assert refreshed["min_size"] == MIN_SIZE

        # 4. The exchange changes its amount step; a restarted ingest stores the new terms and
        # warns that the bot's frozen ones stay, and the client still trades with the old ones.
        assert await asyncio.to_thread(deployment.services["ingest"].stop) == 0
        subscribed = standin.do(lambda exchange: exchange.subscribe_count)

        def change_step(exchange: StandinExchange) -> None:
            exchange.markets[0].step_size = CHANGED_STEP_SIZE
            exchange.markets[0].min_qty = CHANGED_STEP_SIZE

        standin.do(change_step)
        deployment.start("ingest", "--source=ccxt", **ccxt_env)
        await asyncio.to_thread(deployment.wait_ready, "ingest")

        async def terms_changed() -> bool:
            return bool(await redis.hget(TERMS_KEY, "min_size") == CHANGED_MIN_SIZE)

        await eventually(
            terms_changed, timeout_s=WAIT_S, poll_s=0.05, what="the exchange's new min_size stored"
        )

        async def warned() -> bool:
            return any(
                line["level"] == "WARNING"
                and f"changed {PRODUCT}: min_size {MIN_SIZE} (now {CHANGED_MIN_SIZE})"
                in line["msg"]
                and "the frozen value stays" in line["msg"]
                for line in log_lines(deployment, "ingest")
            )

        await eventually(
            warned,
            timeout_s=WAIT_S,
            poll_s=0.05,
            what="ingest's warning that the frozen min_size stays",
        )
        assert await redis.hget(keys.meta(BOT), "config") == frozen_text

        await asyncio.to_thread(standin.call, standin.exchange.wait_subscribed(subscribed + 1, 30))
        await standin.trade(1002, "2013.5", "0.25")
        await client.refresh_until(
            lambda: client.symbol["price"] == 2013.5, "the trade after the restart"
        )
        assert client.symbol["min_size"] == MIN_SIZE

    async with websockets.connect(deployment.ws_url, max_size=2**26) as ws:
        fresh = await Client(ws).init()
    assert fresh["symbols"][0]["min_size"] == MIN_SIZE
    assert fresh["symbols"][0]["price"] == 2013.5

    # Ingest leaves while the exchange still answers (the fixture stops the rest).
    assert await asyncio.to_thread(deployment.services["ingest"].stop) == 0
    for name in deployment.services:
        errors = [line for line in log_lines(deployment, name) if line["level"] == "ERROR"]
        assert not errors, (name, errors[:3])
