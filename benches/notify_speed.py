"""Notification speed (issue 18, SPEC section 6): the real `bandwagon notify` process on a private
redis-server, posting to webhook receivers served by uvicorn in this process, on loopback.

    python -m benches.notify_speed [--quick] [--no-doc] [--profile]   (`make bench` runs it)

Fills are committed to the bots' notify feeds exactly as accounting commits them
(`libs.store.notices.stage_fills` in a MULTI), so every figure is about what notify does with
committed fills. The receivers (`tests.support.receiver.Receiver`) check every signature. The
reference of each figure is measured in the same run: a plain `httpx.AsyncClient` in a process of
its own (`--client` mode of this module, the default asyncio loop as notify's) posting the same
signed bodies to a receiver of the same kind. Four runs, each on a fresh redis-server and notify
process, each bounded in time:

1. **Throughput, one webhook**: N fills of one bot committed before notify starts; from notify's
   `/readyz` answering 200 (polled every 10 ms) to the receiver holding all N deliveries.
   Reference: the plain client posting the same N bodies one after another (one attempt in
   flight, as notify's sender per webhook), from its go to the receiver holding all N.
2. **Fill -> receiver latency**: one fill committed RATE times a second to one bot with one
   webhook; from just before the commit's EXEC to the receiver's complete request
   (CLOCK_MONOTONIC, which is one clock for every process of the machine). Reference: the plain
   client posting the same bodies at the same pace: its round trip, and from just before its
   send to the receiver's complete request.
3. **Isolation**: as 2, with K more webhooks whose receiver never answers: as many as fit
   beside the healthy one on the measured bot (they hear every fill), the rest on other bots,
   8 a bot, given one fill each before the paced run (their senders retry it all along). The
   healthy webhook's latency beside 2's.
4. **Scale of creation**: B bots with one webhook each, F fills per bot committed at once (one
   MULTI per bot, side by side) while notify runs; from before the first commit to the receiver
   holding all B x F, beside 1's rates.

Every run checks what arrived: each delivery once, in id order per webhook, signature valid.
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
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from benches.data import ROOT, cache_dir
from benches.doc_section import write_section
from benches.loadgen_stats import cpu_seconds, own_cpu_seconds, percentile, ratio, rss_bytes
from benches.processes import service_env
from benches.timing import machine_line
from libs.config import MAX_WEBHOOKS, load_bots
from libs.store import keys
from libs.store.notices import stage_fills
from libs.wire.notifications import fill_body, signed_headers
from tests.support.receiver import Receiver, Reply
from tools.run.redis_server import RedisServer, free_port

DOC_PATH = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- notify-speed:begin (written by python -m benches.notify_speed) -->"
END_MARK = "<!-- notify-speed:end -->"
PACKAGES = ("httpx", "uvicorn", "httptools", "uvloop", "redis", "hiredis", "orjson")
SECRET_ENV = "BENCH_HOOK_SECRET"
SECRET = "bench-notify-secret-0123456789abcdef"
EPOCH = "0123456789abcdef"
PRODUCT_ID = "ETH-USDT"
COMMIT_BATCH = 200  # fills per MULTI of a backlog committed before notify starts
READY_POLL_S = 0.01
ATTEMPT_TIMEOUT_S = 5.0  # the plain client's timeout: SPEC's 5 s, as notify's
BOT_YAML = """\
  - id: {bot}
    symbols:
      - {{product_id: {product_id}, min_size: "0.001", price_decimals: 2}}
    notify:
{hooks}
"""
HOOK_YAML = '      - {{url: "{url}", secret_env: {secret_env}, allow_http: true, events: [fill]}}\n'


@dataclass(frozen=True, slots=True)
class Sizes:
    deliveries: int  # run 1
    rate: float  # runs 2 and 3: fills/s
    seconds: float  # runs 2 and 3
    dead_hooks: int  # run 3
    bots: int  # run 4
    fills_per_bot: int  # run 4


FULL = Sizes(deliveries=2_000, rate=50.0, seconds=10.0, dead_hooks=20, bots=100, fills_per_bot=20)
QUICK = Sizes(deliveries=300, rate=50.0, seconds=4.0, dead_hooks=20, bots=50, fills_per_bot=10)


# --- what is committed and what arrives (pure) -------------------------------------------------


def bench_trade(order_id: int) -> dict[str, Any]:
    """A TRADE as accounting publishes it (SPEC section 2, TRADE): an opening taker buy."""
    return {
        "order_id": order_id,
        "time": 1_700_000_000_000 + order_id * 60_000,
        "execution_time": 0,
        "slippage": 0.0,
        "type": "buy",
        "size": "0.250",
        "fee": 0.5,
        "price": "2000.00",
        "order_type": "taker",
        "action": "BollingerBands_buy_long",
        "profit": 0.0,
        "usdtProfit": 0.0,
        "position_side": "long",
    }


def trade_json(order_id: int) -> bytes:
    """The TRADE's bytes as a refresh carries them, and as the feed entry holds them."""
    return orjson.dumps(bench_trade(order_id))


