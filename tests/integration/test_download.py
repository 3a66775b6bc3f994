"""`bandwagon download` against the local Binance stand-in: pages, the exact klines CSV that
replay and backtest read, resuming after an interruption, an unknown symbol, HTTP 429."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import ConfigError
from libs.exchange.backoff import BackoffSettings
from libs.exchange.market_files import read_market_file
from tests.integration.exchange_standin import MINUTE, StandinExchange, StandinMarket
from tools.download.main import HEADER, Request, download

DAY_MS = 1_704_067_200_000  # 2024-01-01T00:00Z
FAST = BackoffSettings(backoff_first_s=0.01, backoff_cap_s=0.05)


@pytest.fixture
async def standin() -> AsyncIterator[StandinExchange]:
    exchange = StandinExchange(
        markets=[StandinMarket("ETH", "USDT")], now_ms=DAY_MS + 10 * 86_400_000
    )
    exchange.klines_page_max = 500
    for n in range(1440 + 60):  # a day and an hour
        price = 2280 + (n % 23) * 0.25
        volume = "0" if n == 700 else "3.5"  # one minute without trades
        exchange.add_kline(
            "ETHUSDT",
            DAY_MS + n * MINUTE,
            f"{price}",
            f"{price + 1}",
            f"{price - 1}",
            f"{price + 0.5}",
            volume,
        )
    await exchange.start()
    yield exchange
    await exchange.stop()


def request(out: Path, to_ms: int = DAY_MS + 86_400_000, symbol: str = "ETH/USDT") -> Request:
    return Request("binance", symbol, "1m", DAY_MS, to_ms, out)


async def test_a_day_of_klines_is_written_in_pages_as_replay_and_backtest_read_it(
    standin: StandinExchange, tmp_path: Path
) -> None:
    out = tmp_path / "eth.csv"
    written = await download(request(out), standin.urls(), settings=FAST)
    assert written == 1439  # 1440 minutes, one without volume
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER == "time,open,high,low,close,volume"
    assert lines[1] == f"{DAY_MS},2280.0,2281.0,2279.0,2280.5,3.5"
    assert len(standin.paths("/api/v3/klines")) == 3  # 500 + 500 + 440
    updates = list(read_market_file(out, MINUTE, lambda reject: pytest.fail(str(reject))))
    assert len(updates) == 1439
    assert updates[-1][1].kline.time_ms == DAY_MS + 1439 * MINUTE
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "backtest",
        "--klines",
        str(out),
        "--symbol",
        "ETH-USDT",
        "--price-decimals",
        "2",
        "--min-size",
        "0.0001",
        "--quiet",
        "--json",
        str(tmp_path / "out.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    assert json.loads((tmp_path / "out.json").read_text())


async def test_an_interrupted_download_resumes_after_its_last_whole_row(
    standin: StandinExchange, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.csv"
    await download(request(whole), standin.urls(), settings=FAST)
    out = tmp_path / "resumed.csv"
    await download(request(out, to_ms=DAY_MS + 600 * MINUTE), standin.urls(), settings=FAST)
    with out.open("a") as file:
        file.write(f"{DAY_MS + 600 * MINUTE},2280.0,22")  # killed in the middle of a row
    requests_before = len(standin.paths("/api/v3/klines"))
    written = await download(request(out), standin.urls(), settings=FAST)
    assert written == 1439 - 600
    assert out.read_text() == whole.read_text()
    first_resumed = standin.paths("/api/v3/klines")[requests_before]
    assert int(first_resumed["startTime"]) == DAY_MS + 600 * MINUTE
    assert await download(request(out), standin.urls(), settings=FAST) == 0


async def test_rate_limits_are_waited_out(standin: StandinExchange, tmp_path: Path) -> None:
    standin.fail_next("/api/v3/klines", 429, count=2)
    out = tmp_path / "eth.csv"
    assert await download(request(out), standin.urls(), settings=FAST) == 1439


async def test_an_unknown_symbol_is_a_config_error_with_close_matches(
    standin: StandinExchange, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="close matches: ETH-USDT"):
        await download(request(tmp_path / "x.csv", symbol="ETH/USDC"), standin.urls())


async def test_the_command_line_downloads_with_a_progress_bar_and_exits_78_on_a_bad_symbol(
    standin: StandinExchange, tmp_path: Path
) -> None:
    env = {**os.environ, "BANDWAGON_CCXT_URLS": json.dumps({"binance": standin.urls()})}
    out = tmp_path / "cli.csv"

    async def run(*args: str) -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.cli",
            "download",
            "--exchange",
            "binance",
            "--size",
            "1m",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--out",
            str(out),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode, stderr.decode()

    code, stderr = await run("--symbol", "ETH-USDT")
    assert code == 0, stderr
    assert "1439 klines written" in stderr
    assert len(out.read_text().splitlines()) == 1440
    code, stderr = await run("--symbol", "ETH/USDX")
    assert code == 78
    assert stderr.strip().splitlines()[-1].startswith("config error: --symbol: ETH-USDX: binance")
