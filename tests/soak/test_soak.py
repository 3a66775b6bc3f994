"""The soak (issue 5, point 8): synthetic data at 100x for SOAK_MINUTES (default 30) with 200
clients, 20 of them connected throughout and 180 coming and going at random.

Runs with `make soak` (or `pytest -s tests/soak`), never in `make test`. Checked:

- the 20 steady clients receive every seq from their `init` to the last, in order, on one
  connection, with no second `init`;
- every session of a coming-and-going client (a full `init` or a `resume`, then leaving politely
  or by dropping the TCP connection) receives each seq after its reply, in order, with no gap;
- the gateway's resident memory never grows more than `RSS_GROWTH_KIB` over its level at the
  end of the warm-up, and its file descriptors other than client sockets never more than
  `FD_GROWTH`; once every client has left, its connection gauge, client sockets and asyncio
  tasks are back to what they were before the first client.

The samples (time, RSS, fds, client sockets, connections, tasks) are printed as a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from services.gateway.server import REDIS_MAX_CONNECTIONS
from tests.e2e.services import (
    Deployment,
    Service,
    Watcher,
    bot_seq,
    log_texts,
    metric_value,
    process_fds,
    process_rss_kib,
    process_sockets_on_port,
    process_sockets_to_port,
    scrape_metrics,
    steady_tasks,
)

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
DURATION_S = MINUTES * 60
WARMUP_S = min(300.0, DURATION_S / 4)  # caches, the Redis pool, 300 klines (3 min at 100x)
SAMPLE_EVERY_S = 10.0 if MINUTES >= 5 else 5.0
SPEED = "100"
STEADY = 20
CHURNING = 180
MEAN_SESSION_S = 20.0
RSS_GROWTH_KIB = 48 * 1024
FD_GROWTH = 16
BOT = "soak"
API_KEY = "soak-test-key-0123456789abcdef"
SEED = int(os.environ.get("BANDWAGON_SOAK_SEED", "7"))
BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: mexc
    start_capital: 1000
    refresh_interval_ms: 1000
    symbols:
      - {{product_id: ETH-USDT, min_size: "0.00001", price_decimals: 2, leverage: 10,
         isolated: true}}
      - {{product_id: BTC-USDT, min_size: "0.000001", price_decimals: 1, leverage: 5,
         isolated: true}}
      - {{product_id: SOL-USDT, min_size: "0.001", price_decimals: 3, leverage: 3,
         isolated: false}}
"""

pytestmark = pytest.mark.timeout(int(DURATION_S) + 300)


@dataclass
class Churn:
    """What the coming-and-going clients saw, all sessions together."""

    sessions: int = 0
    full_inits: int = 0
    resumes: int = 0
    refreshes: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: int = 0  # sessions ended by the client cutting TCP, no close frame
    cut_by_server: list[tuple[int, str]] = field(default_factory=list)


async def one_session(
    ws: ClientConnection, churn: Churn, rng: random.Random, last: list[object], stop: asyncio.Event
) -> None:
    """`init` (a resume of the previous session when it has one, half the time), then every
    refresh until the session's time is up; `last` holds (seq, epoch) across sessions."""
    request: dict[str, object] = {"action": "init", "apiKey": API_KEY}
    if last and rng.random() < 0.5:
        request.update(since=last[0], epoch=last[1])
    await ws.send(orjson.dumps(request).decode())
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if reply["action"] == "error":
        churn.errors.append(reply["code"])
        return
    assert reply["action"] in ("init", "resume"), reply
    if reply["action"] == "init":
        churn.full_inits += 1
    else:
        churn.resumes += 1
    seq, epoch = reply["seq"], reply["epoch"]
    last[:] = [seq, epoch]
    deadline = time.monotonic() + min(rng.expovariate(1 / MEAN_SESSION_S), 4 * MEAN_SESSION_S)
    while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            message = orjson.loads(await asyncio.wait_for(ws.recv(), min(left, 0.5)))
            if message["action"] != "refresh":
                churn.errors.append(str(message.get("code", message["action"])))
                return
            if message["epoch"] != epoch or message["seq"] != seq + 1:
                churn.gaps.append((seq + 1, message["seq"]))
                return
            seq = message["seq"]
            last[0] = seq
            churn.refreshes += 1


async def churner(url: str, churn: Churn, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    last: list[object] = []
    await asyncio.sleep(rng.uniform(0, 5))
    while not stop.is_set():
        try:
            ws = await connect(url, max_size=2**26, open_timeout=30, close_timeout=5)
        except (OSError, InvalidHandshake, TimeoutError) as error:
            churn.errors.append(f"connect: {error!r}")
            await asyncio.sleep(1)
            continue
        churn.sessions += 1
        try:
            await one_session(ws, churn, rng, last, stop)
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            churn.cut_by_server.append((1006, "") if rcvd is None else (rcvd.code, rcvd.reason))
        if rng.random() < 0.3:
            ws.transport.abort()  # gone without a close frame
            churn.dropped += 1
        else:
            await ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.1, 3.0))


