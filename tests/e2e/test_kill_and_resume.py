"""Kill and resume (issue 5, point 8): SIGKILL one worker at 20 random points of a replay of real
data, restart it each time, and the pipeline still ends exactly where `bandwagon backtest` ends on
the same files and bots file.

Strategy and accounting commit their outputs with their checkpoints in one MULTI, and ingest finds
its place by the `src` of its stream's newest entry (SPEC 4.1 rule 12), so a kill may cost
recomputation, never a lost or doubled trade. After the last restart the test checks:

- trades, STATUS and SYMBOL scalars equal the backtest's, exactly, as the parity test compares them;
- the refresh log holds every seq from 1 to `meta.seq` once, all of one epoch (SPEC 2.1 rules 5
  and 6), and its trades, concatenated, are the final trades: no client saw one twice or missed one;
- no service logged an error, and the last processes drain and exit 0 on SIGTERM.

A kill point is a position in the data (a fraction of the ALT-BTC file's time span) drawn from a
seeded `random.Random`; `BANDWAGON_FAULT_SEED` picks another seed to explore. The victim is killed
once its own committed progress, read in Redis, passes the next point, after a short random delay
so that the kill lands at any phase of its loop: reading, folding, or inside a commit.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from libs.core.market import MarketUpdate
from libs.errors import StateMissing
from libs.exchange.market_files import read_market_file
from libs.store import keys
from libs.store.published import Snapshot, read_snapshot
from libs.wire.market import decode_update
from tests.e2e.services import REPO, Deployment, Service, backtest_json
from tests.support.polling import eventually

DATA = REPO / "tests" / "data"
FILES = {
    "ALT-BTC": ("--klines", DATA / "klines-1m-3000.csv"),
    "XRP-ETH": ("--trades", DATA / "trades-2000.csv"),
}
REPLAYS = tuple(f"--replay={pid}={path}" for pid, (_, path) in FILES.items())
API_KEY = "kill-test-key-0123456789"
BOT = "faults"
PERIOD_MS = 60_000
KILLS = 20
SEED = int(os.environ.get("BANDWAGON_FAULT_SEED", "5"))
POLL_S = 0.005

# Maker orders with timeouts taken as takers, liquidations, and a cross-margin symbol beside an
# isolated one: the backtest of these files makes 130 trades of every kind.
BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    kline_history: 5
    trade_history: 1000
    refresh_log_len: 100000
    strategy: {{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}}
    symbols:
      - {{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20, isolated: true}}
      - {{product_id: XRP-ETH, min_size: "0.1", price_decimals: 8, leverage: 2, isolated: false,
         weight: 3}}
"""

# 20 kills, each restart a new Python: ~50 s on an idle machine, ~80 s on a loaded one
pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The ALT-BTC file's span of update times: progress is a fraction of it."""

    first_ms: int
    last_ms: int

    def fraction(self, time_ms: int | None) -> float:
        if time_ms is None:
            return 0.0
        return (time_ms - self.first_ms) / (self.last_ms - self.first_ms)


def last_updates() -> dict[str, MarketUpdate]:
    """Each file's last update: once the accounting shows its kline, the file was applied whole."""
    finals = {}
    for product_id, (_, path) in FILES.items():
        *_, (_, last) = read_market_file(path, PERIOD_MS)
        finals[product_id] = last
    return finals


def alt_timeline() -> Timeline:
    updates = [update for _, update in read_market_file(FILES["ALT-BTC"][1], PERIOD_MS)]
    return Timeline(updates[0].time_ms, updates[-1].time_ms)


# How far each worker has got, as it committed it: the time of the last ALT-BTC update it applied.
ProgressReader = Callable[[Redis], Awaitable[int | None]]


async def ingest_progress(redis: Redis) -> int | None:
    newest = await redis.xrevrange(keys.market_stream("binance", "ALT-BTC", "1m"), count=1)
    if not newest:
        return None
    _, fields = newest[0]
    return decode_update(cast(dict[str, str], fields)).time_ms


