"""Fan-out: one bot's refreshes from Redis to many websocket clients, Bandwagon's gateway beside a
minimal plain-`websockets` broadcast server (the ceiling) and the FastAPI-docs pattern (what a
user would write), all measured in one run under the same load (issue 7, point 1).

    python -m benches.fanout [--quick] [--no-doc] [--profile]     (`make bench` runs it)

Every server runs in its own process on loopback, behind one private redis-server; clients come
from `benches.loadgen` processes (lean raw-asyncio clients), refreshes from a
`benches.fanout_publish` process that commits them as accounting does. Each run is bounded in
time and stops by itself. The figures go to a table, `docs/fanout.png`, and, unless `--no-doc`,
the fan-out block of docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis

from benches.data import ROOT, cache_dir
from benches.doc_section import write_section
from benches.fanout_publish import seed_history, trim_history, write_bots_file
from benches.loadgen_stats import (
    cpu_seconds,
    percentile,
    raise_open_files,
    ratio,
    rss_bytes,
)
from benches.processes import is_ready, service_env
from benches.timing import machine_line
from libs.config import BotConfig
from libs.store import keys
from libs.store.bot_state import ensure_state, publish_api_keys
from libs.store.published import init_message, read_snapshot
from tools.run.redis_server import RedisServer, free_port

DOC_PATH = ROOT / "docs" / "benchmarks.md"
PLOT_PATH = ROOT / "docs" / "fanout.png"
BEGIN_MARK = "<!-- fanout:begin (written by python -m benches.fanout) -->"
END_MARK = "<!-- fanout:end -->"
PACKAGES = ("uvicorn", "websockets", "fastapi", "uvloop", "redis", "orjson")
FAN_BOT, FULL_BOT = "fan", "full"
KEYS = {FAN_BOT: "bench-fanout-key-0123456789abcdef", FULL_BOT: "bench-init-key-0123456789abcdef"}
KEY_ENVS = {FAN_BOT: "FAN_BOT_KEY", FULL_BOT: "FULL_BOT_KEY"}
SERVERS = ("gateway", "plain", "fastapi")
LABELS = {"gateway": "Bandwagon gateway", "plain": "plain websockets", "fastapi": "FastAPI docs"}
CLIENTS_PER_LOADGEN = 2500
P99_LIMIT_S = 0.100
PROFILE_LOAD = (1000, 10.0)  # clients, refreshes/s of the cProfiled gateway run (--profile)


@dataclass(frozen=True, slots=True)
class Sizes:
    clients: tuple[int, ...] = (1000, 5000, 10000)
    seconds: float = 20.0
    saturation_clients: int = 2000
    saturation_rates: tuple[float, ...] = (2, 5, 10, 20, 40)
    scale_clients_per_gateway: int = 2000
    scale_rate: float = 2.0
    init_sequential: int = 200
    init_burst: int = 100


QUICK = Sizes(
    clients=(100, 300, 1000),
    seconds=6.0,
    saturation_clients=300,
    saturation_rates=(5, 20),
    scale_clients_per_gateway=300,
    scale_rate=2.0,
    init_sequential=50,
    init_burst=100,
)


@dataclass(slots=True)
class Run:
    """One steady fan-out run: `servers` processes of `kind`, `clients` clients, `rate`/s."""

    kind: str
    clients: int
    rate: float
    servers: int = 1
    connected: int = 0
    published: int = 0
    expected: int = 0
    delivered: int = 0
    missed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    spread_p99_s: float = math.nan
    server_cpu: float = math.nan  # cores, all server processes
    loadgen_cpu: float = math.nan  # cores, all load generator processes
    rss_per_conn: float = math.nan  # bytes
    refresh_bytes: float = 0.0
    closes: dict[str, int] = field(default_factory=dict)

    @property
    def deliveries_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else math.nan


@dataclass(slots=True)
class InitFigures:
    build_p50_s: float
    build_p99_s: float
    read_p50_s: float  # the raw Redis reads alone (the build's floor)
    sequential_p50_s: float
    sequential_p99_s: float
    burst_p50_s: float
    burst_p99_s: float
    burst_max_s: float
    init_bytes: int


@dataclass(slots=True)
class Bench:
    workdir: Path
    redis_url: str
    config: Path
    bots: dict[str, BotConfig]
    profile: bool = False

    def env(self, **extra: str) -> dict[str, str]:
        key_env = {KEY_ENVS[bot]: key for bot, key in KEYS.items()}
        return service_env(self.redis_url, self.config, **key_env, **extra)

    async def start_server(self, kind: str, tag: str) -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        log = (self.workdir / f"{kind}-{tag}.log").open("ab")
        if kind == "gateway":
            prefix = [sys.executable]
            if self.profile:
                prefix += ["-m", "cProfile", "-o", str(self.workdir / f"gateway-{tag}.prof")]
            argv = [*prefix, "-m", "tools.cli", "gateway"]
        else:
            argv = [sys.executable, "-m", "benches.fanout_servers", kind, "--port", str(port)]
            argv += ["--redis-url", self.redis_url, "--bot", FAN_BOT]
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=self.env(GATEWAY_PORT=str(port)),
            stdout=log,
            stderr=log,
            preexec_fn=raise_open_files,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{kind} exited at start; see {self.workdir}")
            if is_ready(port) if kind == "gateway" else _listening(port):
                return process, port
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{kind} not ready on port {port} in 30 s")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 20.0) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def read_json_line(process: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    if not line:
        raise RuntimeError("a load generator exited early")
    document: dict[str, Any] = orjson.loads(line)
    return document


async def steady(bench: Bench, kind: str, clients: int, rate: float, seconds: float,
                 servers: int = 1) -> Run:  # fmt: skip
    run = Run(kind=kind, clients=clients, rate=rate, servers=servers)
    redis = Redis.from_url(bench.redis_url, decode_responses=True)
    await trim_history(redis, bench.bots[FAN_BOT])
    await redis.aclose()
    tag = f"{clients}x{rate:g}x{servers}"
    started = [await bench.start_server(kind, f"{tag}-{index}") for index in range(servers)]
    pids = [process.pid for process, _ in started]
    rss_before = sum(rss_bytes(pid) for pid in pids)
    per_server = clients // servers
    chunks: list[tuple[int, int, int]] = []  # (server port, first index, count)
    index = 0
    for _, port in started:
        remaining = per_server
        while remaining > 0:
            count = min(CLIENTS_PER_LOADGEN, remaining)
            chunks.append((port, index, count))
            index += count
            remaining -= count
    loadgens: list[asyncio.subprocess.Process] = []
    outs: list[Path] = []
    try:
        for number, (port, first, count) in enumerate(chunks):
            out = bench.workdir / f"records-{kind}-{tag}-{number}.npz"
            outs.append(out)
            path = "/ws"
            argv = [sys.executable, "-m", "benches.loadgen", "steady"]
            argv += ["--url", f"ws://127.0.0.1:{port}{path}", "--key", KEYS[FAN_BOT]]
            argv += ["--clients", str(count), "--first-index", str(first), "--out", str(out)]
            argv += ["--max-seconds", str(seconds + 240)]
            loadgens.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    preexec_fn=raise_open_files,
                )
            )
        for loadgen in loadgens:
            ready = await read_json_line(loadgen, 240)
            run.connected += int(ready["ready"])
        await asyncio.sleep(1.0)  # let the connect burst's garbage settle
        rss_after = sum(rss_bytes(pid) for pid in pids)
        run.rss_per_conn = (rss_after - rss_before) / max(1, run.connected)
        server_cpu0 = sum(cpu_seconds(pid) for pid in pids)
        loadgen_cpu0 = sum(cpu_seconds(loadgen.pid) for loadgen in loadgens)
        wall0 = time.monotonic()
        published_path = bench.workdir / f"published-{kind}-{tag}.json"
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benches.fanout_publish", "--redis-url", bench.redis_url,
            "--config", str(bench.config), "--bot", FAN_BOT, "--rate", str(rate),
            "--seconds", str(seconds), "--out", str(published_path), cwd=ROOT,
        )  # fmt: skip
        await asyncio.wait_for(publisher.wait(), seconds + 60)
        await asyncio.sleep(1.5)  # the last refresh's deliveries
        wall = time.monotonic() - wall0
        run.server_cpu = (sum(cpu_seconds(pid) for pid in pids) - server_cpu0) / wall
        run.loadgen_cpu = (
            sum(cpu_seconds(loadgen.pid) for loadgen in loadgens) - loadgen_cpu0
        ) / wall
        for loadgen in loadgens:
            assert loadgen.stdin is not None
            loadgen.stdin.write(b"stop\n")
            await loadgen.stdin.drain()
        for loadgen in loadgens:
            done = await read_json_line(loadgen, 60)
            for code, count in done["closes"].items():
                run.closes[code] = run.closes.get(code, 0) + int(count)
            await loadgen.wait()
    finally:
        for loadgen in loadgens:
            if loadgen.returncode is None:
                loadgen.kill()
                await loadgen.wait()
        for process, _ in started:
            await stop_process(process)
    published_doc = orjson.loads(published_path.read_bytes())
    published = {int(seq): int(at) for seq, at in published_doc["published"].items()}
    run.refresh_bytes = float(published_doc["bytes"])
    analyse(run, published, outs, seconds)
    return run


def analyse(run: Run, published: dict[int, int], outs: Sequence[Path], seconds: float) -> None:
    """Latency PUBLISH -> receive, spread first -> last client per seq, missed and dropped."""
    arrays = [np.load(out) for out in outs]
    clients = np.concatenate([a["clients"] for a in arrays])
    seqs = np.concatenate([a["seqs"] for a in arrays])
    times = np.concatenate([a["times_ns"] for a in arrays])
    if not published:
        return
    first, last = min(published), max(published)
    at = np.full(last - first + 1, -1, dtype=np.int64)
    for seq, ns in published.items():
        at[seq - first] = ns
    mine = (seqs >= first) & (seqs <= last)
    clients, seqs, times = clients[mine], seqs[mine], times[mine]
    unique = np.unique(clients * (last + 1) + seqs)
    run.published = len(published)
    run.expected = run.connected * len(published)
    run.delivered = int(unique.size)
    run.missed = run.expected - run.delivered
    run.dropped = sum(count for code, count in run.closes.items())
    run.seconds = seconds
    if not seqs.size:
        return
    latency = (times - at[seqs - first]) / 1e9
    run.p50_s = float(np.percentile(latency, 50))
    run.p99_s = float(np.percentile(latency, 99))
    run.max_s = float(latency.max())
    order = np.argsort(seqs, kind="stable")
    sorted_seqs, sorted_times = seqs[order], times[order]
    bounds = np.flatnonzero(np.diff(sorted_seqs)) + 1
    starts = np.concatenate([[0], bounds])
    spreads = (
        np.maximum.reduceat(sorted_times, starts) - np.minimum.reduceat(sorted_times, starts)
    ) / 1e9
    run.spread_p99_s = float(np.percentile(spreads, 99))


async def init_figures(bench: Bench, sizes: Sizes) -> InitFigures:
    """The init of 3 symbols x 300 klines + 500 trades: built in this process (read + build),
    then over a gateway, one client at a time and `init_burst` clients at once."""
    redis = Redis.from_url(bench.redis_url, decode_responses=True)
    builds: list[float] = []
    reads: list[float] = []
    size = 0
    bot = bench.bots[FULL_BOT]
    for _ in range(60):
        start = time.perf_counter()
        size = len(init_message(await read_snapshot(redis, FULL_BOT)))
        builds.append(time.perf_counter() - start)
        start = time.perf_counter()
        async with redis.pipeline(transaction=True) as tx:
            tx.hgetall(keys.status(FULL_BOT))
            for symbol in bot.symbols:
                tx.hgetall(keys.symbol(FULL_BOT, symbol.product_id))
                tx.lrange(keys.klines(FULL_BOT, symbol.product_id), -300, -1)
                tx.lrange(keys.trades(FULL_BOT, symbol.product_id), -500, -1)
            await tx.execute()
        reads.append(time.perf_counter() - start)
    await redis.aclose()
    process, port = await bench.start_server("gateway", "init")
    out = bench.workdir / "init.json"
    try:
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benches.loadgen", "init", "--url",
            f"ws://127.0.0.1:{port}/ws", "--key", KEYS[FULL_BOT], "--sequential",
            str(sizes.init_sequential), "--burst", str(sizes.init_burst), "--out", str(out),
            "--max-seconds", "120", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await read_json_line(loadgen, 150)
        await loadgen.wait()
    finally:
        await stop_process(process)
    done = orjson.loads(out.read_bytes())
    sequential = [ns / 1e9 for ns in done["sequential_ns"]]
    burst = [ns / 1e9 for ns in done["burst_ns"]]
    return InitFigures(
        build_p50_s=percentile(builds, 0.5),
        build_p99_s=percentile(builds, 0.99),
        read_p50_s=percentile(reads, 0.5),
        sequential_p50_s=percentile(sequential, 0.5),
        sequential_p99_s=percentile(sequential, 0.99),
        burst_p50_s=percentile(burst, 0.5),
        burst_p99_s=percentile(burst, 0.99),
        burst_max_s=max(burst, default=math.nan),
        init_bytes=size,
    )


# --- report -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def run_row(run: Run, reference: Run | None) -> str:
    spread_ratio = ratio(run.spread_p99_s, reference.spread_p99_s) if reference else math.nan
    rss_ratio = ratio(run.rss_per_conn, reference.rss_per_conn) if reference else math.nan
    seqs = "all" if run.missed == 0 else f"{run.missed:,} missed"
    return (
        f"| {LABELS[run.kind]} | {run.clients:,} | {run.rate:g}/s | {run.connected:,}"
        f" | {seqs} | {run.dropped:,} | {ms(run.p50_s)} | {ms(run.p99_s)} | {ms(run.max_s)}"
        f" | {ms(run.spread_p99_s)} | {times(spread_ratio)} | {run.deliveries_per_s:,.0f}"
        f" | {run.server_cpu:.2f} | {run.rss_per_conn / 1024:.1f} KiB | {times(rss_ratio)}"
        f" | {run.loadgen_cpu:.2f} |"
    )


HEADER = (
    "| server | clients | refreshes | connected | every seq delivered | closed | p50 | p99 | max"
    " | spread p99 | spread / plain | delivered/s | server CPU (cores) | RSS per connection"
    " | RSS / plain | clients' CPU (cores) |\n"
    "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    " ---: | ---: | ---: |"
)


@dataclass(slots=True)
class Figures:
    fanout: list[Run]
    saturation: list[Run]
    scale: list[Run]
    init: InitFigures | None
    machine: str
    date: str
    command: str


def reference_of(run: Run, runs: Sequence[Run]) -> Run | None:
    return next(
        (r for r in runs if r.kind == "plain" and r.clients == run.clients and r.rate == run.rate),
        None,
    )


def render(figures: Figures) -> str:
    lines = [
        BEGIN_MARK,
        "",
        f"Measured {figures.date} on {figures.machine}.",
        f"Command: `{figures.command}`. Latency: from just before the EXEC that PUBLISHes a"
        " refresh to a client's receipt of its last byte (CLOCK_MONOTONIC, one machine).",
        "",
        "**Fan-out at 1 refresh/s** (one server process, one bot, refresh of"
        f" {figures.fanout[0].refresh_bytes / 1024:.1f} KiB, 3 symbols):"
        if figures.fanout
        else "",
        "",
        HEADER,
    ]
    for run in figures.fanout:
        lines.append(run_row(run, reference_of(run, figures.fanout)))
    lines += ["", "**Saturation** (the refresh rate raised; every rate is run, since one run's p99"]
    lines += ["can pass 100 ms by a neighbour's burst on this shared machine):", "", HEADER]
    for run in figures.saturation:
        lines.append(run_row(run, reference_of(run, figures.saturation)))
    lines.append("")
    for kind in ("gateway", "plain"):
        within = [r for r in figures.saturation if r.kind == kind and r.p99_s <= P99_LIMIT_S]
        best = max(within, key=lambda r: r.deliveries_per_s, default=None)
        reached = (
            "none within 100 ms"
            if best is None
            else (
                f"{best.deliveries_per_s:,.0f} deliveries/s ({best.clients:,} clients x"
                f" {best.rate:g}/s, p99 {ms(best.p99_s)}, {best.server_cpu:.2f} cores)"
            )
        )
        lines.append(f"- {LABELS[kind]}: highest rate with p99 <= 100 ms: {reached}")
    lines += ["", "**Scale** (N gateway processes behind the same Redis, clients split evenly):"]
    lines += ["", HEADER]
    for run in figures.scale:
        row = run_row(run, None).replace(LABELS["gateway"], f"{run.servers} x gateway", 1)
        lines.append(row)
    if figures.init is not None:
        init = figures.init
        lines += [
            "",
            f"**Init** (3 symbols x 300 klines + 500 trades, {init.init_bytes / 1024:.0f} KiB):",
            "",
            "| what | p50 | p99 | max | ceiling beside it | ratio (p50) |",
            "| --- | ---: | ---: | ---: | --- | ---: |",
            "| read + build (`read_snapshot` + `init_message`, in process)"
            f" | {ms(init.build_p50_s)} | {ms(init.build_p99_s)} |"
            f" | the same Redis reads, no JSON: {ms(init.read_p50_s)}"
            f" | {times(ratio(init.build_p50_s, init.read_p50_s))} |",
            f"| one client: connect, handshake, init, reply received | {ms(init.sequential_p50_s)}"
            f" | {ms(init.sequential_p99_s)} | | | |",
            f"| 100 clients reconnecting at once: connect to reply | {ms(init.burst_p50_s)}"
            f" | {ms(init.burst_p99_s)} | {ms(init.burst_max_s)} | | |",
        ]
    lines += ["", "![p99 latency and deliveries/s against clients](fanout.png)", ""]
    lines += goals(figures)
    lines += ["", END_MARK]
    return "\n".join(lines)


def goals(figures: Figures) -> list[str]:
    rows = ["| goal (issue 7) | measured | met |", "| --- | --- | --- |"]
    biggest = [r for r in figures.fanout if r.kind == "gateway"]
    if biggest:
        top = max(biggest, key=lambda r: r.clients)
        held = top.missed == 0 and top.dropped == 0
        rows.append(
            f"| one gateway holds {top.clients:,} clients at 1 refresh/s, no missed seq, none"
            f" dropped | {top.connected:,} connected, {top.missed:,} missed, {top.dropped:,}"
            f" closed | {'yes' if held else 'no'} |"
        )
    for run in biggest:
        plain = reference_of(run, figures.fanout)
        fastapi = next(
            (r for r in figures.fanout if r.kind == "fastapi" and r.clients == run.clients), None
        )
        if plain is None or fastapi is None:
            continue
        spread_x = ratio(run.spread_p99_s, plain.spread_p99_s)
        met = spread_x <= 1.25 and run.spread_p99_s < fastapi.spread_p99_s
        rows.append(
            f"| {run.clients:,} clients: spread p99 <= 1.25x plain and below FastAPI docs"
            f" | {ms(run.spread_p99_s)} = {times(spread_x)} plain ({ms(plain.spread_p99_s)});"
            f" FastAPI {ms(fastapi.spread_p99_s)} | {'yes' if met else 'no'} |"
        )
        rss_x = ratio(run.rss_per_conn, plain.rss_per_conn)
        rows.append(
            f"| {run.clients:,} clients: memory per connection <= 1.25x plain"
            f" | {run.rss_per_conn / 1024:.1f} KiB = {times(rss_x)} plain"
            f" ({plain.rss_per_conn / 1024:.1f} KiB) | {'yes' if rss_x <= 1.25 else 'no'} |"
        )
    one = next((r for r in figures.scale if r.servers == 1), None)
    two = next((r for r in figures.scale if r.servers == 2), None)
    if one is not None and two is not None:
        met = two.clients >= 2 * one.clients and two.p99_s <= one.p99_s * 1.25
        rows.append(
            f"| two gateways serve twice the clients at the same p99 | {one.clients:,} clients:"
            f" {ms(one.p99_s)}; {two.clients:,}: {ms(two.p99_s)} | {'yes' if met else 'no'} |"
        )
    if figures.init is not None:
        met = figures.init.build_p99_s <= 0.020
        rows.append(
            f"| init p99 <= 20 ms | build {ms(figures.init.build_p99_s)}, one client end to end"
            f" {ms(figures.init.sequential_p99_s)} | {'yes' if met else 'no'} |"
        )
    return rows


def plot(figures: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in SERVERS:
        runs = sorted((r for r in figures.fanout if r.kind == kind), key=lambda r: r.clients)
        if not runs:
            continue
        xs = [r.clients for r in runs]
        left.plot(xs, [r.p99_s * 1000 for r in runs], marker="o", label=LABELS[kind])
        right.plot(xs, [r.deliveries_per_s for r in runs], marker="o", label=LABELS[kind])
    left.set_xlabel("clients")
    left.set_ylabel("p99 PUBLISH -> client (ms)")
    left.set_yscale("log")
    right.set_xlabel("clients")
    right.set_ylabel("deliveries/s at 1 refresh/s")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(f"Fan-out of one bot, 1 refresh/s ({figures.date})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_run(run: Run) -> None:
    print(
        f"  {run.kind:8} x{run.servers} clients {run.clients:>6,} rate {run.rate:>4g}/s"
        f" connected {run.connected:>6,} missed {run.missed:>5,} closed {run.dropped:>4,}"
        f" p50 {ms(run.p50_s):>9} p99 {ms(run.p99_s):>9} max {ms(run.max_s):>9}"
        f" spread99 {ms(run.spread_p99_s):>9} deliv/s {run.deliveries_per_s:>8,.0f}"
        f" cpu {run.server_cpu:.2f} rss/conn {run.rss_per_conn / 1024:.1f}K"
        f" clients-cpu {run.loadgen_cpu:.2f}",
        flush=True,
    )


async def measure(args: argparse.Namespace) -> Figures:
    sizes = QUICK if args.quick else Sizes()
    workdir = cache_dir() / "fanout"
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("*"):
        if stale.is_file():
            stale.unlink()
    redis_server = RedisServer(workdir / "redis").start()
    try:
        config = workdir / "bots.yaml"
        bots = {bot.id: bot for bot in write_bots_file(config, KEY_ENVS).bots}
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        from pydantic import SecretStr

        for bot in bots.values():
            await ensure_state(redis, bot, 0)
        await publish_api_keys(redis, {bot: SecretStr(key) for bot, key in KEYS.items()})
        await seed_history(redis, bots[FULL_BOT], 300, 500)
        await redis.aclose()
        bench = Bench(workdir, redis_server.url, config, bots)
        figures = Figures([], [], [], None, machine_line(PACKAGES), "", "")
        only = set(args.only or ["fanout", "saturation", "scale", "init"])
        if "init" in only:
            figures.init = await init_figures(bench, sizes)
            print(f"  init: {figures.init}", flush=True)
        if "fanout" in only:
            for clients in sizes.clients:
                for kind in SERVERS:
                    run = await steady(bench, kind, clients, 1.0, sizes.seconds)
                    print_run(run)
                    figures.fanout.append(run)
        if "saturation" in only:
            for kind in ("gateway", "plain"):
                for rate in sizes.saturation_rates:
                    seconds = max(4.0, sizes.seconds / 2)
                    run = await steady(bench, kind, sizes.saturation_clients, rate, seconds)
                    print_run(run)
                    figures.saturation.append(run)
                    if run.p99_s > 3 * P99_LIMIT_S:  # well past it: no need to go higher
                        break
        if "scale" in only:
            for servers in (1, 2, 3):
                clients = sizes.scale_clients_per_gateway * servers
                run = await steady(
                    bench, "gateway", clients, sizes.scale_rate, sizes.seconds, servers
                )
                print_run(run)
                figures.scale.append(run)
        if args.profile:
            bench.profile = True
            clients, rate = PROFILE_LOAD
            run = await steady(bench, "gateway", clients, rate, sizes.seconds)
            print_run(run)
            print_profile(workdir / f"gateway-{clients}x{rate:g}x1-0.prof")
    finally:
        redis_server.stop()
    return figures


def print_profile(path: Path) -> None:
    import pstats

    with contextlib.suppress(OSError):
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.fanout", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a try")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--doc", type=Path, default=DOC_PATH)
    parser.add_argument("--plot", type=Path, default=PLOT_PATH)
    parser.add_argument("--profile", action="store_true", help="also a cProfiled gateway run")
    parser.add_argument(
        "--only", action="append", choices=("fanout", "saturation", "scale", "init", "none")
    )
    args = parser.parse_args(argv)
    raise_open_files()
    figures = asyncio.run(measure(args))
    figures.date = datetime.now(UTC).strftime("%Y-%m-%d")
    figures.command = "python -m benches.fanout" + (" --quick" if args.quick else "")
    block = render(figures)
    print(block)
    if not args.no_doc:
        if figures.fanout:
            plot(figures, args.plot)
        write_section(args.doc, block, BEGIN_MARK, END_MARK)
        print(f"wrote {args.doc.relative_to(ROOT)} and {args.plot.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
