"""A plug-in that fails halts its own (bot, symbol) before the failing update, and nothing else
(SPEC 3.2 rule 9): the checkpoint stays before it, the failure is logged at ERROR, counted by
`bandwagon_strategy_errors_total{bot}` and named by strategy `/readyz`; another bot on the same
stream trades on; a restart with the plug-in fixed resumes from that update, so the result is as
if it had never failed. The backtest stops at the same update, exit status 1.

The worker runs in-process on a real redis-server; the plug-in is a module written to a temp
directory on `sys.path`, rewritten to "fix" it, as a user would redeploy theirs.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from libs.config import BotConfig
from libs.core.market import MarketUpdate
from libs.errors import ConfigError
from libs.ops.health import Health
from libs.store import keys
from libs.store.bot_state import ensure_state
from libs.store.client import worker_redis
from libs.store.leases import LeaseKeeper
from libs.store.partitions import strategy_partitions
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.market import encode_update
from services.strategy.worker import StrategyWorker, halted_check
from tests.integration.test_pipeline import KLINES, klines_updates
from tools.run.redis_server import RedisServer

CLI = (sys.executable, "-m", "tools.cli")
PRODUCT_ID = "ALT-BTC"
UPDATES = klines_updates(600)
FAIL_AT = 300  # the update whose window makes the broken plug-in raise
MODULE = "flaky_strategy"

pytestmark = pytest.mark.timeout(60)


def plugin_source(fail_at_ms: int | None, default_period: int = 20) -> str:
    """Bollinger under another name, raising on the window whose forming kline opens at
    `fail_at_ms` (None: the fixed version)."""
    return textwrap.dedent(
        f"""\
        from pydantic import BaseModel

        from libs.core.strategies import BollingerBands, Strategy

        FAIL_AT_MS = {fail_at_ms!r}


        class Flaky(Strategy):
            name = "Flaky"
            indicators = BollingerBands.indicators

            class Params(BaseModel):
                period: int = {default_period}

            def __init__(self, params):
                self.bands = BollingerBands(params.period)
                self.window = self.bands.window

            def evaluate(self, klines):
                if int(klines.time[-1]) == FAIL_AT_MS:
                    raise ZeroDivisionError("the plug-in's bug")
                return self.bands.evaluate(klines)
        """
    )


def bot(bot_id: str, name: str) -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": bot_id,
            "api_key_env": f"{bot_id.upper()}_KEY",
            "exchange": "binance",
            "start_capital": 1.0,
            "trade_history": 1000,
            "kline_history": 50,
            "strategy": {"name": name, "order_type": "taker"},
            "symbols": [
                {"product_id": PRODUCT_ID, "min_size": "0.01", "price_decimals": 8, "leverage": 3}
            ],
        }
    )


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


def install(directory: Path, fail_at_ms: int | None, default_period: int = 20) -> None:
    """(Re)write the plug-in and forget any imported version, as a redeploy does."""
    (directory / f"{MODULE}.py").write_text(plugin_source(fail_at_ms, default_period))
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    opened: list[Redis] = []
    yield opened
    for client in opened:
        await client.aclose()


def worker(url: str, bots: list[BotConfig], clients: list[Redis]) -> StrategyWorker:
    redis = worker_redis(url)
    clients.append(redis)
    keeper = LeaseKeeper(
        redis, service="strategy", worker_id="strategy", partitions=strategy_partitions(bots)
    )
    return StrategyWorker(redis, bots, keeper, batch_size=100, health=Health("strategy"))


async def ingest(redis: Redis, updates: list[MarketUpdate], first_line: int) -> list[str]:
    stream = keys.market_stream("binance", PRODUCT_ID, "1m")
    async with redis.pipeline(transaction=False) as pipe:
        for line, update in enumerate(updates, start=first_line):
            pipe.xadd(stream, encode_update(update, f"test:{line}"))  # type: ignore[arg-type]
        return [str(entry_id) for entry_id in await pipe.execute()]


async def run_until_idle(running: StrategyWorker) -> None:
    while await running.run_once(block_ms=10):
        pass


async def trades_of(redis: Redis, bot_id: str) -> list[dict[str, object]]:
    events = await redis.xrange(keys.events(bot_id))
    return [trade for _, fields in events for trade in orjson.loads(fields["data"])["trades"]]


def errors_counted(bot_id: str) -> float:
    value = REGISTRY.get_sample_value("bandwagon_strategy_errors_total", {"bot": bot_id})
    return value or 0.0


async def test_a_failing_plug_in_halts_its_symbol_alone_and_a_fixed_one_resumes_exactly(
    redis_server: RedisServer,
    redis: Redis,
    clients: list[Redis],
    plugin_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await redis.flushall()
    install(plugin_dir, UPDATES[FAIL_AT].kline.time_ms)
    flaky, steady = bot("flaky", f"{MODULE}:Flaky"), bot("steady", "BollingerBands")
    errors_before = errors_counted("flaky")
    entry_ids = await ingest(redis, UPDATES[:500], 0)

    broken = worker(redis_server.url, [flaky, steady], clients)
    await broken.load()
    with caplog.at_level(logging.ERROR):
        await run_until_idle(broken)
    halted, going = broken.partitions
    assert halted.bot.id == "flaky" and halted.halted is not None
    assert "ZeroDivisionError: the plug-in's bug" in halted.halted
    assert halted.checkpoint == entry_ids[FAIL_AT - 1]  # just before the failing update
    saved = await redis.hgetall(keys.strategy_state("flaky", PRODUCT_ID))
    assert saved["checkpoint"] == entry_ids[FAIL_AT - 1]
    assert going.halted is None and going.checkpoint == entry_ids[-1]
    assert errors_counted("flaky") == errors_before + 1
    assert broken.health is not None and broken.health.checks[halted_check(halted)] is False
    assert "strategy of flaky ALT-BTC running" in broken.health.report()["checks"]  # type: ignore[operator]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.__dict__["bot"] == "flaky" and record.__dict__["symbol"] == PRODUCT_ID
    assert record.__dict__["update_time_ms"] == UPDATES[FAIL_AT].time_ms
    assert "ZeroDivisionError" in record.getMessage()

    entry_ids += await ingest(redis, UPDATES[500:], 500)  # the market goes on
    await run_until_idle(broken)
    assert broken.partitions[0].checkpoint == entry_ids[FAIL_AT - 1], "halted until a restart"
    assert broken.partitions[1].checkpoint == entry_ids[-1]
    assert errors_counted("flaky") == errors_before + 1, "counted once, not per read"

    install(plugin_dir, None)  # the fixed plug-in, then a restart
    fixed = worker(redis_server.url, [bot("flaky", f"{MODULE}:Flaky"), steady], clients)
    await fixed.load()
    await run_until_idle(fixed)
    assert [p.checkpoint for p in fixed.partitions] == [entry_ids[-1]] * 2
    uninterrupted = new_symbol_strategy(bot("flaky", f"{MODULE}:Flaky"), 0)
    expected = [
        trade_wire(fill, 8) for update in UPDATES for fill in uninterrupted.on_update(update).fills
    ]
    assert expected, "the data trades"
    assert await trades_of(redis, "flaky") == expected  # as if it had never failed
    assert all(str(t["action"]).startswith("Flaky_") for t in expected)


async def test_a_plug_in_s_defaults_are_frozen_with_the_bot_and_a_changed_one_refused(
    redis_server: RedisServer, redis: Redis, clients: list[Redis], plugin_dir: Path
) -> None:
    """The bots file leaves `period` to the plug-in's default: a new version of the plug-in
    with another default must not change the bot's trading silently (SPEC 4.1 rule 6)."""
    await redis.flushall()
    install(plugin_dir, None, default_period=20)
    flaky = bot("flaky", f"{MODULE}:Flaky")
    await ensure_state(redis, flaky, 0)
    first = worker(redis_server.url, [flaky], clients)
    await first.load()
    frozen = await redis.hget(keys.meta("flaky"), "strategy_parameters")
    assert frozen is not None and orjson.loads(frozen) == {"period": 20}

    install(plugin_dir, None, default_period=30)
    later = worker(redis_server.url, [bot("flaky", f"{MODULE}:Flaky")], clients)
    with pytest.raises(ConfigError) as error:
        await later.load()
    assert str(error.value).startswith("config error: bots[flaky].strategy.period: ")


def test_the_backtest_stops_at_the_same_update_with_exit_status_1(
    plugin_dir: Path, tmp_path: Path
) -> None:
    install(plugin_dir, UPDATES[FAIL_AT].kline.time_ms)
    config = tmp_path / "bots.yaml"
    config.write_text(
        "bots:\n  - id: flaky\n    exchange: binance\n    start_capital: 1\n"
        f"    strategy: {{name: '{MODULE}:Flaky', order_type: taker}}\n"
        '    symbols:\n      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8}\n'
    )
    done = subprocess.run(
        [*CLI, "backtest", "--config", str(config), "--klines", str(KLINES), "--quiet"],
        env={**os.environ, "PYTHONPATH": str(plugin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    time_ms = UPDATES[FAIL_AT].time_ms
    assert f"strategy failed at the update of time {time_ms}: ZeroDivisionError" in done.stderr