async def strategy_progress(redis: Redis) -> int | None:
    state = await redis.hget(keys.strategy_state(BOT, "ALT-BTC"), "state")
    return None if state is None else orjson.loads(state)["last_time_ms"]


async def accounting_progress(redis: Redis) -> int | None:
    kline = await redis.lindex(keys.klines(BOT, "ALT-BTC"), -1)
    return None if kline is None else orjson.loads(kline)["close_time"]


@dataclass(frozen=True, slots=True)
class Victim:
    name: str
    args: tuple[str, ...]
    progress: ProgressReader
    max_delay_s: float  # after its progress passes a kill point, wait up to this long
    early_kills: int  # kill points drawn in the first tenth of the data
    last_point: float  # no kill point beyond this fraction of the data


@dataclass(frozen=True, slots=True)
class Kill:
    point: float  # the kill point, a fraction of the ALT-BTC time span
    progress: float  # the victim's committed progress just before the SIGKILL
    pid: int


def kill_points(rng: random.Random, early: int, last: float) -> list[float]:
    """`early` of them in the first tenth (in a paced replay, while the shorter trades file is
    still being written too), the rest anywhere up to `last`."""
    points = [rng.uniform(0.005, 0.1) for _ in range(early)]
    return sorted(points + [rng.uniform(0.005, last) for _ in range(KILLS - early)])


async def has_worked_past(
    victim: Victim,
    service: Service,
    redis: Redis,
    started_at: int | None,
    point: float,
    timeline: Timeline,
) -> bool:
    """Past the kill point, and this process has committed something (or, with nothing left to
    do, is ready): a point the last process overshot is not spent on one still importing."""
    progress = await victim.progress(redis)
    if timeline.fraction(progress) < point:
        return False
    return progress != started_at or await asyncio.to_thread(service.ready)


async def work_past(
    victim: Victim, service: Service, redis: Redis, point: float, timeline: Timeline
) -> None:
    """Wait, 30 s at most, until the victim has worked past the kill point; a crash fails."""
    started_at = await victim.progress(redis)

    async def worked_past() -> bool:
        if await has_worked_past(victim, service, redis, started_at, point, timeline):
            return True
        assert service.process.poll() is None, f"{victim.name} crashed:\n{service.log()}"
        return False

    await eventually(
        worked_past, timeout_s=30, poll_s=POLL_S, what=f"{victim.name} past {point:.3f}"
    )


async def kill_repeatedly(
    deployment: Deployment, redis: Redis, victim: Victim, seed: int
) -> list[Kill]:
    """SIGKILL the victim at each kill point and start a new process at once. A victim that exits
    on its own (a crash) fails the test with its log."""
    rng = random.Random(f"{victim.name}:{seed}")
    timeline = alt_timeline()
    kills: list[Kill] = []
    for point in kill_points(rng, victim.early_kills, victim.last_point):
        service = deployment.services[victim.name]
        await work_past(victim, service, redis, point, timeline)
        await asyncio.sleep(rng.uniform(0, victim.max_delay_s))
        progress = timeline.fraction(await victim.progress(redis))
        assert service.process.poll() is None, f"{victim.name} crashed:\n{service.log()}"
        service.process.kill()
        assert service.process.wait() == -signal.SIGKILL
        kills.append(Kill(point, progress, service.process.pid))
        deployment.start(victim.name, *victim.args)
    return kills


async def settled_snapshot(redis: Redis, timeout_s: float = 30.0) -> Snapshot:
    """The accounting's state once it shows the last update of every file."""
    finals = last_updates()

    async def settled() -> Snapshot | None:
        try:
            snapshot = await read_snapshot(redis, BOT)
        except StateMissing:
            return None
        symbols = {symbol["product_id"]: symbol for symbol in snapshot.symbols}
        if all(
            symbols[pid]["klines"]
            and symbols[pid]["klines"][-1]["close"] == last.kline.close
            and symbols[pid]["klines"][-1]["time"] == last.kline.time_ms
            and symbols[pid]["klines"][-1]["volume"] == last.kline.volume
            and symbols[pid]["price"] == last.price
            for pid, last in finals.items()
        ):
            return snapshot
        return None

    return await eventually(
        settled, timeout_s=timeout_s, poll_s=0.05, what="the pipeline at the files' last updates"
    )


