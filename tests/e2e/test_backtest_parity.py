"""Parity: the live pipeline (ingest replay at full speed -> strategy -> accounting, as processes on
a real redis-server) and `bandwagon backtest --json` on the same file and bots file end with the
same trades, field by field, the same STATUS and the same SYMBOL scalars.

The accounting's hashes are read with `libs.store.read_snapshot`, exactly what a gateway's `init`
sends. Both sides run with TZ=UTC, so even `timeZoneOffset` must match. Equality is exact, not
within the 1e-9 of SPEC 3.1 rule 16: both sides run the same core, so any difference is a bug.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from libs.config import load_bots
from libs.core.market import Kline
from libs.errors import StateMissing
from libs.exchange.market_files import read_market_file
from libs.store.published import Snapshot, read_snapshot
from tests.e2e.services import REPO, Deployment, backtest_json
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

DATA = REPO / "tests" / "data"
KLINES = DATA / "klines-1m-3000.csv"
TRADES = DATA / "trades-2000.csv"
API_KEY = "parity-test-key-0123456789"
BOT = "parity"


@dataclass(frozen=True)
class Case:
    strategy: str  # the YAML flow mapping of the bot's strategy
    symbols: tuple[str, ...]  # YAML flow mappings, config order
    files: dict[str, tuple[str, Path]]  # product_id -> (--klines or --trades, file)
    actions: tuple[str, ...] = ()  # the action kinds the case must reach (`stopLoss`, `RSI`...)
    plugins: bool = False  # a plug-in of examples/strategies: on PYTHONPATH of both sides


ALT = '{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20, isolated: true}'
XRP = (
    '{product_id: XRP-ETH, min_size: "0.1", price_decimals: 8, leverage: 50, isolated: true,'
    " weight: 3}"
)
XRP_CROSS = (
    '{product_id: XRP-ETH, min_size: "0.1", price_decimals: 8, leverage: 2, isolated: false,'
    " weight: 3}"
)
KLINES_ALT = {"ALT-BTC": ("--klines", KLINES)}

CASES = {
    f"klines-{order_type}-{mode}": Case(
        f"{{order_type: {order_type}, mode: {mode}, buy_pct: 50, order_timeout_ms: 120000}}",
        (ALT,),
        KLINES_ALT,
    )
    for order_type in ("maker", "taker")
    for mode in ("both", "long", "short")
}
CASES["trades-maker-both"] = Case(
    "{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 5000}",
    (XRP,),
    {"XRP-ETH": ("--trades", TRADES)},
)
CASES["two-symbols-taker-both"] = Case(
    "{order_type: taker, mode: both, buy_pct: 50}",
    (ALT, XRP_CROSS),
    {"ALT-BTC": ("--klines", KLINES), "XRP-ETH": ("--trades", TRADES)},
)

# Every strategy kind (SPEC 3.2) and every risk exit (3.3), each reaching its own actions.
STOPS = "stop_loss_pct: 0.3, take_profit_pct: 0.6, trailing_stop_pct: 0.3"
CASES["rsi-taker"] = Case(
    "{name: RSI, order_type: taker, buy_pct: 50}", (ALT,), KLINES_ALT, ("RSI", "liquidation")
)
CASES["macd-maker-all-stops"] = Case(
    f"{{name: MACD, order_type: maker, buy_pct: 50, order_timeout_ms: 120000, {STOPS}}}",
    (ALT,),
    KLINES_ALT,
    ("MACD", "stopLoss", "takeProfit", "trailingStop"),
)
CASES["bollinger-stop-loss"] = Case(
    "{order_type: maker, buy_pct: 50, order_timeout_ms: 120000, stop_loss_pct: 0.3}",
    (ALT,),
    KLINES_ALT,
    ("BollingerBands", "stopLoss"),
)
CASES["bollinger-take-profit"] = Case(
    "{order_type: taker, buy_pct: 50, take_profit_pct: 0.3}",
    (ALT,),
    KLINES_ALT,
    ("BollingerBands", "takeProfit"),
)
CASES["trades-bollinger-trailing-stop"] = Case(
    "{order_type: maker, buy_pct: 50, order_timeout_ms: 5000, trailing_stop_pct: 0.2}",
    (XRP,),
    {"XRP-ETH": ("--trades", TRADES)},
    ("BollingerBands", "trailingStop"),
)
CASES["plugin-donchian-stops"] = Case(
    f"{{name: 'donchian:DonchianBreakout', period: 20, order_type: taker, buy_pct: 50, {STOPS}}}",
    (ALT,),
    KLINES_ALT,
    ("Donchian", "stopLoss"),
    plugins=True,
)
CLASSIC = [name for name, case in CASES.items() if not case.actions]

pytestmark = pytest.mark.timeout(60)


def bots_yaml(case: Case) -> str:
    symbols = "\n".join(f"      - {symbol}" for symbol in case.symbols)
    return (
        textwrap.dedent(
            f"""\
        bots:
          - id: {BOT}
            exchange: binance
            start_capital: 1.0
            refresh_interval_ms: 100
            kline_history: 5
            trade_history: 1000
            strategy: {case.strategy}
            symbols:
        """
        )
        + symbols
        + "\n"
    )


@pytest.fixture
async def deployment(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    deployment = Deployment(
        redis_server.url,
        tmp_path / "bots.yaml",
        tmp_path,
        API_KEY,
        passwords=redis_server.passwords,
    )
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def final_klines(config: Path, case: Case) -> dict[str, Kline]:
    """Each file's last kline as its last update leaves it: once the accounting shows it, every
    update of the file has been applied (a kline's volume only grows, its close is the last)."""
    bot = load_bots(config).bots[0]
    finals = {}
    for product_id, (_, path) in case.files.items():
        *_, (_, last) = read_market_file(path, bot.period_ms)
        finals[product_id] = last.kline
    return finals


def shows(symbol: dict[str, Any], kline: Kline) -> bool:
    if not symbol["klines"]:
        return False
    last = symbol["klines"][-1]
    return (last["time"], last["close"], last["volume"]) == (
        kline.time_ms,
        kline.close,
        kline.volume,
    )


async def settled_snapshot(redis: Redis, config: Path, case: Case, timeout_s: float = 30.0) -> Any:
    finals = final_klines(config, case)

    async def settled() -> Snapshot | None:
        try:
            snapshot = await read_snapshot(redis, BOT)
        except StateMissing:
            return None
        symbols = {symbol["product_id"]: symbol for symbol in snapshot.symbols}
        return snapshot if all(shows(symbols[pid], k) for pid, k in finals.items()) else None

    return await eventually(
        settled, timeout_s=timeout_s, poll_s=0.1, what="the pipeline at the files' last updates"
    )


@pytest.mark.parametrize("name", list(CASES))
async def test_the_backtest_trades_exactly_as_the_live_pipeline(
    name: str,
    deployment: Deployment,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[name]
    if case.plugins:  # what docs/strategies.md tells a deployment to do
        monkeypatch.setenv("PYTHONPATH", str(REPO / "examples" / "strategies"))
    deployment.config_path.write_text(bots_yaml(case))
    deployment.start("accounting")
    deployment.start("strategy")
    replays = [f"--replay={pid}={path}" for pid, (_, path) in case.files.items()]
    deployment.start("ingest", "--source=replay", *replays, "--speed=max")
    deployment.wait_ready("accounting", "strategy", "ingest")

    snapshot = await settled_snapshot(redis, deployment.config_path, case)
    files = [f"{flag}={pid}={path}" for pid, (flag, path) in case.files.items()]
    backtest = backtest_json(deployment.config_path, BOT, files, tmp_path / "backtest.json")

    live_symbols = snapshot.symbols
    assert [s["product_id"] for s in backtest["symbols"]] == [s["product_id"] for s in live_symbols]
    for live, tested in zip(live_symbols, backtest["symbols"], strict=True):
        assert live["trades"], f"{live['product_id']}: the case must make trades"
        assert len(live["trades"]) < 1000, "trade_history holds them all"
        for index, (live_trade, tested_trade) in enumerate(
            zip(live["trades"], tested["trades"], strict=True)
        ):
            assert tested_trade == live_trade, f"{live['product_id']} trade {index}"
        scalars = {field: value for field, value in live.items() if field != "klines"}
        assert tested == scalars, live["product_id"]
    live_trades = sorted(
        (trade for symbol in live_symbols for trade in symbol["trades"]),
        key=lambda trade: (trade["time"], trade["order_id"]),
    )
    assert backtest["trades"] == live_trades
    assert backtest["status"] == snapshot.status
    assert snapshot.status["timeZoneOffset"] == 0 and snapshot.status["tradeNum"] == len(
        live_trades
    )
    if case.actions:
        kinds = {trade["action"].split("_")[0] for trade in live_trades}
        assert set(case.actions) <= kinds, kinds
        return

    mode = "both" if "both" in case.strategy else "long" if "long" in case.strategy else "short"
    sides = {trade["position_side"] for trade in live_trades}
    assert sides == ({"long", "short"} if mode == "both" else {mode}), sides
    # the cases reach the rarer paths too: maker timeouts filled as takers, liquidations
    order_types = {trade["order_type"] for trade in live_trades}
    assert order_types == ({"maker", "taker"} if "maker" in case.strategy else {"taker"})
    if mode != "long":
        assert any(trade["action"].startswith("liquidation_") for trade in live_trades)
