"""Pipeline speed: ingest -> strategy -> accounting as real processes on one private redis-server,
replaying seeded klines as fast as possible for 1, 10 and 100 symbols (issue 7, point 1).

    python -m benches.pipeline_speed [--quick] [--no-doc]     (`make bench` runs it)

For each size: the bots file (1 bot x 1 symbol, 2 x 5, 10 x 10), one seeded random-walk klines
CSV per symbol (`benches/data.py`), then accounting and strategy started and ready, then `bandwagon
ingest --speed max`. Progress is read from Redis alone: market stream entry ids (their ms part is
the XADD time), the strategy checkpoints, each bot's events stream and accounting checkpoint.
The latency from a market update's XADD to the PUBLISH of the refresh reflecting it is the
accounting's histogram `bandwagon_update_to_publish_seconds` (from /metrics, bucket-interpolated).
Beside it, in the same run and on the same Redis: redis-py pipelined XADD of the very same
entries (the first hop's ceiling). Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pstats
import signal
import subprocess
import sys
import time
import urllib.request
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from benches.data import ROOT, SEED, cache_dir, random_walk_klines, write_klines_csv
from benches.doc_section import write_section
from benches.loadgen_stats import (
    cpu_seconds,
    histogram_quantile,
    parse_histogram,
    ratio,
    subtract_histograms,
)
from benches.processes import is_ready, service_env
from benches.timing import machine_line
from libs.store import keys
from libs.wire.market import entry_key
from services.ingest.writer import newest_entry
from tools.run.redis_server import RedisServer, free_port

DOC_PATH = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- pipeline-speed:begin (written by python -m benches.pipeline_speed) -->"
END_MARK = "<!-- pipeline-speed:end -->"
PACKAGES = ("redis", "hiredis", "orjson", "numpy", "ta-lib")
HISTOGRAM = "bandwagon_update_to_publish_seconds"
API_KEY = "bench-pipeline-key-0123456789abcdef"
LAYOUTS = ((1, 1), (2, 5), (10, 10))  # (bots, symbols per bot): 1, 10 and 100 symbols
XADD_BATCH = 500
LATENCY_SYMBOLS = 3  # the fill -> client run: one bot of 3 symbols (a realistic refresh)
LATENCY_RATE = 1_000.0  # market updates/s of that run, paced by ingest --speed
LATENCY_SECONDS = 30.0
BOT_YAML = """\
  - id: {bot}
    api_key_env: PIPELINE_KEY_{index}
    exchange: mexc
    kline_size: 1m
    start_capital: 1000
    refresh_interval_ms: 1000
    strategy: {{name: BollingerBands, period: 20, nbdev_up: 2, nbdev_dn: 2, mode: both,
               order_type: maker, buy_pct: 20, order_timeout_ms: 60000, slippage_pct: 0.05}}
    symbols:
{symbols}
"""
SYMBOL_YAML = (
    '      - {{product_id: {pid}, min_size: "0.00001", price_decimals: 2, leverage: 10,'
    " isolated: true}}\n"
)


@dataclass(slots=True)
class Case:
    bots: int
    symbols_per_bot: int
    rows_per_symbol: int
    updates: int = 0
    ingest_s: float = math.nan  # first entry's XADD to the last's
    strategy_s: float = math.nan  # first entry's XADD to every strategy checkpoint at its end
    accounting_s: float = math.nan  # ... to every accounting checkpoint at its events' end
    p50_s: float = math.nan
    p99_s: float = math.nan
    refreshes: int = 0
    xadd_s: float = math.nan  # redis-py pipelined XADD of the same entries
    cpu: dict[str, float] | None = None  # CPU seconds per process over the run

    @property
    def symbols(self) -> int:
        return self.bots * self.symbols_per_bot

    def rate(self, seconds: float) -> float:
        return self.updates / seconds if seconds and not math.isnan(seconds) else math.nan


def product_id(bot: int, symbol: int) -> str:
    return f"S{bot:02d}{symbol:02d}-USDT"


def bots_yaml(case: Case) -> str:
    parts = ["bots:\n"]
    for bot in range(case.bots):
        symbols = "".join(
            SYMBOL_YAML.format(pid=product_id(bot, s)) for s in range(case.symbols_per_bot)
        )
        parts.append(BOT_YAML.format(bot=f"p{bot:02d}", index=bot, symbols=symbols.rstrip()))
    return "".join(parts)


def data_files(case: Case, workdir: Path) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for bot in range(case.bots):
        for symbol in range(case.symbols_per_bot):
            pid = product_id(bot, symbol)
            path = workdir / f"klines-{case.rows_per_symbol}-{pid}.csv"
            if not path.exists():
                seed = SEED + 1000 * bot + symbol
                write_klines_csv(random_walk_klines(case.rows_per_symbol, seed), path)
            files.append((pid, path))
    return files


class Services:
    def __init__(self, workdir: Path, redis_url: str, config: Path, case: Case) -> None:
        self.workdir = workdir
        key_env = {f"PIPELINE_KEY_{i}": f"{API_KEY}-{i}" for i in range(case.bots)}
        self.env = service_env(redis_url, config, **key_env)
        self.processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self.profiled: set[str] = set()  # services run under cProfile, to `<workdir>/<name>.prof`

    def start(self, name: str, *args: str) -> int:
        port = free_port()
        profile = ["-m", "cProfile", "-o", str(self.workdir / f"{name}.prof")]
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    *(profile if name in self.profiled else []),
                    "-m",
                    "tools.cli",
                    name,
                    *args,
                ],
                env={
                    **self.env,
                    "HEALTH_PORT": str(port),
                    "GATEWAY_PORT": str(port),  # the gateway serves /readyz on its own port
                    "WORKER_ID": name,
                },
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = (process, port)
        return port

    def wait_ready(self, name: str, timeout_s: float = 60) -> None:
        process, port = self.processes[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}; see {self.workdir}")
            if is_ready(port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready in {timeout_s} s")

    def metrics(self, name: str) -> str:
        _, port = self.processes[name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def cpu(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for name, (process, _) in self.processes.items():
            if process.poll() is None:
                found[name] = cpu_seconds(process.pid)
        return found

    def stop(self, name: str) -> None:
        process, _ = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)

    def stop_all(self) -> None:
        for process, _ in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def entry_ms(entry_id: str) -> int:
    """The XADD time of a stream entry: the ms part of its id."""
    return entry_key(entry_id)[0]


def set_up(
    case: Case, workdir: Path, case_dir: Path, profiled: frozenset[str]
) -> tuple[list[tuple[str, Path]], RedisServer, Services, Redis]:
    """The case's data files and bots file, a private redis-server, its services (not started)
    and a client of it."""
    case_dir.mkdir(parents=True, exist_ok=True)
    files = data_files(case, workdir)
    config = case_dir / "bots.yaml"
    config.write_text(bots_yaml(case))
    server = RedisServer(case_dir / f"redis-{os.getpid()}-{time.time_ns()}").start()
    services = Services(case_dir, server.url, config, case)
    services.profiled = set(profiled)
    return files, server, services, Redis.from_url(server.url, decode_responses=True)


async def run_case(
    case: Case, workdir: Path, timeout_s: float, profiled: frozenset[str] = frozenset()
) -> Case:
    case.updates = case.symbols * case.rows_per_symbol
    files, server, services, redis = set_up(
        case, workdir, workdir / f"{case.bots}x{case.symbols_per_bot}", profiled
    )
    bot_ids = [f"p{bot:02d}" for bot in range(case.bots)]
    streams = {pid: keys.market_stream("mexc", pid, "1m") for pid, _ in files}
    try:
        services.start("accounting")
        services.start("strategy")
        services.wait_ready("accounting")
        services.wait_ready("strategy")
        for _ in range(600):  # accounting creates each bot's state once it owns it
            if all([await redis.hget(keys.meta(bot), "seq") for bot in bot_ids]):
                break
            await asyncio.sleep(0.05)
        before = parse_histogram(services.metrics("accounting"), HISTOGRAM)
        cpu0 = services.cpu()
        replays = [f"--replay={pid}={path}" for pid, path in files]
        services.start("ingest", "--source=replay", "--speed=max", *replays)
        deadline = time.monotonic() + timeout_s
        first_ms: int | None = None
        ingest_end_ms: int | None = None
        strategy_end: float | None = None
        accounting_end: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now_ms = time.time() * 1000
            async with redis.pipeline(transaction=False) as pipe:
                for stream in streams.values():
                    pipe.xlen(stream)
                lengths = await pipe.execute()
            if first_ms is None and any(lengths):
                firsts = [await redis.xrange(s, count=1) for s in streams.values()]
                first_ms = min(entry_ms(str(f[0][0])) for f in firsts if f)
            if ingest_end_ms is None and sum(lengths) >= case.updates:
                ends = [await newest_entry(redis, s) for s in streams.values()]
                ingest_end_ms = max(entry_ms(e[0]) for e in ends if e)
            if ingest_end_ms is None:
                continue
            if strategy_end is None:
                async with redis.pipeline(transaction=False) as pipe:
                    for bot in range(case.bots):
                        for symbol in range(case.symbols_per_bot):
                            pid = product_id(bot, symbol)
                            pipe.hget(keys.strategy_state(f"p{bot:02d}", pid), "checkpoint")
                            pipe.xrevrange(streams[pid], count=1)
                    replies = await pipe.execute()
                marks, lasts = replies[0::2], replies[1::2]
                if all(
                    last and mark == last[0][0] for mark, last in zip(marks, lasts, strict=True)
                ):
                    strategy_end = now_ms
                continue
            async with redis.pipeline(transaction=False) as pipe:
                for bot_id in bot_ids:
                    pipe.hget(keys.accounting_state(bot_id), "checkpoint")
                    pipe.xrevrange(keys.events(bot_id), count=1)
                replies = await pipe.execute()
            if all(
                mark is not None and last and entry_key(str(mark)) >= entry_key(str(last[0][0]))
                for mark, last in zip(replies[0::2], replies[1::2], strict=True)
            ):
                accounting_end = now_ms
                break
        cpu1 = services.cpu()
        case.cpu = {name: cpu1.get(name, math.nan) - cpu0.get(name, 0.0) for name in cpu1}
        case.cpu["redis"] = math.nan
        if first_ms is not None and ingest_end_ms is not None:
            case.ingest_s = (ingest_end_ms - first_ms) / 1000
            if strategy_end is not None:
                case.strategy_s = (strategy_end - first_ms) / 1000
            if accounting_end is not None:
                case.accounting_s = (accounting_end - first_ms) / 1000
        await asyncio.sleep(1.2)  # the last refresh's publish
        observed = subtract_histograms(
            parse_histogram(services.metrics("accounting"), HISTOGRAM), before
        )
        case.p50_s = histogram_quantile(observed, 0.5)
        case.p99_s = histogram_quantile(observed, 0.99)
        case.refreshes = int(observed[-1][1]) if observed else 0
        services.stop_all()
        case.xadd_s = await pipelined_xadd(redis, list(streams.values()))
    finally:
        services.stop_all()
        await redis.aclose()
        server.stop()
    return case


@dataclass(slots=True)
class FillLatency:
    """Fill -> client: from the XADD of the market update a fill happened at to a websocket
    client's receipt of the refresh carrying it, at a paced replay rate."""

    symbols: int
    rate: float  # market updates/s, all symbols together
    seconds: float
    fills: int = 0  # fills accounting committed (TRADEs in Redis) during the window
    received: int = 0  # of those, received by the client
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    beyond_p50_s: float = math.nan  # the same less the wait SPEC 2.1 rule 10 imposes
    beyond_p99_s: float = math.nan
    beyond_max_s: float = math.nan
    cpu: dict[str, float] | None = None