def check_equals_backtest(snapshot: Snapshot, backtest: dict[str, Any]) -> None:
    live_symbols = snapshot.symbols
    assert [s["product_id"] for s in backtest["symbols"]] == [s["product_id"] for s in live_symbols]
    for live, tested in zip(live_symbols, backtest["symbols"], strict=True):
        assert live["trades"], f"{live['product_id']}: the case must make trades"
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
    assert snapshot.status["tradeNum"] == len(live_trades)
    kinds = {(trade["order_type"], trade["action"].partition("_")[0]) for trade in live_trades}
    assert {
        ("maker", "BollingerBands"),
        ("taker", "BollingerBands"),
        ("taker", "liquidation"),
    } <= kinds


async def check_refresh_log(redis: Redis, snapshot: Snapshot) -> None:
    """Every seq from 1 to `meta.seq` once, one epoch, and the refreshes' trades are the final
    trades, each once and in order (SPEC 2.1 rules 5, 6 and 11)."""
    async with redis.pipeline(transaction=True) as tx:
        tx.hmget(keys.meta(BOT), ["seq", "epoch"])
        tx.xrange(keys.refresh_log(BOT))
        (seq_text, epoch), entries = await tx.execute()
    seqs = [int(entry_id.partition("-")[0]) for entry_id, _ in entries]
    assert seqs == list(range(1, len(seqs) + 1)), "the refresh log has a gap or a repeat"
    assert [entry_id for entry_id, _ in entries] == [f"{seq}-0" for seq in seqs]
    assert int(seq_text) == seqs[-1] == snapshot.seq
    assert epoch == snapshot.epoch
    sent: dict[str, list[dict[str, Any]]] = {s["product_id"]: [] for s in snapshot.symbols}
    for seq, (_, fields) in zip(seqs, entries, strict=True):
        refresh = orjson.loads(fields["msg"])
        assert (refresh["seq"], refresh["epoch"]) == (seq, epoch)
        for symbol in refresh["data"]["symbols"]:
            sent[symbol["product_id"]].extend(symbol["trades"])
    for symbol in snapshot.symbols:
        assert sent[symbol["product_id"]] == symbol["trades"], symbol["product_id"]


def check_no_errors_logged(deployment: Deployment) -> None:
    for name, service in deployment.services.items():
        errors = [
            line
            for line in service.log().splitlines()
            if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line or "Traceback" in line
        ]
        assert not errors, f"{name}:\n" + "\n".join(errors)


async def check_resumed_exactly(
    deployment: Deployment, redis: Redis, tmp_path: Path, kills: list[Kill]
) -> None:
    print(  # shown by pytest when a check fails: how to replay this run
        f"seed {SEED} (BANDWAGON_FAULT_SEED), kills as (kill point, victim's progress, pid):",
        ", ".join(f"({kill.point:.3f}, {kill.progress:.3f}, {kill.pid})" for kill in kills),
    )
    assert len(kills) == KILLS
    snapshot = await settled_snapshot(redis)
    files = [f"{flag}={pid}={path}" for pid, (flag, path) in FILES.items()]
    backtest = backtest_json(deployment.config_path, BOT, files, tmp_path / "backtest.json")
    # a kill point is met by the victim's own work, but a paced replay goes on while it restarts:
    # on a slow machine the last kills could come after the end, which proves less
    assert sum(kill.progress < 1 for kill in kills) >= KILLS * 3 // 4, "kills after the end"
    check_equals_backtest(snapshot, backtest)
    await check_refresh_log(redis, snapshot)
    check_no_errors_logged(deployment)