@dataclass
class Sample:
    t_s: float
    rss_kib: int
    fds: int
    client_sockets: int
    redis_sockets: int
    connections: float
    tasks: float

    @property
    def own_fds(self) -> int:
        """File descriptors other than client and Redis connections: what must not grow."""
        return self.fds - self.client_sockets - self.redis_sockets


def sample(gateway: Service, port: int, redis_port: int, started_s: float) -> Sample:
    pid = gateway.process.pid
    metrics = scrape_metrics(gateway)
    return Sample(
        t_s=time.monotonic() - started_s,
        rss_kib=process_rss_kib(pid),
        fds=process_fds(pid),
        client_sockets=process_sockets_on_port(pid, port),
        redis_sockets=process_sockets_to_port(pid, redis_port),
        connections=metric_value(metrics, "bandwagon_ws_connections"),
        tasks=metric_value(metrics, "bandwagon_gateway_asyncio_tasks"),
    )


async def settle(gateway: Service, port: int, redis_port: int, started_s: float) -> Sample:
    """Wait until no client connection is left (and the scrape's own socket is closed)."""
    for _ in range(300):
        figures = sample(gateway, port, redis_port, started_s)
        if figures.connections == 0 and figures.client_sockets == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    figures = sample(gateway, port, redis_port, started_s)
    figures.tasks = steady_tasks(gateway)
    return figures


async def test_soak(deployment: Deployment, redis: Redis) -> None:
    deployment.start("accounting")
    deployment.start("strategy")
    gateway = deployment.start("gateway")
    deployment.start("ingest", "--source=synthetic", f"--speed={SPEED}")
    deployment.wait_ready("accounting", "strategy", "gateway", "ingest")
    url, port = deployment.ws_url, deployment.gateway_port
    started_s = time.monotonic()
    redis_port = int(deployment.redis_url.rsplit(":", 1)[1].split("/")[0])
    before = await settle(gateway, port, redis_port, started_s)

    stop = asyncio.Event()
    steady = [Watcher([url], API_KEY, backoff_s=1.0) for _ in range(STEADY)]
    churn = Churn()
    tasks = [asyncio.create_task(watcher.run(stop)) for watcher in steady]
    tasks += [
        asyncio.create_task(churner(url, churn, stop, SEED * 1000 + index))
        for index in range(CHURNING)
    ]
    samples: list[Sample] = []
    while (elapsed_s := time.monotonic() - started_s) < DURATION_S:
        await asyncio.sleep(min(SAMPLE_EVERY_S, DURATION_S - elapsed_s))
        samples.append(sample(gateway, port, redis_port, started_s))
        assert all(not task.done() for task in tasks), [t.exception() for t in tasks if t.done()]
    final_seq = await bot_seq(redis, BOT)
    for watcher in steady:
        await watcher.reach(final_seq, timeout_s=30)
    stop.set()
    await asyncio.gather(*tasks)
    after = await settle(gateway, port, redis_port, started_s)

    warm = [s for s in samples if s.t_s >= WARMUP_S]
    baseline = warm[0]
    table = "\n".join(
        f"{s.t_s:7.0f} s  rss {s.rss_kib / 1024:7.1f} MiB  fds {s.fds:4d}  "
        f"clients {s.client_sockets:4d}  redis {s.redis_sockets:3d}  own fds {s.own_fds:3d}  "
        f"tasks {s.tasks:5.0f}"
        for s in [before, *samples, after]
    )
    summary = (
        f"soak {MINUTES:g} min at {SPEED}x, seq {steady[0].first_seq}..{final_seq}; churn: "
        f"{churn.sessions} sessions ({churn.full_inits} inits, {churn.resumes} resumes, "
        f"{churn.dropped} dropped), {churn.refreshes} refreshes; steady: "
        f"{sum(len(w.received) for w in steady)} refreshes\n{table}"
    )
    print(summary)

    for watcher in steady:
        assert watcher.first_seq is not None and watcher.full_inits == [watcher.first_seq]
        # every seq once, in order, at least up to the final one read (the bot goes on
        # publishing until the watchers stop, so one may hold a few more)
        assert watcher.received[-1] >= final_seq
        assert watcher.received == list(range(watcher.first_seq + 1, watcher.received[-1] + 1))
        assert (watcher.gaps, watcher.closes, watcher.errors) == ([], [], []), watcher.report()
    assert churn.gaps == [] and churn.errors == [] and churn.cut_by_server == [], summary
    assert churn.sessions >= CHURNING and churn.resumes > 0 and churn.full_inits > 0
    assert max(s.rss_kib for s in warm) - baseline.rss_kib <= RSS_GROWTH_KIB, summary
    assert max(s.own_fds for s in warm) - baseline.own_fds <= FD_GROWTH, summary
    assert after.connections == 0 and after.client_sockets == 0, summary
    assert after.tasks == before.tasks, summary
    assert after.own_fds - before.own_fds <= FD_GROWTH, summary
    assert max(s.redis_sockets for s in samples) <= REDIS_MAX_CONNECTIONS + 2, summary  # + pubsub

    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for name, text in log_texts(deployment.log_dir).items():
        assert API_KEY not in text, f"a key in {name}"
        assert "Traceback" not in text, name