def delivery_id_of(order_id: int) -> str:
    return f"{EPOCH}:{order_id}:fill"


def order_of(delivery_id: str) -> int:
    return int(delivery_id.split(":")[1])


def reference_body(bot: str, order_id: int) -> bytes:
    """The very body notify sends for the fill's `fill` delivery (it decodes the feed's TRADE
    bytes and encodes the body with the same function)."""
    trade = orjson.loads(trade_json(order_id))
    return fill_body(bot=bot, epoch=EPOCH, product_id=PRODUCT_ID, trade=trade, kind="fill")


def bots_yaml(hooks: Mapping[str, Sequence[str]]) -> str:
    """A bots file: each bot (id -> its webhook URLs) on one symbol, every webhook signed with
    `SECRET_ENV`'s secret and hearing `fill` (each bench fill is one delivery)."""
    parts = ["bots:\n"]
    for bot, urls in hooks.items():
        lines = "".join(HOOK_YAML.format(url=url, secret_env=SECRET_ENV) for url in urls)
        parts.append(BOT_YAML.format(bot=bot, product_id=PRODUCT_ID, hooks=lines.rstrip("\n")))
    return "".join(parts)


def dead_layout(dead: int, per_bot: int = MAX_WEBHOOKS) -> list[int]:
    """Dead webhooks per bot: as many as fit beside the healthy one on the measured bot (first),
    then `per_bot` a bot."""
    counts = [min(dead, per_bot - 1)]
    left = dead - counts[0]
    while left > 0:
        counts.append(min(left, per_bot))
        left -= counts[-1]
    return counts


def dead_label(dead: int) -> str:
    """Where run 3's dead webhooks are, for the table."""
    layout = dead_layout(dead)
    label = f"{layout[0]} beside the healthy one, hearing every fill"
    if len(layout) > 1:
        others = " + ".join(str(n) for n in layout[1:])
        label += f"; {others} on {len(layout) - 1} other bots, one fill each"
    return label


def latencies_s(
    committed: Mapping[int, float], arrived: Sequence[tuple[str, float]]
) -> list[float]:
    """Per delivery (id, arrival), first arrival only: arrival less the commit of its fill."""
    seen: set[str] = set()
    found: list[float] = []
    for delivery_id, at_s in arrived:
        if delivery_id in seen:
            continue
        seen.add(delivery_id)
        commit = committed.get(order_of(delivery_id))
        if commit is not None:
            found.append(at_s - commit)
    return found


