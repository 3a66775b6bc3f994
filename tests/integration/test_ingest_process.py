"""`bandwagon ingest` as a process: kill -9 and restart, side port, SIGTERM, config errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from redis import Redis as SyncRedis

from libs.core.market import MarketUpdate
from libs.wire.market import decode_update
from tests.support.polling import wait_until
from tools.run.redis_server import RedisServer

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
KLINES = DATA / "klines-1m-3000.csv"
TRADES = DATA / "trades-2000.csv"
XRP = "bw:market:{mexc.XRP-ETH.1m}"
ALT = "bw:market:{mexc.ALT-BTC.1m}"
BOTS = """\
market_stream_len: 100000
bots:
  - id: test
    exchange: mexc
    kline_size: 1m
    symbols:
      - {product_id: XRP-ETH, min_size: "0.1", price_decimals: 8}
      - {product_id: ALT-BTC, min_size: "0.1", price_decimals: 8}
"""
REPLAY = ["--replay", f"XRP-ETH={TRADES}", "--replay", f"ALT-BTC={KLINES}"]
PORT_LINE = re.compile(r"health, readiness and metrics on port (\d+)")


class Ingest:
    """One `python -m tools.cli ingest` child with its stderr (JSON lines) in a file."""

    def __init__(
        self, tmp_path: Path, redis_url: str, args: list[str], name: str, bots_yaml: str = BOTS
    ) -> None:
        bots = tmp_path / "bots.yaml"
        bots.write_text(bots_yaml)
        self.log_path = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "BANDWAGON_CONFIG": str(bots),
            "HEALTH_PORT": "0",
        }
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "ingest", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout_s: float = 15.0) -> str:
        """The log once it holds `text`; the process exiting first fails at once, with its log."""

        def logged() -> str | None:
            log = self.log
            if text in log:
                return log
            assert self.process.poll() is None, self.log
            return None

        return wait_until(logged, timeout_s=timeout_s, what=lambda: f"{text!r} in:\n{self.log}")

    def port(self) -> int:
        match = PORT_LINE.search(self.wait_for_log("metrics on port"))
        assert match is not None
        return int(match.group(1))

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[SyncRedis]:
    client = SyncRedis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def contents(client: SyncRedis, key: str) -> list[tuple[str, MarketUpdate]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(key))
    return [(fields["src"], decode_update(fields)) for _, fields in entries]


def test_a_replay_killed_and_restarted_ends_like_an_uninterrupted_one(
    tmp_path: Path, redis_server: RedisServer, sync_redis: SyncRedis
) -> None:
    other_db = SyncRedis.from_url(redis_server.url.replace("/0", "/1"), decode_responses=True)
    straight = Ingest(
        tmp_path, redis_server.url.replace("/0", "/1"), [*REPLAY, "--speed", "max"], "straight"
    )
    interrupted = Ingest(tmp_path, redis_server.url, [*REPLAY, "--speed", "60000"], "first")
    try:
        wait_until(
            lambda: sync_redis.xlen(ALT) >= 1000, timeout_s=15, poll_s=0.01, what="1000 klines"
        )
        interrupted.kill()  # SIGKILL, mid-way through the klines file
        killed_at = sync_redis.xlen(ALT)
        assert 1000 <= killed_at < 3000
        restarted = Ingest(
            tmp_path, redis_server.url, [*REPLAY, "--speed", "max", "--batch-size", "64"], "second"
        )
        try:
            restarted.wait_for_log("every source finished")
            port = restarted.port()
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200  # stays ready
            assert "resuming after the stream's last entry" in restarted.log
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        straight.wait_for_log("every source finished")
        assert straight.terminate() == 0
        for key, rows in ((ALT, 3000), (XRP, 2000)):
            assert contents(sync_redis, key) == contents(other_db, key)
            assert len(contents(sync_redis, key)) == rows
    finally:
        straight.kill()
        interrupted.kill()
        other_db.flushdb()
        other_db.close()


def test_the_side_port_answers_and_sigterm_exits_cleanly(
    tmp_path: Path, redis_server: RedisServer, sync_redis: SyncRedis
) -> None:
    ingest = Ingest(
        tmp_path, redis_server.url, ["--source", "synthetic", "--speed", "600"], "synthetic"
    )
    try:
        base = f"http://127.0.0.1:{ingest.port()}"
        assert httpx.get(f"{base}/healthz").text == "ok"
        wait_until(
            lambda: httpx.get(f"{base}/readyz").status_code == 200,
            timeout_s=15,
            poll_s=0.01,
            what="/readyz 200",
        )
        wait_until(lambda: sync_redis.xlen(XRP) > 20, timeout_s=15, poll_s=0.01, what="21 trades")
        metrics = httpx.get(f"{base}/metrics").text
        assert 'bandwagon_ingest_updates_total{stream="mexc.XRP-ETH.1m"}' in metrics
        assert "bandwagon_ready 1.0" in metrics
        assert ingest.terminate() == 0
        assert '"msg":"stopped"' in ingest.log
        written = contents(sync_redis, ALT)
        assert [src for src, _ in written] == [f"synthetic:{n}" for n in range(1, len(written) + 1)]
        assert all(update.price > 0 for _, update in written)
    finally:
        ingest.kill()


def test_a_missing_replay_file_is_a_config_error_exit_78(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ingest = Ingest(tmp_path, redis_server.url, ["--replay", str(tmp_path / "nope.csv")], "bad")
    assert ingest.process.wait(timeout=15) == 78
    assert ingest.log.startswith("config error: ") and "nope.csv" in ingest.log


def test_a_bots_file_silent_on_terms_gets_spec_s_defaults_from_a_replay_source(
    tmp_path: Path, redis_server: RedisServer, sync_redis: SyncRedis
) -> None:
    """SPEC 4.1 rule 10: min_size "0.00001" and price_decimals 2 when the file leaves them out
    and no exchange supplies them; the state freezes them like any source's (rule 6)."""
    silent = BOTS.replace(', min_size: "0.1", price_decimals: 8', "")
    assert "min_size" not in silent
    ingest = Ingest(tmp_path, redis_server.url, REPLAY, "silent", bots_yaml=silent)
    try:
        wait_until(lambda: sync_redis.xlen(ALT) > 0, timeout_s=15, poll_s=0.01, what="a kline")
        for product_id in ("XRP-ETH", "ALT-BTC"):
            stored = sync_redis.hgetall(f"bw:terms:{{mexc.{product_id}}}")
            assert stored["min_size"] == "0.00001"
            assert stored["price_decimals"] == "2"
        assert ingest.terminate() == 0
    finally:
        ingest.kill()
