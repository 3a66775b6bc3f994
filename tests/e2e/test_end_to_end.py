"""The four services as processes on a replay of real data, watched by a websocket client written
from SPEC section 2 alone: init and refreshes field by field, seq continuity, convergence, and the
status as the fold of the trades the pure core makes on the same data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from libs.config import load_bots
from libs.exchange.market_files import read_market_file
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.status import ErrorMessage, InitMessage, RefreshMessage
from tests.e2e.services import Deployment

DATA = Path(__file__).parents[1] / "data"
FILES = {"ALT-BTC": DATA / "klines-1m-3000.csv", "XRP-ETH": DATA / "trades-2000.csv"}
API_KEY = "e2e-test-key-0123456789"
# SPEC 2.1 rule 11: static flags, all four true once the backtest module exists; `init` only.
CAPABILITIES = {"hasConfig": True, "hasStrategy": True, "hasMarket": True, "hasBacktest": True}

BOTS_YAML = """
bots:
  - id: e2e
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    kline_history: 300
    trade_history: 1000
    strategy: {order_type: maker, order_timeout_ms: 120000, mode: both}
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 3,
         isolated: true, weight: 1}
      - {product_id: XRP-ETH, min_size: "0.1", price_decimals: 8, leverage: 2,
         isolated: false, weight: 3}