def problems(ids: Sequence[str], expected: Sequence[str], bad_signatures: int) -> list[str]:
    """What is wrong with what one webhook received: repeats, missing ids, order, signatures."""
    found: list[str] = []
    if len(set(ids)) != len(ids):
        found.append(f"{len(ids) - len(set(ids))} repeated")
    missing = len(set(expected) - set(ids))
    if missing:
        found.append(f"{missing} missing")
    first = list(dict.fromkeys(ids))  # first arrivals: a repeat is allowed on the wire
    wanted, got = set(expected), set(ids)
    if [i for i in first if i in wanted] != [i for i in expected if i in got]:
        found.append("out of id order")
    if bad_signatures:
        found.append(f"{bad_signatures} bad signatures")
    return found


@dataclass(frozen=True, slots=True)
class Spread:
    p50: float
    p99: float
    count: int


def spread(values: Sequence[float]) -> Spread:
    return Spread(percentile(values, 0.5), percentile(values, 0.99), len(values))


# --- processes ---------------------------------------------------------------------------------


class NotifyProcess:
    """`bandwagon notify` as deployed, on the bench's Redis and bots file."""

    def __init__(self, workdir: Path, redis_url: str, config: Path, profiled: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = service_env(
            redis_url,
            config,
            **{SECRET_ENV: SECRET, "HEALTH_PORT": str(self.port), "WORKER_ID": "notify-bench"},
        )
        self.profile = workdir / "notify.prof" if profiled else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        profile = [] if self.profile is None else ["-m", "cProfile", "-o", str(self.profile)]
        with (self.workdir / "notify.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *profile, "-m", "tools.cli", "notify"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def wait_ready(self, timeout_s: float) -> float:
        """Poll `/readyz` every 10 ms; the monotonic time it first answered 200."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"notify exited {self.process.returncode}; {self.workdir}")
                try:
                    if (await client.get(url)).status_code == 200:
                        return time.monotonic()
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(READY_POLL_S)
        raise RuntimeError(f"notify not ready in {timeout_s} s; see {self.workdir}")

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(slots=True)
class ClientRun:
    """The plain client's run: from its go to the receiver holding every delivery, its round
    trips and send times (monotonic), its CPU."""

    started_s: float = math.nan
    sends: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    cpu_s: float = math.nan
    failed: int = 0


async def plain_client(
    url: str, bot: str, orders: range, rate: float, workdir: Path, timeout_s: float
) -> ClientRun:
    """The reference: this module's `--client` mode in a process of its own, posting the bodies
    of `orders` (paced at `rate`/s, or back to back when 0) once it is told to go."""
    out = workdir / "client.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benches.notify_speed",
        "--client",
        url,
        "--bot",
        bot,
        "--orders",
        f"{orders.start}:{orders.stop}",
        "--rate",
        f"{rate:g}",
        "--out",
        str(out),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    run = ClientRun()
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the plain client said {line!r}")
        run.started_s = time.monotonic()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), timeout_s)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    done = orjson.loads(out.read_bytes())
    run.sends, run.round_trips = done["sends"], done["round_trips"]
    run.cpu_s, run.failed = done["cpu_s"], done["failed"]
    if run.failed:
        raise RuntimeError(f"the plain client had {run.failed} posts answered other than 2xx")
    return run


async def client_main(url: str, bot: str, orders: range, rate: float) -> bytes:
    """`--client`: build the bodies and a plain client, say `ready`, wait for `go` on stdin,
    then post every body once, one at a time; the timings as JSON."""
    bodies = [(delivery_id_of(order), reference_body(bot, order)) for order in orders]
    sends: list[float] = []
    trips: list[float] = []
    failed = 0
    async with httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S) as client:
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0 = own_cpu_seconds()
        start = time.monotonic()
        for index, (delivery, body) in enumerate(bodies):
            if rate > 0:
                wait_s = start + index / rate - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            headers = signed_headers(
                delivery=delivery, body=body, secret=SECRET, now_ms=int(time.time() * 1000)
            )
            sent = time.monotonic()
            response = await client.post(url, content=body, headers=headers)
            trips.append(time.monotonic() - sent)
            sends.append(sent)
            failed += not response.is_success
        cpu_s = own_cpu_seconds() - cpu0
    return orjson.dumps({"sends": sends, "round_trips": trips, "cpu_s": cpu_s, "failed": failed})


# --- the runs ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """The notify process over a run's measured window: CPU seconds, and RSS at its end."""

    cpu_s: float = math.nan
    rss: int = 0


@dataclass(slots=True)
class Throughput:
    deliveries: int
    notify_s: float = math.nan  # ready -> the receiver holds all
    first_s: float = math.nan  # ready -> the first delivery
    plain_s: float = math.nan  # go -> the receiver holds all
    plain_cpu_s: float = math.nan
    notify: Usage = field(default_factory=Usage)
    checks: list[str] = field(default_factory=list)

    @property
    def notify_rate(self) -> float:
        return self.deliveries / self.notify_s

    @property
    def plain_rate(self) -> float:
        return self.deliveries / self.plain_s


@dataclass(slots=True)
class Latency:
    rate: float
    seconds: float
    dead_hooks: int = 0
    committed: int = 0
    notify: Spread = field(default_factory=lambda: spread([]))
    plain_round_trip: Spread = field(default_factory=lambda: spread([]))
    plain_one_way: Spread = field(default_factory=lambda: spread([]))
    dead_attempts: int = 0  # attempts the dead receiver held until notify gave up
    dead_pending: int = 0  # deliveries waiting in the dead webhooks' queues at the end
    usage: Usage = field(default_factory=Usage)
    checks: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Scale:
    bots: int
    fills_per_bot: int
    ready_s: float = math.nan  # notify start -> ready, with this many partitions
    seconds: float = math.nan  # first commit -> the receiver holds all
    usage: Usage = field(default_factory=Usage)
    checks: list[str] = field(default_factory=list)

    @property
    def deliveries(self) -> int:
        return self.bots * self.fills_per_bot

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds


@dataclass
class Bench:
    """One run's private redis-server, bots file and notify process."""

    workdir: Path
    hooks: Mapping[str, Sequence[str]]
    profiled: bool = False
    server: RedisServer | None = None
    redis: Redis | None = None
    notify: NotifyProcess | None = None

    async def __aenter__(self) -> Bench:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "notify.log").unlink(missing_ok=True)
        config = self.workdir / "bots.yaml"
        config.write_text(bots_yaml(self.hooks))
        data = self.workdir / f"redis-{os.getpid()}-{time.time_ns()}"
        self.server = RedisServer(data).start()
        self.redis = Redis.from_url(self.server.url, decode_responses=True)
        self.notify = NotifyProcess(self.workdir, self.server.url, config, self.profiled)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.notify is not None:
            await asyncio.to_thread(self.notify.stop)
        if self.redis is not None:
            await self.redis.aclose()
        if self.server is not None:
            self.server.stop()
        if self.profiled:
            print_profile(self.workdir / "notify.prof")

    @property
    def db(self) -> Redis:
        assert self.redis is not None
        return self.redis

    @property
    def process(self) -> NotifyProcess:
        assert self.notify is not None
        return self.notify


async def commit_fills(redis: Redis, bot: str, orders: Sequence[int]) -> None:
    """One MULTI appending these fills to the bot's notify feed, as accounting's refresh commit."""
    async with redis.pipeline(transaction=True) as tx:
        stage_fills(tx, bot=bot, epoch=EPOCH, fills=[(PRODUCT_ID, trade_json(o)) for o in orders])
        await tx.execute()


async def until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:g} s: {what()}")
        await asyncio.sleep(0.01)