def note_refresh(
    text: str | bytes,
    at_ms: float,
    received: dict[tuple[str, int], tuple[int, float]],
    refreshes_at: list[float],
) -> None:
    """Remember when each fill first reached the client, and when each refresh did."""
    message = orjson.loads(text)
    if message.get("action") != "refresh":
        return
    refreshes_at.append(at_ms)
    for symbol in message["data"]["symbols"]:
        for trade in symbol.get("trades", []):
            received.setdefault((symbol["product_id"], trade["order_id"]), (trade["time"], at_ms))


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max), nearest rank; NaN for none."""
    if not values:
        return math.nan, math.nan, math.nan
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


async def run_fill_latency(
    workdir: Path, rate: float, seconds: float, profiled: frozenset[str] = frozenset()
) -> FillLatency:
    """One bot of LATENCY_SYMBOLS symbols replayed at `rate` updates/s for `seconds`, a gateway
    and one client; every fill's latency from the XADD ms of the update it happened at (its
    stream entry id) to the client's receipt (wall clock ms, the same machine's clock)."""
    figures = FillLatency(LATENCY_SYMBOLS, rate, seconds)
    rows = int(rate / LATENCY_SYMBOLS * (seconds + 5))
    case = Case(1, LATENCY_SYMBOLS, rows)
    files, server, services, redis = set_up(case, workdir, workdir / "latency", profiled)
    received: dict[tuple[str, int], tuple[int, float]] = {}  # (symbol, order id) -> (time, at)
    refreshes_at: list[float] = []  # receipt ms of every refresh, in order
    try:
        services.start("accounting")
        services.start("strategy")
        port = services.start("gateway")
        for name in ("accounting", "strategy", "gateway"):
            services.wait_ready(name)
        for _ in range(600):
            if await redis.hget(keys.meta("p00"), "seq"):
                break
            await asyncio.sleep(0.05)
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as client:
            await client.send(orjson.dumps({"action": "init", "apiKey": f"{API_KEY}-0"}).decode())
            await client.recv()
            cpu0 = services.cpu()
            speed = rate / LATENCY_SYMBOLS * 60  # rows of 1m klines per second, per symbol
            replays = [f"--replay={pid}={path}" for pid, path in files]
            services.start("ingest", "--source=replay", f"--speed={speed:g}", *replays)

            async def read_refreshes() -> None:
                async for text in client:
                    note_refresh(text, time.time() * 1000, received, refreshes_at)

            reader = asyncio.create_task(read_refreshes())
            await asyncio.sleep(seconds)
            figures.cpu = {n: c - cpu0.get(n, 0.0) for n, c in services.cpu().items()}
            await asyncio.to_thread(services.stop, "ingest")
            await asyncio.sleep(1.5)  # what was in flight: committed, and received by then
            reader.cancel()
        latencies: list[float] = []
        beyond: list[float] = []  # the part not spent waiting for rule 10's spacing
        committed = 0
        for pid, _ in files:
            xadded: dict[int, int] = {}
            stream = keys.market_stream("mexc", pid, "1m")
            read = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream))
            for entry_id, fields in read:
                xadded.setdefault(int(fields["time"]), entry_ms(entry_id))
            trades = [orjson.loads(t) for t in await redis.lrange(keys.trades("p00", pid), 0, -1)]
            committed += len(trades)
            for trade in trades:
                got = received.get((pid, trade["order_id"]))
                if got is not None:
                    xadd_ms, at_ms = xadded[trade["time"]], got[1]
                    latencies.append((at_ms - xadd_ms) / 1000)
                    # SPEC 2.1 rule 10: no refresh sooner than 100 ms after the previous one
                    earlier = bisect_left(refreshes_at, at_ms) - 1
                    spaced_ms = refreshes_at[earlier] + 100 if earlier >= 0 else 0.0
                    beyond.append((at_ms - max(xadd_ms, spaced_ms)) / 1000)
        figures.fills, figures.received = committed, len(latencies)
        figures.p50_s, figures.p99_s, figures.max_s = quantiles(latencies)
        figures.beyond_p50_s, figures.beyond_p99_s, figures.beyond_max_s = quantiles(beyond)
    finally:
        services.stop_all()
        await redis.aclose()
        server.stop()
    return figures


async def pipelined_xadd(redis: Redis, streams: list[str]) -> float:
    """redis-py, pipelined (no MULTI), XADD of every entry the run wrote, to fresh streams of the
    same Redis, `XADD_BATCH` per round trip, streams interleaved as ingest writes them."""
    entries: list[tuple[str, list[tuple[str, dict[str, str]]]]] = []
    for stream in streams:
        read = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream))
        entries.append((stream.replace("market", "xadd-ceiling", 1), read))
    start = time.perf_counter()
    pending = 0
    pipe = redis.pipeline(transaction=False)
    longest = max(len(read) for _, read in entries)
    for offset in range(0, longest, XADD_BATCH):
        for target, read in entries:
            for _, fields in read[offset : offset + XADD_BATCH]:
                pipe.xadd(target, fields, maxlen=1_000_000, approximate=True)  # type: ignore[arg-type]
                pending += 1
                if pending >= XADD_BATCH:
                    await pipe.execute()
                    pending = 0
    if pending:
        await pipe.execute()
    return time.perf_counter() - start


def fmt_rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}/s"


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


def render(
    cases: list[Case], latency: FillLatency | None, machine: str, date: str, command: str
) -> str:
    lines = [
        BEGIN_MARK,
        "",
        f"Measured {date} on {machine}.",
        f"Command: `{command}`. Rates are updates / seconds from the first market entry's XADD"
        " (its entry id) to the moment the stage's checkpoints reached the end of its input.",
        "",
        "| symbols (bots x symbols) | updates | ingest (Lua XADD batches) | strategy done |"
        " accounting done = pipeline | pipelined XADD ceiling | pipeline / ceiling |"
        " update -> PUBLISH p50 | p99 | refreshes | CPU s: ingest, strategy, accounting |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for case in cases:
        pipeline = case.rate(case.accounting_s)
        ceiling = case.rate(case.xadd_s)
        cpu = case.cpu or {}
        cpus = ", ".join(
            f"{cpu.get(n, math.nan):.1f}" for n in ("ingest", "strategy", "accounting")
        )
        lines.append(
            f"| {case.symbols} ({case.bots} x {case.symbols_per_bot}) | {case.updates:,}"
            f" | {fmt_rate(case.rate(case.ingest_s))} | {fmt_rate(case.rate(case.strategy_s))}"
            f" | {fmt_rate(pipeline)} | {fmt_rate(ceiling)}"
            f" | {ratio(pipeline, ceiling):.2f}x | {ms(case.p50_s)} | {ms(case.p99_s)}"
            f" | {case.refreshes:,} | {cpus} |"
        )
    if latency is not None:
        cpu = latency.cpu or {}
        cpus = ", ".join(
            f"{cpu.get(n, math.nan):.1f}" for n in ("ingest", "strategy", "accounting", "gateway")
        )
        lines += [
            "",
            f"**Fill -> client**, paced: {latency.symbols} symbols of one bot replayed at"
            f" {latency.rate:,.0f} market updates/s for {latency.seconds:g} s through ingest,"
            " strategy, accounting and a gateway, one websocket client. Latency: from the XADD"
            " of the market update a fill happened at (its entry id's ms) to the client's"
            " receipt of the first refresh carrying the fill (wall clock ms, one machine).",
            "",
            "| updates/s | fills committed | received | p50 | p99 | max |"
            " beyond rule 10's wait: p50 | p99 | max | CPU s: ingest, strategy, accounting,"
            " gateway |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {latency.rate:,.0f} | {latency.fills:,} | {latency.received:,}"
            f" | {ms(latency.p50_s)} | {ms(latency.p99_s)} | {ms(latency.max_s)}"
            f" | {ms(latency.beyond_p50_s)} | {ms(latency.beyond_p99_s)}"
            f" | {ms(latency.beyond_max_s)} | {cpus} |",
            "",
            "*Beyond rule 10's wait*: the same latency less the time SPEC 2.1 rule 10 makes a"
            " fill wait (no refresh of a bot sooner than 100 ms after the previous one): from the"
            " later of the update's XADD and the previous refresh's receipt + 100 ms.",
        ]
    slowest = min((c.rate(c.accounting_s) for c in cases), default=math.nan)
    fill_p99 = math.nan if latency is None else latency.p99_s
    lines += [
        "",
        "| goal (issue 7) | measured | met |",
        "| --- | --- | --- |",
        f"| >= 20,000 market updates/s sustained | slowest size {fmt_rate(slowest)} |"
        f" {'yes' if slowest >= 20_000 else 'no'} |",
        f"| fill -> client p99 <= 100 ms | {ms(fill_p99)} | {'yes' if fill_p99 <= 0.1 else 'no'} |",
        "",
        END_MARK,
    ]
    return "\n".join(lines)


def print_profiles(directory: Path, profiled: frozenset[str], top: int = 25) -> None:
    for name in sorted(profiled):
        path = directory / f"{name}.prof"
        if path.exists():
            print(f"--- {path} (tottime) ---", flush=True)
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


async def measure(
    total_updates: int, timeout_s: float, profiled: frozenset[str], latency_s: float
) -> tuple[list[Case], FillLatency | None]:
    workdir = cache_dir() / "pipeline"
    workdir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    for bots, per_bot in LAYOUTS if total_updates else ():
        case = Case(bots, per_bot, max(100, total_updates // (bots * per_bot)))
        await run_case(case, workdir, timeout_s, profiled)
        print(
            f"  {case.symbols:>3} symbols: {case.updates:,} updates;"
            f" ingest {fmt_rate(case.rate(case.ingest_s))},"
            f" strategy {fmt_rate(case.rate(case.strategy_s))},"
            f" pipeline {fmt_rate(case.rate(case.accounting_s))},"
            f" XADD ceiling {fmt_rate(case.rate(case.xadd_s))};"
            f" update->publish p50 {ms(case.p50_s)} p99 {ms(case.p99_s)}; cpu {case.cpu}",
            flush=True,
        )
        print_profiles(workdir / f"{bots}x{per_bot}", profiled)
        cases.append(case)
    latency = None
    if latency_s > 0:
        latency = await run_fill_latency(workdir, LATENCY_RATE, latency_s, profiled)
        print(
            f"  fill -> client at {latency.rate:,.0f} updates/s: {latency.received:,} of"
            f" {latency.fills:,} fills received; p50 {ms(latency.p50_s)} p99 {ms(latency.p99_s)}"
            f" max {ms(latency.max_s)}; beyond rule 10's wait p50 {ms(latency.beyond_p50_s)}"
            f" p99 {ms(latency.beyond_p99_s)} max {ms(latency.beyond_max_s)}; cpu {latency.cpu}",
            flush=True,
        )
        print_profiles(workdir / "latency", profiled)
    return cases, latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.pipeline_speed", description=__doc__)
    parser.add_argument("--updates", type=int, default=200_000, help="market updates per size")
    parser.add_argument("--quick", action="store_true", help="20,000 updates per size, 10 s paced")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--doc", type=Path, default=DOC_PATH)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per size at most")
    parser.add_argument(
        "--latency-seconds", type=float, default=LATENCY_SECONDS, help="the paced run; 0: none"
    )
    parser.add_argument(
        "--profile",
        default="",
        help="comma-separated services to run under cProfile (e.g. strategy,accounting); "
        "their top functions are printed after each run",
    )
    args = parser.parse_args(argv)
    updates = 20_000 if args.quick else args.updates
    latency_s = min(args.latency_seconds, 10.0) if args.quick else args.latency_seconds
    profiled = frozenset(name for name in args.profile.split(",") if name)
    cases, latency = asyncio.run(measure(updates, args.timeout, profiled, latency_s))
    command = "python -m benches.pipeline_speed" + (" --quick" if args.quick else "")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    block = render(cases, latency, machine_line(PACKAGES), date, command)
    print(block)
    if not args.no_doc and not profiled and cases and latency is not None:
        write_section(args.doc, block, BEGIN_MARK, END_MARK)
        print(f"wrote {args.doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