async def test_strategy_killed_20_times_while_catching_up_resumes_exactly(
    deployment: Deployment, redis: Redis, tmp_path: Path
) -> None:
    """The whole replay is in the streams first; the strategy, 10 entries a batch, is busy from
    its start to its kill, so kills land between reading, applying and the MULTI."""
    deployment.start("accounting")
    deployment.start("ingest", "--source=replay", *REPLAYS, "--speed=max")
    deployment.wait_ready("accounting", "ingest")
    victim = Victim(
        "strategy",
        ("--batch-size=10",),
        strategy_progress,
        max_delay_s=0.01,
        early_kills=5,
        last_point=0.9,
    )
    deployment.start(victim.name, *victim.args)
    kills = await kill_repeatedly(deployment, redis, victim, SEED)
    await check_resumed_exactly(deployment, redis, tmp_path, kills)


async def test_accounting_killed_20_times_during_a_paced_replay_resumes_exactly(
    deployment: Deployment, redis: Redis, tmp_path: Path
) -> None:
    """A paced replay: the accounting folds events as they come and commits at most every
    100 ms, so most kills find folded events not yet committed."""
    victim = Victim(
        "accounting",
        ("--batch-size=5",),
        accounting_progress,
        max_delay_s=0.15,
        early_kills=0,
        last_point=0.75,
    )
    deployment.start(victim.name, *victim.args)
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy")
    deployment.start("ingest", "--source=replay", *REPLAYS, "--speed=9000")
    kills = await kill_repeatedly(deployment, redis, victim, SEED)
    await check_resumed_exactly(deployment, redis, tmp_path, kills)


async def test_ingest_killed_20_times_during_a_paced_replay_resumes_exactly(
    deployment: Deployment, redis: Redis, tmp_path: Path
) -> None:
    """Each restart reads the streams' newest `src` and goes on from the next row, rebuilding the
    trades file's klines from its top; nothing is written twice or skipped."""
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy")
    args = ("--source=replay", *REPLAYS, "--speed=40000")
    victim = Victim(
        "ingest", args, ingest_progress, max_delay_s=0.05, early_kills=5, last_point=0.9
    )
    deployment.start(victim.name, *victim.args)
    kills = await kill_repeatedly(deployment, redis, victim, SEED)
    await check_resumed_exactly(deployment, redis, tmp_path, kills)


@pytest.mark.parametrize("name", ["strategy", "accounting"])
async def test_a_worker_stopped_with_sigterm_commits_gives_its_partitions_up_and_exits_0(
    deployment: Deployment, redis: Redis, tmp_path: Path, name: str
) -> None:
    """Graceful shutdown (SPEC 4.1 rule 4, issue 5 point 7): SIGTERM mid-replay, five times; each
    time the worker commits its batch, releases its leases and leaves membership (so a survivor
    need not wait them out), and exits 0; the pipeline still ends exactly as the backtest."""
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy")
    deployment.start("ingest", "--source=replay", *REPLAYS, "--speed=9000")
    rng = random.Random(f"sigterm:{name}:{SEED}")
    for _ in range(5):
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        service = deployment.services[name]
        assert service.process.poll() is None, f"{name} exited:\n{service.log()}"
        assert service.stop() == 0, service.log()
        assert await redis.zrange(keys.members(name), 0, -1) == [], "left membership"
        leases = [key async for key in redis.scan_iter(match=keys.lease(BOT, f"{name}*"))]
        assert leases == [], f"leases kept after a clean stop: {leases}"
        deployment.start(name)
        deployment.wait_ready(name)
    snapshot = await settled_snapshot(redis)
    files = [f"{flag}={pid}={path}" for pid, (flag, path) in FILES.items()]
    backtest = backtest_json(deployment.config_path, BOT, files, tmp_path / "backtest.json")
    check_equals_backtest(snapshot, backtest)
    await check_refresh_log(redis, snapshot)
    check_no_errors_logged(deployment)