def received_ids(receiver: Receiver, path: str | None = None) -> list[str]:
    return [
        request.headers["x-bandwagon-id"]
        for request in receiver.accepted
        if path is None or request.path == path
    ]


async def started(**kwargs: Any) -> Receiver:
    return await Receiver(secret=SECRET, **kwargs).start()


async def run_throughput(
    sizes: Sizes, workdir: Path, timeout_s: float, profiled: bool
) -> Throughput:
    figures = Throughput(sizes.deliveries)
    orders = range(1, sizes.deliveries + 1)
    expected = [delivery_id_of(order) for order in orders]
    plain = await started()
    try:
        run = await plain_client(f"{plain.url}/hook", "t00", orders, 0, workdir, timeout_s)
        await until(lambda: len(plain.accepted) >= len(orders), timeout_s, lambda: "plain client")
        figures.plain_s = plain.accepted[len(orders) - 1].at_s - run.started_s
        figures.plain_cpu_s = run.cpu_s
        figures.checks += [f"plain: {p}" for p in problems(received_ids(plain), expected, 0)]
    finally:
        await plain.stop()
    receiver = await started()
    try:
        async with Bench(workdir / "throughput", {"t00": [f"{receiver.url}/hook"]}, profiled) as b:
            for offset in range(0, len(orders), COMMIT_BATCH):
                await commit_fills(b.db, "t00", orders[offset : offset + COMMIT_BATCH])
            b.process.start()
            ready_s = await b.process.wait_ready(60)
            cpu0 = b.process.cpu_s()
            await until(
                lambda: len(receiver.accepted) >= len(orders),
                timeout_s,
                lambda: f"{len(receiver.accepted)} of {len(orders)} delivered",
            )
            figures.notify = Usage(b.process.cpu_s() - cpu0, b.process.rss())
            begin_s = min(ready_s, receiver.accepted[0].at_s)
            figures.notify_s = receiver.accepted[len(orders) - 1].at_s - begin_s
            figures.first_s = receiver.accepted[0].at_s - begin_s
            await asyncio.sleep(0.2)  # anything sent twice would be here by now
            ids = received_ids(receiver)
            figures.checks += problems(ids, expected, len(receiver.bad_signatures))
    finally:
        await receiver.stop()
    return figures