"""

pytestmark = pytest.mark.timeout(180)


def expected_trades(config: Path) -> dict[str, list[dict[str, Any]]]:
    """What the pure core makes of the same files: the reference the pipeline must equal."""
    bot = load_bots(config).bots[0]
    trades: dict[str, list[dict[str, Any]]] = {}
    for index, symbol in enumerate(bot.symbols):
        strategy = new_symbol_strategy(bot, index)
        trades[symbol.product_id] = [
            trade_wire(fill, symbol.terms.price_decimals)
            for _, update in read_market_file(FILES[symbol.product_id], bot.period_ms)
            for fill in strategy.on_update(update).fills
        ]
    return trades


def last_updates(config: Path) -> dict[str, tuple[int, float, int]]:
    """(first update time, last price, last update time) of each file."""
    bot = load_bots(config).bots[0]
    result = {}
    for product_id, path in FILES.items():
        updates = [update for _, update in read_market_file(path, bot.period_ms)]
        result[product_id] = (updates[0].time_ms, updates[-1].price, updates[-1].time_ms)
    return result


async def receive(ws: websockets.ClientConnection, timeout_s: float = 20.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


def upsert(state: dict[str, Any], refresh: dict[str, Any], kline_history: int) -> None:
    """SPEC 2.1 rule 12: replace scalars and status, upsert klines and trades, keep the newest."""
    state["seq"] = refresh["seq"]
    state["status"].update(refresh["data"]["status"])
    for mine, theirs in zip(state["symbols"], refresh["data"]["symbols"], strict=True):
        klines = {k["period_id"]: k for k in mine["klines"]}
        klines.update({k["period_id"]: k for k in theirs["klines"]})
        trades = {t["order_id"]: t for t in mine["trades"]}
        trades.update({t["order_id"]: t for t in theirs["trades"]})
        mine.update({k: v for k, v in theirs.items() if k not in ("klines", "trades")})
        mine["klines"] = sorted(klines.values(), key=lambda k: k["time"])[-kline_history:]
        mine["trades"] = sorted(trades.values(), key=lambda t: t["order_id"])


async def test_a_replay_reaches_clients_exactly_as_the_core_trades_it(
    deployment: Deployment,
) -> None:
    deployment.start("accounting")
    deployment.start("gateway")
    deployment.wait_ready("accounting", "gateway")

    async with websockets.connect(deployment.ws_url, max_size=2**26) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
        init = await receive(ws)
        InitMessage.model_validate(init)
        assert init["seq"] == 1 and init["exchange"] == {
            "name": "sim",
            "makerFee": 0.1,
            "takerFee": 0.1,
        }
        assert [s["product_id"] for s in init["symbols"]] == ["ALT-BTC", "XRP-ETH"]
        for symbol in init["symbols"]:  # before any market data (SPEC 2.1 rule 14)
            assert symbol["price"] == 0 and symbol["klines"] == [] and symbol["trades"] == []
            assert symbol["assetCaptial"] == 0 and symbol["dynamicUsdtProfit"] == 0
        assert init["status"]["startTime"] == 0 and init["status"]["currentCapital"] == 1.0
        assert init["status"]["tradeListLen"] == 2
        assert {k: init["status"][k] for k in CAPABILITIES} == CAPABILITIES

        deployment.start("strategy")
        replays = [f"--replay={pid}={path}" for pid, path in FILES.items()]
        deployment.start("ingest", "--source=replay", *replays, "--speed=36000")
        deployment.wait_ready("strategy", "ingest")

        finals = last_updates(deployment.config_path)
        expected = expected_trades(deployment.config_path)
        state = orjson.loads(orjson.dumps(init))
        refreshes: list[dict[str, Any]] = []
        while True:
            refresh = await receive(ws)
            RefreshMessage.model_validate(refresh)
            assert refresh["epoch"] == init["epoch"]
            assert refresh["seq"] == state["seq"] + 1, "every seq, once, in order"
            upsert(state, refresh, kline_history=300)
            refreshes.append(refresh)
            symbols = {s["product_id"]: s for s in state["symbols"]}
            done = all(
                symbols[pid]["price"] == finals[pid][1]
                and len(symbols[pid]["trades"]) == len(expected[pid])
                and symbols[pid]["klines"][-1]["close_time"] >= finals[pid][2]
                for pid in FILES
            )
            if done:
                break

        # a second client's init at the same seq equals the folded refreshes (SPEC 2.1 rule 12)
        async with websockets.connect(deployment.ws_url, max_size=2**26) as second:
            await second.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
            fresh = await receive(second)
        assert fresh["seq"] == state["seq"]
        assert {k: fresh["status"][k] for k in CAPABILITIES} == CAPABILITIES
        assert state == fresh

    for product_id in FILES:
        assert symbols[product_id]["trades"] == expected[product_id], product_id
    check_status_is_the_fold_of_the_trades(state, finals)
    assert len(refreshes) >= 10, "a paced replay is seen as a stream of refreshes"


def check_status_is_the_fold_of_the_trades(
    state: dict[str, Any], finals: dict[str, tuple[int, float, int]]
) -> None:
    status, symbols = state["status"], state["symbols"]
    allocations = {"ALT-BTC": 1.0 * 1 / 4, "XRP-ETH": 1.0 * 3 / 4}
    realized_sum = unrealized_sum = locked_sum = 0.0
    fills = win = lost = 0
    for symbol in symbols:
        trades = symbol["trades"]
        realized = 0.0
        for trade in trades:
            realized += trade["usdtProfit"]
        closed = [t for t in trades if (t["type"] == "sell") == (t["position_side"] == "long")]
        assert symbol["usdtProfit"] == realized
        assert symbol["profit"] == realized / allocations[symbol["product_id"]]
        assert symbol["win"] + symbol["lost"] == len(closed) > 0
        assert symbol["lastTradeTime"] == trades[-1]["time"]
        assert symbol["normalized"] == f"binance.{symbol['product_id']}"
        kline = symbol["klines"][-1]
        assert kline["close_time"] == kline["time"] + 59_999
        assert kline["period_id"] == f"m{kline['time'] // 60_000}"
        assert kline["strategy"]["middle"] is not None
        realized_sum += symbol["usdtProfit"]
        unrealized_sum += symbol["dynamicUsdtProfit"]
        locked_sum += symbol["assetCaptial"] - symbol["dynamicUsdtProfit"]
        fills += len(trades)
        win += symbol["win"]
        lost += symbol["lost"]
    assert status["usdtProfit"] == realized_sum
    assert status["dynamicUsdtProfit"] == unrealized_sum
    assert status["totalCapital"] == 1.0 + status["usdtProfit"] + status["dynamicUsdtProfit"]
    assert status["currentCapital"] == pytest.approx(1.0 + realized_sum - locked_sum, rel=1e-9)
    assert (status["tradeNum"], status["win"], status["lost"]) == (fills, win, lost)
    assert status["winLostRate"] == win / (win + lost)
    assert status["startTime"] == min(first for first, _, _ in finals.values())
    assert status["exchange"] == "binance" and status["status"] == "work"
    assert status["timeZoneOffset"] == 0  # TZ=UTC


async def test_a_wrong_key_is_refused_with_unauthorized_and_4401(deployment: Deployment) -> None:
    deployment.start("accounting")
    deployment.start("gateway")
    deployment.wait_ready("accounting", "gateway")
    async with websockets.connect(deployment.ws_url) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": "not-the-key-at-all"}).decode())
        error = ErrorMessage.model_validate(await receive(ws))
        assert error.code == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "unauthorized")
