"""A thousand bots on one box (issue 17, item 4): 1,000 bots of 3 symbols sharing 30 market
streams, through ingest, strategy, accounting and one gateway with 10 clients for each of 100 of
the bots, as real processes on one private redis-server.

    python -m benches.thousand_bots [--quick] [--no-doc] [--bots N] [--tree PATH]

The bots file: bot `t0000` ... each with its own key variable, BollingerBands(5, 1, 1) taker
orders (so a bot trades within seconds of its first market update), 3 of 30 markets chosen
deterministically (`bot_markets`: every market used, each by about bots / 10 of them). The
phases, each bounded in time:

1. **Start**, as a new user's `bandwagon run`: accounting, strategy, gateway and ingest
   (synthetic source at 60x, about 600 market updates/s over the 30 streams) started at once.
   Figures: each service's time to `/readyz`; the time until every bot's state exists
   (`bw:{bot}:meta` has an epoch); per bot, from its first market update (the XADD time, the
   entry id's ms, of the first entry of its 3 streams) to the moment its first TRADE is in
   Redis (polled every 0.5 s: accounting commits it with the refresh that carries it).
2. **Fill -> client**: 10 websocket clients for each of the first 100 bots (one client process,
   `clients` mode of this module) on the gateway; over a window, every fill a client received:
   from the XADD of the market update it happened at to the client's receipt of the refresh
   carrying it (each client's receipt counts). The RSS of every service is read at its end.
3. **Gateway, no clients**: every client disconnected; the gateway's CPU (utime + stime) per
   second while the 1,000 bots keep refreshing.
4. **Throughput**: ingest restarted flat out (synthetic, speed 100,000): over a window, market
   updates/s the strategy committed (each (bot, symbol) partition's checkpoint progress through
   its stream, counted by the synthetic trade numbers of the entries, summed and divided by the
   partitions per stream) beside what ingest wrote.

Lease losses are counted in every phase from the workers' logs ("lease lost", "commit fenced
off") and from the fence counters in Redis (acquisitions beyond each partition's first).
`--tree PATH` runs the services from another checkout (e.g. a `git worktree` of an older commit).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from redis.asyncio import Redis

from benches.data import ROOT, cache_dir
from benches.doc_section import write_section
from benches.loadgen import Client, Recorder, finish, open_client, say, wait_stop
from benches.loadgen_stats import (
    cpu_seconds,
    histogram_quantile,
    parse_histogram,
    percentile,
    raise_open_files,
    subtract_histograms,
)
from benches.processes import is_ready, service_env
from benches.timing import machine_line
from libs.store import keys
from libs.wire.market import decode_update, entry_key
from tools.run.redis_server import RedisServer, free_port

DOC_PATH = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- thousand-bots:begin (written by python -m benches.thousand_bots) -->"
END_MARK = "<!-- thousand-bots:end -->"
PACKAGES = ("redis", "hiredis", "orjson", "uvicorn", "websockets", "uvloop")
EXCHANGE, KLINE_SIZE = "mexc", "1m"
Entries = list[tuple[str, dict[str, str]]]
MARKETS = 30
SYMBOLS_PER_BOT = 3
SERVICES = ("accounting", "strategy", "gateway", "ingest")
WORKERS = ("strategy", "accounting")
POLL_S = 0.5
PROGRESS_EVERY_S = 2.0  # the throughput window's samples of the strategy's checkpoints
FLOOD_SPEED = 100_000  # synthetic: about 33,000 updates/s per stream offered, i.e. flat out
LEASE_LINES = ("lease lost", "commit fenced off")
ERROR_LINES = ("Too many connections", "redis unavailable")
GOAL_UPDATES_S = 20_000.0
GOAL_P99_S = 0.120  # SPEC 2.1 rule 10's 100 ms wait + 20 ms
GOAL_RSS_PER_BOT = 1024 * 1024
GOAL_FIRST_ORDER_S = 10.0
PUBLISH_HISTOGRAM = "bandwagon_update_to_publish_seconds"  # accounting's, XADD -> PUBLISH
REACQUIRED = "leases re-acquired (fence counters)"
STRATEGY_COUNTER = "bandwagon_strategy_updates_total"  # applied, whether committed or not
WHOLE_RUN = "whole run"
BOT_YAML = """\
  - id: {bot}
    api_key_env: {env}
    exchange: mexc
    kline_size: 1m
    start_capital: 1000
    strategy: {{name: BollingerBands, period: 5, nbdev_up: 1, nbdev_dn: 1, mode: both,
               order_type: taker, buy_pct: 20, slippage_pct: 0.05}}
    symbols:
{symbols}
"""
SYMBOL_YAML = (
    '      - {{product_id: {pid}, min_size: "0.001", price_decimals: 3, leverage: 10,'
    " isolated: true}}\n"
)


# --- The bots file (pure) ----------------------------------------------------------------------


def product_id(market: int) -> str:
    return f"M{market:02d}-USDT"


def bot_id(index: int) -> str:
    return f"t{index:04d}"


def key_env(index: int) -> str:
    return f"THOUSAND_BOT_KEY_{index:04d}"


def bot_markets(index: int, markets: int = MARKETS) -> tuple[int, int, int]:
    """Bot `index`'s 3 markets: the first is `index % markets`, so every market is some bot's
    once there are `markets` bots; the other two follow at a stride that changes every
    `markets` bots (1 .. markets // 2 - 1), so the markets stay distinct and the triples vary."""
    if markets < 6:
        raise ValueError("at least 6 markets")
    first = index % markets
    stride = 1 + (index // markets) % (markets // 2 - 1)
    return first, (first + stride) % markets, (first + 2 * stride) % markets


def bots_yaml(bots: int) -> str:
    parts = ["market_stream_len: 1000000\nbots:\n"]
    for index in range(bots):
        symbols = "".join(SYMBOL_YAML.format(pid=product_id(m)) for m in bot_markets(index))
        parts.append(
            BOT_YAML.format(bot=bot_id(index), env=key_env(index), symbols=symbols.rstrip())
        )
    return "".join(parts)


# --- Figures (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A client got refresh `seq` of `bot` at `at_ms` (wall clock ms)."""

    client: int
    bot: str
    seq: int
    at_ms: float


@dataclass(frozen=True, slots=True)
class FillSeen:
    xadd_ms: float  # the XADD of the market update the fill happened at
    at_ms: float  # a client's receipt of the refresh carrying it
    previous_at_ms: float | None  # that client's receipt of the refresh before


def fills_received(
    receipts: Iterable[Receipt],
    fills_by_refresh: Mapping[tuple[str, int], Sequence[tuple[str, int]]],
    xadd_ms: Mapping[tuple[str, int], float],
) -> list[FillSeen]:
    """Every (client, fill) pair: `fills_by_refresh` maps (bot, seq) to the fills (product id,
    update time ms) that refresh carries for the first time, `xadd_ms` (product id, update time)
    to the XADD ms of that update. Receipts of one client in order; fills whose update is not
    known are left out."""
    seen: list[FillSeen] = []
    previous: dict[int, float] = {}
    for receipt in sorted(receipts, key=lambda r: (r.client, r.at_ms)):
        before = previous.get(receipt.client)
        previous[receipt.client] = receipt.at_ms
        for fill in fills_by_refresh.get((receipt.bot, receipt.seq), ()):
            xadded = xadd_ms.get(fill)
            if xadded is not None:
                seen.append(FillSeen(xadded, receipt.at_ms, before))
    return seen


def latency_s(fill: FillSeen) -> float:
    return (fill.at_ms - fill.xadd_ms) / 1000


def beyond_wait_s(fill: FillSeen, wait_ms: float = 100.0) -> float:
    """The latency less what SPEC 2.1 rule 10 makes a fill wait: from the later of the update's
    XADD and the previous refresh's receipt + 100 ms."""
    start = fill.xadd_ms
    if fill.previous_at_ms is not None:
        start = max(start, fill.previous_at_ms + wait_ms)
    return (fill.at_ms - start) / 1000


def trade_number(src: str) -> int:
    """The synthetic source's trade number in an entry's `src` (`synthetic:<n>`)."""
    kind, _, number = src.partition(":")
    if kind != "synthetic" or not number.isdigit():
        raise ValueError(f"not a synthetic entry: {src!r}")
    return int(number)


def step_rate(samples: Sequence[tuple[float, float]]) -> float:
    """The rate of a counter that moves in steps (a worker commits a batch at a time), from
    (time, value) samples: between the first and the last sample at which it had just
    stepped, so the window holds whole steps; nan with fewer than two steps."""
    stepped = [(at, value) for (_, before), (at, value) in pairwise(samples) if value != before]
    if len(stepped) < 2 or stepped[-1][0] <= stepped[0][0]:
        return math.nan
    return (stepped[-1][1] - stepped[0][1]) / (stepped[-1][0] - stepped[0][0])


def count_lines(text: str, needles: Sequence[str]) -> dict[str, int]:
    return {needle: text.count(needle) for needle in needles}


# --- Processes ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Service:
    process: subprocess.Popen[bytes]
    port: int
    started_s: float
    log: Path


class Services:
    """The services as processes of `tree` (this checkout by default), each logging to
    `<workdir>/<name>.log`."""

    def __init__(self, tree: Path, workdir: Path, env: dict[str, str]) -> None:
        self.tree = tree
        self.workdir = workdir
        self.env = env
        self.running: dict[str, Service] = {}

    def start(self, name: str, *args: str, log_name: str | None = None) -> Service:
        port = free_port()
        log_path = self.workdir / f"{log_name or name}.log"
        env = {
            **self.env,
            "HEALTH_PORT": str(port),
            "GATEWAY_PORT": str(port),
            "WORKER_ID": f"bench-{name}",
            "PYTHONPATH": str(self.tree),
        }
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", name, *args],
                env=env,
                cwd=self.tree,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_open_files,
            )
        service = Service(process, port, time.monotonic(), log_path)
        self.running[name] = service
        return service

    def alive(self, name: str) -> bool:
        service = self.running.get(name)
        return service is not None and service.process.poll() is None

    def pid(self, name: str) -> int:
        return self.running[name].process.pid

    def metrics(self, name: str) -> str:
        port = self.running[name].port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text: str = response.read().decode()
        return text

    def log_text(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        service = self.running.get(name)
        if service is None:
            return
        process = service.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for service in self.running.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.running.values():
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def proc_status(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM) in bytes; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def safe_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return math.nan


# --- The clients' process ----------------------------------------------------------------------


async def run_clients(args: argparse.Namespace, bot_keys: list[str]) -> None:
    """`clients` mode: `--per-bot` clients of each key in `--keys` (a JSON list), client index
    `bot * per_bot + j`; prints `{"ready": n}` once each has its init reply, records every
    refresh (client, seq, CLOCK_MONOTONIC ns) until `stop` on stdin, then saves them."""
    record = Recorder()
    gate = asyncio.Semaphore(100)
    clients: list[Client] = []

    async def one(index: int, key: str) -> None:
        init = orjson.dumps({"action": "init", "apiKey": key})
        async with gate:
            client = await open_client(index, args.url, init, record, 30.0)
            if client is None:
                return
            clients.append(client)
            try:
                await asyncio.wait_for(asyncio.shield(client.replied), 60.0)
            except TimeoutError:
                pass

    await asyncio.gather(
        *(
            one(bot * args.per_bot + j, key)
            for bot, key in enumerate(bot_keys)
            for j in range(args.per_bot)
        )
    )
    say({"ready": record.replies, "errors": record.errors, "closes": record.closes})
    await wait_stop(args.max_seconds)
    await finish(clients, record, args.out)


def clients_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.thousand_bots clients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", required=True, help="a JSON list of keys, one per bot")
    parser.add_argument("--per-bot", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    raise_open_files()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(run_clients(args, orjson.loads(Path(args.keys).read_bytes())))
    return 0


# --- The run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    bots: int = 1000
    client_bots: int = 100
    clients_per_bot: int = 10
    start_s: float = 300.0  # at most, for every bot's first order
    latency_s: float = 30.0
    idle_s: float = 10.0
    warm_s: float = 10.0
    throughput_s: float = 60.0
    speed: float = 60.0


QUICK = Sizes(100, 10, 10, 60.0, 10.0, 5.0, 5.0, 20.0)


@dataclass(slots=True)
class Figures:
    sizes: Sizes
    tree: str
    commit: str
    load_before: str = ""
    load_after: str = ""
    ready_s: dict[str, float] = field(default_factory=dict)
    states_s: float = math.nan  # start -> every bot's state created
    states_created: int = 0
    first_order_s: list[float] = field(default_factory=list)  # per bot that placed one
    first_order_lag_s: list[float] = field(default_factory=list)  # from its fill's update
    no_first_order: int = 0
    clients_ready: int = 0
    client_closes: dict[str, int] = field(default_factory=dict)
    fills_in_window: int = 0  # distinct fills of the client bots received in the window
    latencies_s: list[float] = field(default_factory=list)
    beyond_s: list[float] = field(default_factory=list)
    publish_p50_s: float = math.nan  # accounting's update -> PUBLISH over the same window
    publish_p99_s: float = math.nan
    clients_cpu: float = math.nan
    rss: dict[str, int] = field(default_factory=dict)  # end of the fill -> client window
    hwm: dict[str, int] = field(default_factory=dict)  # peak, at the end
    gateway_idle_cpu: float = math.nan  # cores
    idle_refreshes_s: float = math.nan
    idle_received: float = math.nan  # refreshes the gateway received for bots without a client
    offered_s: float = math.nan  # market updates/s ingest wrote in the throughput window
    taken_s: float = math.nan  # market updates/s the strategy committed, per stream set
    bot_updates_s: float = math.nan  # (bot, symbol) updates/s committed
    backlog_end: int = 0  # entries not yet committed by the slowest partition, at the end
    clients_refreshes: int = 0  # refreshes the clients received in the fill -> client window
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process -> cores
    refreshes_s: dict[str, float] = field(default_factory=dict)  # phase -> published, all bots
    applied_s: dict[str, float] = field(default_factory=dict)  # phase -> strategy's counter
    committed_s: dict[str, float] = field(default_factory=dict)  # phase -> checkpoints
    written_s: dict[str, float] = field(default_factory=dict)  # phase -> market updates ingested
    leases: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> what -> count
    notes: list[str] = field(default_factory=list)


class Run:
    def __init__(self, sizes: Sizes, tree: Path, workdir: Path) -> None:
        self.sizes = sizes
        self.tree = tree
        self.workdir = workdir
        self.bot_ids = [bot_id(i) for i in range(sizes.bots)]
        self.markets = {bot_id(i): bot_markets(i) for i in range(sizes.bots)}
        self.api_keys = {
            key_env(i): f"tb{i:04d}-{secrets.token_hex(12)}" for i in range(sizes.bots)
        }
        config = workdir / "bots.yaml"
        config.write_text(bots_yaml(sizes.bots))
        self.server = RedisServer(workdir / "redis").start()
        self.redis = Redis.from_url(self.server.url, decode_responses=True)
        self.services = Services(
            tree, workdir, service_env(self.server.url, config, **self.api_keys)
        )
        self.streams = [
            keys.market_stream(EXCHANGE, product_id(m), KLINE_SIZE) for m in range(MARKETS)
        ]
        self.partitions = [(bot, product_id(m)) for bot in self.bot_ids for m in self.markets[bot]]
        self.clients: asyncio.subprocess.Process | None = None
        self.phase_cpu0: dict[str, float] = {}
        self.phase_t0 = 0.0
        self.phase_logs: dict[str, dict[str, int]] = {}
        self.phase_fences = 0
        self.phase_counters: dict[str, tuple[float, float]] = {}
        self.last_progress: tuple[list[int], list[int]] = ([], [])

    # measurements shared by the phases

    def pids(self) -> dict[str, int]:
        found = {name: self.services.pid(name) for name in SERVICES if self.services.alive(name)}
        if self.server.process is not None:
            found["redis"] = self.server.process.pid
        if self.clients is not None and self.clients.returncode is None:
            found["clients"] = self.clients.pid
        return found

    def log_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in WORKERS:
            text = self.services.log_text(name)
            for needle, count in count_lines(text, (*LEASE_LINES, *ERROR_LINES)).items():
                counts[f"{name}: {needle}"] = count
        return counts

    async def fence_total(self) -> int:
        """Acquisitions of a lease beyond each partition's first: every acquisition increments
        the partition's fence counter, so the sum of the counters less the partitions that have
        one."""
        names = [keys.fence(bot, f"strategy:{pid}") for bot, pid in self.partitions]
        names += [keys.fence(bot, "accounting") for bot in self.bot_ids]
        total = 0
        for start in range(0, len(names), 2000):
            values = await self.redis.mget(names[start : start + 2000])
            total += sum(int(v) - 1 for v in values if v is not None)
        return total

    async def applied_total(self) -> float:
        """The strategy's `bandwagon_strategy_updates_total`, all bots: updates applied in
        memory, including those of batches whose commit failed; nan when /metrics does not
        answer within 10 s (a worker busy with one long batch)."""
        try:
            text = await asyncio.to_thread(self.services.metrics, "strategy")
        except OSError:
            return math.nan
        prefix = STRATEGY_COUNTER + "{"
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    async def counters(self) -> dict[str, tuple[float, float]]:
        """(CLOCK_MONOTONIC s, value) of each counter a phase reports as a rate, each timed at
        the middle of its own reads: refreshes published (the bots' seqs), (bot, symbol) updates
        applied (the strategy's counter) and committed (its checkpoints), market updates
        written (the streams' newest trade numbers)."""
        found: dict[str, tuple[float, float]] = {}
        start = time.monotonic()
        seqs = await self.seq_total()
        found["refreshes"] = ((start + time.monotonic()) / 2, float(seqs))
        start = time.monotonic()
        applied = await self.applied_total()
        found["applied"] = ((start + time.monotonic()) / 2, applied)
        start = time.monotonic()
        self.last_progress = checkpoints, heads = await self.progress()
        at = (start + time.monotonic()) / 2
        found["committed"] = (at, float(sum(checkpoints)))
        found["written"] = (at, float(sum(heads)))
        return found

    async def begin_phase(self) -> None:
        self.phase_counters = await self.counters()
        self.phase_logs = {"": self.log_counts()}
        self.phase_fences = await self.fence_total()
        self.phase_t0 = time.monotonic()
        self.phase_cpu0 = {name: safe_cpu(pid) for name, pid in self.pids().items()}

    async def end_phase(self, figures: Figures, phase: str) -> None:
        wall = time.monotonic() - self.phase_t0
        figures.cpu[phase] = {
            name: (safe_cpu(pid) - self.phase_cpu0[name]) / wall
            for name, pid in self.pids().items()
            if name in self.phase_cpu0
        }
        before, after = self.phase_logs[""], self.log_counts()
        counts = {what: after[what] - before.get(what, 0) for what in after}
        counts[REACQUIRED] = await self.fence_total() - self.phase_fences
        figures.leases[phase] = counts
        after_counters = await self.counters()
        for name, table in (
            ("refreshes", figures.refreshes_s),
            ("applied", figures.applied_s),
            ("committed", figures.committed_s),
            ("written", figures.written_s),
        ):
            (t0, v0), (t1, v1) = self.phase_counters[name], after_counters[name]
            table[phase] = (v1 - v0) / (t1 - t0)

    async def whole_run(self, figures: Figures) -> None:
        """Lease losses and errors over the whole run, from the logs and the fence counters."""
        counts = self.log_counts()
        counts[REACQUIRED] = await self.fence_total()
        figures.leases[WHOLE_RUN] = counts

    async def wait_ready(self, figures: Figures, names: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                service = self.services.running[name]
                if service.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited {service.process.returncode}: see {service.log}"
                    )
                if await asyncio.to_thread(is_ready, service.port):
                    figures.ready_s[name] = time.monotonic() - service.started_s
                    pending.remove(name)
            await asyncio.sleep(0.1)
        for name in pending:
            figures.notes.append(f"{name} not ready within {timeout_s:.0f} s")

    async def first_entry_ms(self) -> dict[str, float]:
        found: dict[str, float] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xrange(stream, count=1)
            replies = await pipe.execute()
        for market, reply in enumerate(replies):
            if reply:
                found[product_id(market)] = float(entry_key(str(reply[0][0]))[0])
        return found

    async def first_fill_update_ms(
        self, bot: str, first_update: Mapping[str, float]
    ) -> float | None:
        """The XADD time of the market update the bot's first fill happened at: the system's
        share of its first order (the rest is the market's: its strategy's first signal). The
        trade's `time` is that update's event time; the entry is found near where the pace of
        the synthetic source (`speed`x) puts it."""
        firsts: list[tuple[int, str]] = []
        for market in self.markets[bot]:
            text = await self.redis.lindex(keys.trades(bot, product_id(market)), 0)
            if text is not None:
                firsts.append((int(orjson.loads(text)["time"]), product_id(market)))
        if not firsts:
            return None
        fill_time_ms, product = min(firsts)
        stream = keys.market_stream(EXCHANGE, product, KLINE_SIZE)
        head = cast(Entries, await self.redis.xrange(stream, count=1))
        if not head or product not in first_update:
            return None
        head_time_ms = decode_update(head[0][1]).time_ms
        guess_ms = first_update[product] + (fill_time_ms - head_time_ms) / self.sizes.speed
        window = cast(
            Entries,
            await self.redis.xrange(stream, min=int(guess_ms - 5000), max=int(guess_ms + 5000)),
        )
        for entry_id, fields in window:
            if decode_update(fields).time_ms == fill_time_ms:
                return float(entry_key(entry_id)[0])
        return None

    # phase 1: start

    async def start(self, figures: Figures) -> None:
        sizes = self.sizes
        start_wall = time.monotonic()
        for name in ("accounting", "strategy", "gateway"):
            self.services.start(name)
        self.services.start("ingest", "--source=synthetic", f"--speed={sizes.speed:g}")
        await self.begin_phase()
        ready = asyncio.create_task(self.wait_ready(figures, SERVICES, 120.0))
        deadline = start_wall + sizes.start_s
        no_state = set(self.bot_ids)
        no_order = set(self.bot_ids)
        first_order_at: dict[str, float] = {}  # wall ms
        first_update: dict[str, float] = {}  # product -> XADD ms
        clients_started = False
        while time.monotonic() < deadline and (no_order or no_state or not ready.done()):
            await asyncio.sleep(POLL_S)
            for name in SERVICES:
                if not self.services.alive(name):
                    raise RuntimeError(f"{name} exited; see {self.workdir}/{name}.log")
            if no_state:
                pending = sorted(no_state)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for bot in pending:
                        pipe.hget(keys.meta(bot), "epoch")
                    epochs = await pipe.execute()
                no_state -= {bot for bot, epoch in zip(pending, epochs, strict=True) if epoch}
                if not no_state:
                    figures.states_s = time.monotonic() - start_wall
            if len(first_update) < MARKETS:
                first_update = await self.first_entry_ms()
            pending = sorted(no_order)
            async with self.redis.pipeline(transaction=False) as pipe:
                for bot in pending:
                    for market in self.markets[bot]:
                        pipe.llen(keys.trades(bot, product_id(market)))
                lengths = await pipe.execute()
            now_ms = time.time() * 1000
            for n, bot in enumerate(pending):
                if any(lengths[SYMBOLS_PER_BOT * n : SYMBOLS_PER_BOT * (n + 1)]):
                    first_order_at[bot] = now_ms
                    no_order.discard(bot)
            if not clients_started and not no_state and ready.done():
                await self.start_clients()
                clients_started = True
        await ready
        figures.states_created = sizes.bots - len(no_state)
        for bot, at_ms in first_order_at.items():
            updates = [first_update.get(product_id(m)) for m in self.markets[bot]]
            known = [u for u in updates if u is not None]
            if known:
                figures.first_order_s.append((at_ms - min(known)) / 1000)
            fill_update_ms = await self.first_fill_update_ms(bot, first_update)
            if fill_update_ms is not None:
                figures.first_order_lag_s.append((at_ms - fill_update_ms) / 1000)
        figures.no_first_order = len(no_order)
        if no_state:
            figures.notes.append(f"{len(no_state)} states not created within {sizes.start_s:.0f} s")
        if not clients_started:
            await self.start_clients()
        await self.end_phase(figures, "start")

    async def start_clients(self) -> None:
        sizes = self.sizes
        keys_path = self.workdir / "client-keys.json"
        keys_path.write_bytes(
            orjson.dumps([self.api_keys[key_env(i)] for i in range(sizes.client_bots)])
        )
        url = f"ws://127.0.0.1:{self.services.running['gateway'].port}/ws"
        self.clients = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benches.thousand_bots",
            "clients",
            "--url",
            url,
            "--keys",
            str(keys_path),
            "--per-bot",
            str(sizes.clients_per_bot),
            "--out",
            str(self.workdir / "clients.npz"),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=raise_open_files,
        )

    async def client_line(self, timeout_s: float) -> dict[str, Any]:
        assert self.clients is not None and self.clients.stdout is not None
        line = await asyncio.wait_for(self.clients.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError("the clients' process exited early")
        document: dict[str, Any] = orjson.loads(line)
        return document

    # phase 2: fill -> client

    async def fill_latency(self, figures: Figures) -> None:
        ready = await self.client_line(180.0)
        figures.clients_ready = int(ready["ready"])
        await self.begin_phase()
        histogram0 = parse_histogram(self.services.metrics("accounting"), PUBLISH_HISTOGRAM)
        client_bots = self.bot_ids[: self.sizes.client_bots]
        async with self.redis.pipeline(transaction=False) as pipe:
            for bot in client_bots:
                pipe.hget(keys.meta(bot), "seq")
            first_seqs = [max(1, int(seq or 1) - 10) for seq in await pipe.execute()]
        window_start_ms = time.time() * 1000
        await asyncio.sleep(self.sizes.latency_s)
        window_end_ms = time.time() * 1000
        published = subtract_histograms(
            parse_histogram(self.services.metrics("accounting"), PUBLISH_HISTOGRAM), histogram0
        )
        figures.publish_p50_s = histogram_quantile(published, 0.5)
        figures.publish_p99_s = histogram_quantile(published, 0.99)
        for name, pid in self.pids().items():
            figures.rss[name] = proc_status(pid, "VmRSS")
        await self.end_phase(figures, "fill -> client")
        refreshes: dict[tuple[str, int], list[tuple[str, int]]] = {}
        seen_fills: set[tuple[str, str, int]] = set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for bot, seq in zip(client_bots, first_seqs, strict=True):
                pipe.xrange(keys.refresh_log(bot), f"{seq}-0")  # from just before the window
            logs = await pipe.execute()
        for bot, entries in zip(client_bots, logs, strict=True):
            for entry_id, fields in entries:
                seq = int(str(entry_id).split("-", 1)[0])
                message = orjson.loads(fields["msg"])
                carried: list[tuple[str, int]] = []
                for symbol in message["data"]["symbols"]:
                    for trade in symbol.get("trades", []):
                        fill = (bot, str(symbol["product_id"]), int(trade["order_id"]))
                        if fill not in seen_fills:
                            seen_fills.add(fill)
                            carried.append((str(symbol["product_id"]), int(trade["time"])))
                if carried:
                    refreshes[(bot, seq)] = carried
        xadd_ms: dict[tuple[str, int], float] = {}
        for market, stream in enumerate(self.streams):
            entries = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(stream))
            for entry_id, fields in entries:
                xadd_ms.setdefault(
                    (product_id(market), int(fields["time"])), float(entry_key(entry_id)[0])
                )
        assert self.clients is not None and self.clients.stdin is not None
        self.clients.stdin.write(b"stop\n")
        await self.clients.stdin.drain()
        done = await self.client_line(120.0)
        figures.clients_cpu = float(done["cpu_s"])
        figures.client_closes = {str(k): int(v) for k, v in done["closes"].items()}
        await self.clients.wait()
        with np.load(self.workdir / "clients.npz") as saved:
            clients, seqs, times_ns = saved["clients"], saved["seqs"], saved["times_ns"]
        offset_ms = (time.time_ns() - time.monotonic_ns()) / 1e6
        per_bot = self.sizes.clients_per_bot
        receipts = [
            Receipt(int(c), client_bots[int(c) // per_bot], int(s), int(t) / 1e6 + offset_ms)
            for c, s, t in zip(clients, seqs, times_ns, strict=True)
        ]
        seen = [
            fill
            for fill in fills_received(receipts, refreshes, xadd_ms)
            if window_start_ms <= fill.at_ms <= window_end_ms
        ]
        figures.latencies_s = [latency_s(fill) for fill in seen]
        figures.beyond_s = [beyond_wait_s(fill) for fill in seen]
        in_window = {
            (r.bot, r.seq) for r in receipts if window_start_ms <= r.at_ms <= window_end_ms
        }
        figures.clients_refreshes = sum(
            1 for r in receipts if window_start_ms <= r.at_ms <= window_end_ms
        )
        figures.fills_in_window = sum(len(refreshes.get(key, ())) for key in in_window)

    # phase 3: the gateway with no client
    # (its own CPU then is its idle cost: sweeps, pings, the registry's poll)

    async def gateway_idle(self, figures: Figures) -> None:
        await asyncio.sleep(1.0)  # the closes handled
        pid = self.services.pid("gateway")
        seqs0 = await self.seq_total()
        received0 = await self.gateway_received()
        cpu0, t0 = safe_cpu(pid), time.monotonic()
        await self.begin_phase()
        await asyncio.sleep(self.sizes.idle_s)
        wall = time.monotonic() - t0
        figures.gateway_idle_cpu = (safe_cpu(pid) - cpu0) / wall
        figures.idle_refreshes_s = (await self.seq_total() - seqs0) / wall
        figures.idle_received = await self.gateway_received() - received0
        await self.end_phase(figures, "gateway, no clients")

    async def gateway_received(self) -> float:
        """Refreshes the gateway received from Redis (`bandwagon_ws_refreshes_received_total`,
        both labels; nan for a gateway without the metric, which subscribes to every bot)."""
        text = await asyncio.to_thread(self.services.metrics, "gateway")
        values = [
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("bandwagon_ws_refreshes_received_total{")
        ]
        return sum(values) if values else math.nan

    async def seq_total(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for bot in self.bot_ids:
                pipe.hget(keys.meta(bot), "seq")
            values = await pipe.execute()
        return sum(int(v) for v in values if v is not None)

    # phase 4: throughput

    async def numbers(self, entry_ids: Sequence[tuple[str, str | None]]) -> list[int]:
        """The synthetic trade number of each (stream, entry id); 0 for none."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, entry_id in entry_ids:
                if entry_id is None or entry_id == "0-0":
                    pipe.echo("0")
                else:
                    pipe.xrange(stream, entry_id, entry_id, count=1)
            replies = await pipe.execute()
        found: list[int] = []
        for reply in replies:
            if isinstance(reply, list) and reply:
                found.append(trade_number(reply[0][1]["src"]))
            else:
                found.append(0)
        return found

    async def progress(self) -> tuple[list[int], list[int]]:
        """(each partition's checkpoint trade number, each stream's newest trade number)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bot, pid in self.partitions:
                pipe.hget(keys.strategy_state(bot, pid), "checkpoint")
            marks = await pipe.execute()
        streams = [keys.market_stream(EXCHANGE, pid, KLINE_SIZE) for _, pid in self.partitions]
        checkpoints = await self.numbers(list(zip(streams, marks, strict=True)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xrevrange(stream, count=1)
            newest = await pipe.execute()
        heads = [trade_number(reply[0][1]["src"]) if reply else 0 for reply in newest]
        return checkpoints, heads

    async def throughput(self, figures: Figures) -> None:
        sizes = self.sizes
        await asyncio.to_thread(self.services.stop, "ingest")
        self.services.start(
            "ingest", "--source=synthetic", f"--speed={FLOOD_SPEED}", log_name="ingest-flood"
        )
        await asyncio.sleep(sizes.warm_s)
        await self.begin_phase()
        samples: list[tuple[float, float]] = []
        end = time.monotonic() + sizes.throughput_s
        while time.monotonic() < end:
            start = time.monotonic()
            checkpoints, _ = await self.progress()
            samples.append(((start + time.monotonic()) / 2, float(sum(checkpoints))))
            await asyncio.sleep(max(0.0, min(PROGRESS_EVERY_S, end - time.monotonic())))
        await self.end_phase(figures, "throughput")
        checkpoints1, heads1 = self.last_progress
        stepped = step_rate(samples)
        figures.bot_updates_s = (
            figures.committed_s["throughput"] if math.isnan(stepped) else stepped
        )
        figures.taken_s = figures.bot_updates_s * MARKETS / len(self.partitions)
        figures.offered_s = figures.written_s["throughput"]
        head_of = dict(zip((product_id(m) for m in range(MARKETS)), heads1, strict=True))
        figures.backlog_end = max(
            (
                head_of[pid] - mark
                for (_, pid), mark in zip(self.partitions, checkpoints1, strict=True)
            ),
            default=0,
        )

    async def close(self) -> None:
        if self.clients is not None and self.clients.returncode is None:
            self.clients.kill()
            await self.clients.wait()
        await asyncio.to_thread(self.services.stop_all)
        await self.redis.aclose()
        self.server.stop()


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def tree_commit(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = done.stdout.strip() or "unknown"
    return commit + (" (with local changes)" if dirty.stdout.strip() else "")


async def measure(sizes: Sizes, tree: Path) -> Figures:
    workdir = cache_dir() / "thousand-bots" / f"{sizes.bots}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    raise_open_files()  # redis-server and every service inherit it: 1,000 sockets and more
    figures = Figures(sizes, str(tree), tree_commit(tree), load_before=load_average())
    run = Run(sizes, tree, workdir)
    try:
        print(f"  start: {sizes.bots} bots, services of {tree} ({figures.commit})", flush=True)
        await run.start(figures)
        print_progress("start", figures)
        await run.fill_latency(figures)
        print_progress("fill -> client", figures)
        await run.gateway_idle(figures)
        print_progress("gateway, no clients", figures)
        await run.throughput(figures)
        print_progress("throughput", figures)
        for name, pid in run.pids().items():
            figures.hwm[name] = proc_status(pid, "VmHWM")
        await run.whole_run(figures)
    finally:
        await run.close()
    figures.load_after = load_average()
    print(f"  logs and data: {workdir}", flush=True)
    return figures


def print_progress(phase: str, figures: Figures) -> None:
    cpu = figures.cpu.get(phase, {})
    cores = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
    leases = ", ".join(f"{k}: {v}" for k, v in figures.leases.get(phase, {}).items() if v)
    print(f"  {phase}: cores {cores}; {leases or 'no lease loss'}", flush=True)


# --- The report --------------------------------------------------------------------------------


def seconds_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f} s"


def ms_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"


def goal_rows(figures: Figures) -> list[tuple[str, str, str, str]]:
    """(figure, measured, goal, met)."""
    sizes = figures.sizes
    rows: list[tuple[str, str, str, str]] = []
    saturated = figures.offered_s > figures.taken_s * 1.05
    taken = (
        "n/a"
        if math.isnan(figures.taken_s)
        else f"{figures.taken_s:,.0f}/s ({figures.bot_updates_s:,.0f} (bot, symbol) updates/s;"
        f" ingest wrote {figures.offered_s:,.0f}/s{'' if saturated else ', not saturated'};"
        f" slowest partition {figures.backlog_end:,} updates behind at the end)"
    )
    rows.append(
        (
            "sustained market updates/s (strategy, 30 streams)",
            taken,
            f">= {GOAL_UPDATES_S:,.0f}/s",
            "yes" if figures.taken_s >= GOAL_UPDATES_S else "no",
        )
    )
    p99 = percentile(figures.latencies_s, 0.99)
    none_seen = (
        f"none: no fill reached a client in {sizes.latency_s:g} s"
        f" ({figures.clients_refreshes:,} refreshes received by"
        f" {figures.clients_ready:,} clients)"
    )
    rows.append(
        (
            "fill -> client p99",
            none_seen
            if not figures.latencies_s
            else f"{ms_text(p99)} (p50 {ms_text(percentile(figures.latencies_s, 0.5))},"
            f" max {ms_text(max(figures.latencies_s, default=math.nan))};"
            f" {figures.fills_in_window:,} fills, {len(figures.latencies_s):,} receipts;"
            f" beyond rule 10's wait p99 {ms_text(percentile(figures.beyond_s, 0.99))};"
            f" accounting's update -> PUBLISH p50 {ms_text(figures.publish_p50_s)},"
            f" p99 {ms_text(figures.publish_p99_s)})",
            f"<= {GOAL_P99_S * 1000:.0f} ms",
            "yes" if p99 <= GOAL_P99_S else "no",
        )
    )
    services = [name for name in SERVICES if name in figures.rss]
    total = sum(figures.rss[name] for name in services)
    per_bot = total / sizes.bots
    parts = ", ".join(f"{name} {figures.rss[name] / sizes.bots / 1024:,.0f}" for name in services)
    peak = sum(figures.hwm.get(name, 0) for name in services) / sizes.bots
    rows.append(
        (
            "RSS per bot, four services",
            f"{per_bot / 1024:,.0f} KiB ({parts} KiB; peaks {peak / 1024:,.0f} KiB)",
            "< 1 MiB",
            "yes" if len(services) == len(SERVICES) and per_bot < GOAL_RSS_PER_BOT else "no",
        )
    )
    orders = figures.first_order_s
    within = sum(1 for value in orders if value <= GOAL_FIRST_ORDER_S)
    worst = max(orders, default=math.nan) if not figures.no_first_order else math.inf
    worst_text = (
        f"> {sizes.start_s:.0f} s for {figures.no_first_order:,} bots"
        if figures.no_first_order
        else seconds_text(worst)
    )
    rows.append(
        (
            "first order after the bot's first market update: max",
            f"{worst_text} (p50 {seconds_text(percentile(orders, 0.5))},"
            f" p99 {seconds_text(percentile(orders, 0.99))}; {within:,} of {sizes.bots:,} within"
            f" {GOAL_FIRST_ORDER_S:.0f} s)",
            f"every bot <= {GOAL_FIRST_ORDER_S:.0f} s",
            "yes" if within == sizes.bots else "no",
        )
    )
    lags = figures.first_order_lag_s
    rows.append(
        (
            "of which the system's: from the update of its first fill to that trade in Redis",
            f"max {seconds_text(max(lags, default=math.nan))} (p50"
            f" {seconds_text(percentile(lags, 0.5))}, p99 {seconds_text(percentile(lags, 0.99))};"
            f" {len(lags):,} bots; polled every {POLL_S:g} s)",
            "",
            "",
        )
    )
    whole = figures.leases.get(WHOLE_RUN, {})
    lost = sum(count for what, count in whole.items() if what.endswith(LEASE_LINES[0]))
    fenced = sum(count for what, count in whole.items() if what.endswith(LEASE_LINES[1]))
    reacquired = whole.get(REACQUIRED, 0)
    rows.append(
        (
            "own leases lost by a live replica (strategy + accounting, whole run)",
            f"{lost:,} (commits fenced off: {fenced:,}; leases re-acquired: {reacquired:,})",
            "0",
            "yes" if lost == 0 and fenced == 0 and reacquired == 0 else "no",
        )
    )
    ready = max(figures.ready_s.values(), default=math.nan)
    rows.append(
        (
            "start: every service ready",
            f"{seconds_text(ready)} ("
            + ", ".join(f"{n} {seconds_text(s)}" for n, s in figures.ready_s.items())
            + ")",
            "",
            "",
        )
    )
    rows.append(
        (
            f"start: {sizes.bots:,} states created",
            seconds_text(figures.states_s)
            if figures.states_created == sizes.bots
            else f"{figures.states_created:,} in {sizes.start_s:.0f} s",
            "",
            "",
        )
    )
    idle, received = figures.idle_refreshes_s, figures.idle_received
    received_text = "not counted" if math.isnan(received) else f"{received:,.0f} received"
    rows.append(
        (
            "one gateway, refreshes of bots it has no client of",
            f"{received_text}, {figures.gateway_idle_cpu:.3f} cores of CPU"
            f" ({idle:,.0f} refreshes/s published for {sizes.bots:,} bots)",
            "0 received",
            "n/a" if not idle > 0 or math.isnan(received) else "yes" if received == 0 else "no",
        )
    )
    return rows


def render(figures: Figures, machine: str, date: str, command: str) -> str:
    sizes = figures.sizes
    lines = [
        BEGIN_MARK,
        "",
        f"Measured {date} on {machine}; load average {figures.load_before} before,"
        f" {figures.load_after} after. Services of commit {figures.commit}.",
        f"Command: `{command}`. {sizes.bots:,} bots of {SYMBOLS_PER_BOT} symbols on"
        f" {MARKETS} market streams (synthetic, {sizes.speed:g}x), {sizes.client_bots}"
        f" x {sizes.clients_per_bot} websocket clients ({figures.clients_ready:,} ready).",
        "",
        "| figure | measured | goal | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in goal_rows(figures)]
    names = sorted({name for cpu in figures.cpu.values() for name in cpu})
    lines += [
        "",
        "| phase | "
        + " | ".join(f"{name} cores" for name in names)
        + " | market updates/s written | (bot, symbol) updates/s applied | committed"
        " | refreshes/s published | lease losses and errors |",
        "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: | --- |",
    ]
    for phase in [*figures.cpu, WHOLE_RUN]:
        cpu = figures.cpu.get(phase, {})
        events = "; ".join(f"{k} {v:,}" for k, v in figures.leases.get(phase, {}).items() if v)
        cells = " | ".join(f"{cpu[name]:.2f}" if name in cpu else "-" for name in names)
        rates = " | ".join(
            "-" if math.isnan(table.get(phase, math.nan)) else f"{table[phase]:,.0f}"
            for table in (
                figures.written_s,
                figures.applied_s,
                figures.committed_s,
                figures.refreshes_s,
            )
        )
        lines.append(f"| {phase} | {cells} | {rates} | {events or 'none'} |")
    if figures.notes:
        lines += ["", *(f"- {note}" for note in figures.notes)]
    lines += ["", END_MARK]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["clients"]:
        return clients_main(args_list[1:])
    parser = argparse.ArgumentParser(prog="python -m benches.thousand_bots", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 bots, shorter phases")
    parser.add_argument("--bots", type=int, help="bots (default 1,000; --quick 100)")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--doc", type=Path, default=DOC_PATH)
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the services of this checkout")
    args = parser.parse_args(args_list)
    sizes = QUICK if args.quick else Sizes()
    if args.bots is not None:
        if args.bots < MARKETS:
            parser.error(f"--bots must be at least {MARKETS}")
        sizes = Sizes(
            args.bots,
            min(sizes.client_bots, args.bots),
            sizes.clients_per_bot,
            sizes.start_s,
            sizes.latency_s,
            sizes.idle_s,
            sizes.warm_s,
            sizes.throughput_s,
            sizes.speed,
        )
    tree = args.tree.resolve()
    figures = asyncio.run(measure(sizes, tree))
    command = "python -m benches.thousand_bots" + (" --quick" if args.quick else "")
    if args.bots is not None:
        command += f" --bots {args.bots}"
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    block = render(figures, machine_line(PACKAGES), date, command)
    print(block)
    if not args.no_doc:
        write_section(args.doc, block, BEGIN_MARK, END_MARK)
        print(f"wrote {args.doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