async def pace_fills(redis: Redis, bot: str, orders: range, rate: float) -> dict[int, float]:
    """One fill every 1/`rate` s; the monotonic time just before each commit's EXEC, by order
    id."""
    committed: dict[int, float] = {}
    start = time.monotonic() + 0.05
    for index, order in enumerate(orders):
        wait_s = start + index / rate - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        async with redis.pipeline(transaction=True) as tx:
            stage_fills(tx, bot=bot, epoch=EPOCH, fills=[(PRODUCT_ID, trade_json(order))])
            committed[order] = time.monotonic()
            await tx.execute()
    return committed


async def run_latency(
    sizes: Sizes, workdir: Path, timeout_s: float, profiled: bool, dead_hooks: int
) -> Latency:
    """Run 2 (`dead_hooks` 0, with the plain client's reference) or run 3."""
    figures = Latency(sizes.rate, sizes.seconds, dead_hooks)
    orders = range(1, int(sizes.rate * sizes.seconds) + 1)
    expected = [delivery_id_of(order) for order in orders]
    if not dead_hooks:
        plain = await started()
        try:
            url = f"{plain.url}/hook"
            run = await plain_client(url, "l00", orders, sizes.rate, workdir, timeout_s)
            await until(lambda: len(plain.accepted) >= len(orders), 10, lambda: "plain client")
            sent = dict(zip(orders, run.sends, strict=True))
            arrived = [(r.headers["x-bandwagon-id"], r.at_s) for r in plain.accepted]
            figures.plain_round_trip = spread(run.round_trips)
            figures.plain_one_way = spread(latencies_s(sent, arrived))
            figures.checks += [f"plain: {p}" for p in problems(received_ids(plain), expected, 0)]
        finally:
            await plain.stop()
    receiver = await started()
    dead = await started(behaviour=lambda _: Reply(hang=True))
    try:
        layout = dead_layout(dead_hooks) if dead_hooks else [0]
        hooks: dict[str, list[str]] = {}
        number = 0
        for index, count in enumerate(layout):
            urls = [f"{dead.url}/dead{number + n:02d}" for n in range(count)]
            number += count
            hooks[f"l{index:02d}"] = ([f"{receiver.url}/hook"] if index == 0 else []) + urls
        name = "isolation" if dead_hooks else "latency"
        async with Bench(workdir / name, hooks, profiled) as b:
            b.process.start()
            await b.process.wait_ready(60)
            for other in list(hooks)[1:]:  # a head each, retried all along (24 h)
                await commit_fills(b.db, other, [orders[0]])
            cpu0 = b.process.cpu_s()
            committed = await pace_fills(b.db, "l00", orders, sizes.rate)
            figures.committed = len(committed)
            await until(
                lambda: len(receiver.accepted) >= len(orders),
                timeout_s,
                lambda: f"{len(receiver.accepted)} of {len(orders)} delivered",
            )
            figures.usage = Usage(b.process.cpu_s() - cpu0, b.process.rss())
            arrived = [(r.headers["x-bandwagon-id"], r.at_s) for r in receiver.accepted]
            figures.notify = spread(latencies_s(committed, arrived))
            figures.checks += problems(
                received_ids(receiver), expected, len(receiver.bad_signatures)
            )
            figures.dead_attempts = len(dead.requests)
            figures.dead_pending = await dead_queue_lengths(
                b.db, b.workdir / "bots.yaml", f"{receiver.url}/hook"
            )
    finally:
        await receiver.stop()
        await dead.stop()
    return figures


async def dead_queue_lengths(redis: Redis, config: Path, healthy_url: str) -> int:
    """Deliveries waiting in every webhook queue of the bots file but the healthy one's."""
    total = 0
    for bot in load_bots(config).bots:
        for hook in bot.notify:
            if hook.url != healthy_url:
                total += int(await redis.xlen(keys.deliveries(bot.id, hook.hook_id)))
    return total


async def run_scale(sizes: Sizes, workdir: Path, timeout_s: float, profiled: bool) -> Scale:
    figures = Scale(sizes.bots, sizes.fills_per_bot)
    orders = range(1, sizes.fills_per_bot + 1)
    bots = [f"s{index:03d}" for index in range(sizes.bots)]
    receiver = await started()
    try:
        hooks = {bot: [f"{receiver.url}/{bot}"] for bot in bots}
        async with Bench(workdir / "scale", hooks, profiled) as b:
            launched = time.monotonic()
            b.process.start()
            figures.ready_s = await b.process.wait_ready(120) - launched
            cpu0 = b.process.cpu_s()
            begin_s = time.monotonic()
            await asyncio.gather(*(commit_fills(b.db, bot, orders) for bot in bots))
            await until(
                lambda: len(receiver.accepted) >= figures.deliveries,
                timeout_s,
                lambda: f"{len(receiver.accepted)} of {figures.deliveries} delivered",
            )
            figures.usage = Usage(b.process.cpu_s() - cpu0, b.process.rss())
            figures.seconds = receiver.accepted[figures.deliveries - 1].at_s - begin_s
            await asyncio.sleep(0.2)
            expected = [delivery_id_of(order) for order in orders]
            by_path: dict[str, list[str]] = defaultdict(list)
            for request in receiver.accepted:
                by_path[request.path].append(request.headers["x-bandwagon-id"])
            for bot in bots:
                found = problems(by_path[f"/{bot}"], expected, 0)
                figures.checks += [f"{bot}: {p}" for p in found]
            if receiver.bad_signatures:
                figures.checks.append(f"{len(receiver.bad_signatures)} bad signatures")
    finally:
        await receiver.stop()
    return figures


def print_profile(path: Path, top: int = 30) -> None:
    if path.exists():
        print(f"--- {path} (tottime) ---", flush=True)
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


# --- the report --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:,.1f} ms" if seconds < 0.1 else f"{seconds * 1000:,.0f} ms"


def per_s(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}/s"


def us_each(cpu_s: float, count: int) -> str:
    return "n/a" if math.isnan(cpu_s) or not count else f"{cpu_s / count * 1e6:,.0f} µs"


def usage_cells(usage: Usage) -> str:
    return f"{usage.cpu_s:.2f} | {usage.rss / 2**20:.0f} MiB"


def checks_line(figures: Sequence[Throughput | Latency | Scale]) -> str:
    found = [check for figure in figures for check in figure.checks]
    if not found:
        return (
            "Every run's deliveries arrived once each, in id order per webhook, with valid"
            " signatures."
        )
    return "**Problems**: " + "; ".join(found)


@dataclass(frozen=True, slots=True)
class Report:
    throughput: Throughput
    latency: Latency
    isolation: Latency
    scale: Scale
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    commit: str


def code_commit() -> str:
    """The commit notify ran from, and whether the code it imports had local changes."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "services", "libs", "tools/cli.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = head.stdout.strip() or "unknown"
    return commit + (" (with local changes)" if dirty.stdout.strip() else "")


def render(report: Report, machine: str, date: str, command: str) -> str:
    one, two, three, four = report.throughput, report.latency, report.isolation, report.scale
    loads = (
        f"load average {' '.join(f'{v:.2f}' for v in report.load_before)} before,"
        f" {' '.join(f'{v:.2f}' for v in report.load_after)} after"
    )
    return "\n".join(
        [
            BEGIN_MARK,
            "",
            f"Measured {date} on {machine}; {loads}. Notify of commit {report.commit}.",
            f"Command: `{command}`. Notify CPU is the process's user + system seconds over the"
            " run's measured window; RSS at its end.",
            "",
            "| run | Bandwagon notify | reference, same run | notify / reference |"
            " notify CPU s | notify RSS |",
            "| --- | --- | --- | ---: | ---: | ---: |",
            f"| 1. one webhook, {one.deliveries:,} deliveries committed before the start |"
            f" {per_s(one.notify_rate)} ({one.notify_s:.2f} s from ready, first after"
            f" {ms(one.first_s)}; CPU {us_each(one.notify.cpu_s, one.deliveries)} a delivery) |"
            f" plain httpx, one POST at a time: {per_s(one.plain_rate)} (CPU"
            f" {us_each(one.plain_cpu_s, one.deliveries)} a POST) |"
            f" {ratio(one.notify_rate, one.plain_rate):.2f}x | {usage_cells(one.notify)} |",
            f"| 2. fill -> receiver, {two.rate:g} fills/s for {two.seconds:g} s, one webhook |"
            f" p50 {ms(two.notify.p50)}, p99 {ms(two.notify.p99)}"
            f" ({two.notify.count:,} of {two.committed:,}) |"
            f" plain httpx at the same pace: round trip p50 {ms(two.plain_round_trip.p50)},"
            f" p99 {ms(two.plain_round_trip.p99)}; send -> receiver p50"
            f" {ms(two.plain_one_way.p50)}, p99 {ms(two.plain_one_way.p99)} |"
            f" {ratio(two.notify.p50, two.plain_round_trip.p50):.1f}x (p50),"
            f" {ratio(two.notify.p99, two.plain_round_trip.p99):.1f}x (p99) |"
            f" {usage_cells(two.usage)} |",
            f"| 3. as 2, plus {three.dead_hooks} webhooks that never answer"
            f" ({dead_label(three.dead_hooks)}) |"
            f" healthy webhook: p50 {ms(three.notify.p50)}, p99 {ms(three.notify.p99)}"
            f" ({three.notify.count:,} of {three.committed:,}); the dead ones: "
            f"{three.dead_attempts} attempts, each held until notify's 5 s timeout;"
            f" {three.dead_pending:,} deliveries waiting |"
            f" run 2: p50 {ms(two.notify.p50)}, p99 {ms(two.notify.p99)} |"
            f" {ratio(three.notify.p50, two.notify.p50):.2f}x (p50),"
            f" {ratio(three.notify.p99, two.notify.p99):.2f}x (p99) |"
            f" {usage_cells(three.usage)} |",
            f"| 4. {four.bots} bots x 1 webhook, {four.fills_per_bot} fills each committed at"
            f" once |"
            f" {per_s(four.rate)} ({four.deliveries:,} in {four.seconds:.2f} s; ready"
            f" {four.ready_s:.1f} s after the start; CPU"
            f" {us_each(four.usage.cpu_s, four.deliveries)} a delivery) |"
            f" run 1: notify {per_s(one.notify_rate)}, plain {per_s(one.plain_rate)} |"
            f" {ratio(four.rate, one.notify_rate):.2f}x notify's,"
            f" {ratio(four.rate, one.plain_rate):.2f}x plain |"
            f" {usage_cells(four.usage)} |",
            "",
            checks_line([one, two, three, four]),
            "",
            END_MARK,
        ]
    )


async def measure(sizes: Sizes, timeout_s: float, profiled: bool) -> Report:
    workdir = cache_dir() / "notify"
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    commit = code_commit()
    one = await run_throughput(sizes, workdir, timeout_s, profiled)
    print(
        f"  1. throughput: notify {per_s(one.notify_rate)} ({one.notify_s:.2f} s, first"
        f" {ms(one.first_s)}, cpu {one.notify.cpu_s:.2f} s), plain {per_s(one.plain_rate)}"
        f" (cpu {one.plain_cpu_s:.2f} s) {one.checks}",
        flush=True,
    )
    two = await run_latency(sizes, workdir, timeout_s, profiled, 0)
    print(
        f"  2. latency: notify {two.notify}, plain round trip {two.plain_round_trip},"
        f" one way {two.plain_one_way}, cpu {two.usage.cpu_s:.2f} s {two.checks}",
        flush=True,
    )
    three = await run_latency(sizes, workdir, timeout_s, profiled, sizes.dead_hooks)
    print(
        f"  3. isolation: healthy {three.notify}; dead attempts {three.dead_attempts},"
        f" pending {three.dead_pending}, cpu {three.usage.cpu_s:.2f} s {three.checks}",
        flush=True,
    )
    four = await run_scale(sizes, workdir, timeout_s, profiled)
    print(
        f"  4. scale: {per_s(four.rate)} ({four.seconds:.2f} s, ready {four.ready_s:.1f} s,"
        f" cpu {four.usage.cpu_s:.2f} s) {four.checks}",
        flush=True,
    )
    return Report(one, two, three, four, load_before, os.getloadavg(), commit)


def run_loop(coroutine: Any) -> Any:
    """The bench's loop (the receivers' server): uvloop when installed, as the gateway's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.notify_speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 deliveries, 4 s paced, 50 bots")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--doc", type=Path, default=DOC_PATH)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait at most")
    parser.add_argument(
        "--profile", action="store_true", help="notify under cProfile; its top functions printed"
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the plain client's process
    parser.add_argument("--bot", help=argparse.SUPPRESS)
    parser.add_argument("--orders", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        first, stop = (int(part) for part in args.orders.split(":"))
        timings = asyncio.run(client_main(args.client, args.bot, range(first, stop), args.rate))
        args.out.write_bytes(timings)
        return 0
    sizes = QUICK if args.quick else FULL
    report: Report = run_loop(measure(sizes, args.timeout, args.profile))
    command = "python -m benches.notify_speed" + (" --quick" if args.quick else "")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    block = render(report, machine_line(PACKAGES), date, command)
    print(block)
    if not args.no_doc and not args.profile:
        write_section(args.doc, block, BEGIN_MARK, END_MARK)
        print(f"wrote {args.doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
