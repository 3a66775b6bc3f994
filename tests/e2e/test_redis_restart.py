"""Redis goes away mid-replay and comes back (issue 5, points 2 and 8): the four services, as
processes on a redis-server of this module's own, ride the outage out and end exactly where
`bandwagon backtest` ends on the same file, while a websocket client written from SPEC 2.1 rule 8
stays connected through it.

Three faults, each followed by a start on the same port and data dir:
- a clean stop (SIGTERM: with AOF on, Redis keeps every write), long enough for every `/readyz`
  to turn 503, under `appendfsync always`. Nothing is lost, and a restart under `always` keeps
  the epoch (SPEC 2.1 rule 19), so the client must see every seq once, in order, with no gap and
  no re-init, and its folded state must equal the final `init` (SPEC 2.1 rules 7 and 12);
- a process crash (SIGKILL) under `always`: the same holds. (Under `everysec` a process crash
  loses nothing either, the page cache has the AOF, but nothing tells it from a host crash, so
  rule 19 counts it as a loss: a new epoch; `tests/integration/test_lost_history_detection.py`);
- a host crash under `everysec`: SIGKILL and the AOF cut back to its length a second earlier,
  the second that was not fsynced. The services must recompute it from their checkpoints, never
  corrupt it (SPEC 4.1 rule 12), and the bot gets a new epoch (rule 19).
`test_lost_history.py` loses accounting with Redis in that host crash.

The refresh log and the final state are read from Redis with `libs.store.read_snapshot` (what a
gateway's `init` sends) and compared with `bandwagon backtest --json` as in
`test_backtest_parity.py`: exactly, both sides run the same core with TZ=UTC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import websockets
from redis.asyncio import Redis

from libs.config import load_bots
from libs.core.market import Kline
from libs.core.periods import kline_period_ms
from libs.errors import StateMissing
from libs.exchange.market_files import read_market_file
from libs.ops.health import REDIS_PING_FRESH_S
from libs.store import keys
from libs.store.published import Snapshot, read_server_record, read_snapshot
from libs.store.server import ServerRecord, read_server
from tests.e2e.services import REPO, Deployment, backtest_json
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer, free_port, new_passwords

KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
KLINES_EVENT_S = 3000 * 60  # the file's event-time span: 3000 one-minute klines
BOT = "faults"
PRODUCT_ID = "ALT-BTC"
API_KEY = "redis-fault-test-key-0123456789"
KLINE_HISTORY = 5
TRADE_HISTORY = 1000  # holds every trade of the file, so the client's fold keeps them all
BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    kline_history: {KLINE_HISTORY}
    trade_history: {TRADE_HISTORY}
    refresh_log_len: 1000
    strategy: {{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}}
    symbols:
      - {{product_id: {PRODUCT_ID}, min_size: "0.01", price_decimals: 8, leverage: 20,
         isolated: true}}
"""
SERVICES = ("accounting", "gateway", "strategy", "ingest")

# SPEC 4.1 rule 2: a service is ready while Redis answered a PING within the last 5 s, so an outage
# shorter than that may legitimately leave a service (ingest, whose only other check is its open
# source) at 200 throughout. The clean outage outlasts that window, so every service must show 503.
CLEAN_OUTAGE_S = REDIS_PING_FRESH_S + 1.5
CRASH_OUTAGE_S = 1.0
LOST_S = 1.0  # what `everysec` may lose on a host crash (SPEC 4.1 rule 12)
FAULT_AFTER_S = 2.0  # into the replay, once trading has begun
POLL_S = 0.1
CLIENT_GRACE_S = 3.0  # for a client to follow Redis's final seq after a lossy crash

pytestmark = pytest.mark.timeout(60)


# --- the deployment, on a redis-server this module stops and starts ------------------------------


@pytest.fixture
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """Not the session's server: this one is stopped and killed. A fixed port, so the services'
    REDIS_URL stays valid across restarts; AOF `everysec`, the default durability, unless a test
    asks for another policy (`indirect` parametrization)."""
    appendfsync = getattr(request, "param", "everysec")
    server = RedisServer(
        tmp_path / "redis", port=free_port(), appendfsync=appendfsync, passwords=new_passwords()
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def deployment(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    config = tmp_path / "bots.yaml"
    config.write_text(BOTS_YAML)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    deployment = Deployment(own_redis.url, config, log_dir, API_KEY, passwords=own_redis.passwords)
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, str(log_dir))


# --- a client of SPEC 2.1 rule 8 ---------------------------------------------------------------


@dataclass
class Client:
    """Applies a refresh when its epoch is the client's and its seq is last+1, ignores seq <= last,
    and on another epoch or seq > last+1 sends `init` with `since` and discards until the reply
    (SPEC 2.1 rule 8). Folds what it applies into the state of SPEC 2.1 rule 12."""

    ws: websockets.ClientConnection
    epoch: str = ""
    seq: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    awaiting_reply: bool = False
    applied: dict[int, str] = field(default_factory=dict)  # seq -> the exact text applied
    applied_at_s: list[float] = field(default_factory=list)  # monotonic time of each, and of
    # each re-init: when the client's state moved
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (last seq, seq seen) re-inits
    replies: list[str] = field(default_factory=list)  # actions of init replies after the first
    ignored: list[int] = field(default_factory=list)
    discarded: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    closed: websockets.ConnectionClosed | None = None

    async def init(self, *, resume: bool) -> None:
        request: dict[str, Any] = {"action": "init", "apiKey": API_KEY}
        if resume:
            request.update(since=self.seq, epoch=self.epoch)
        self.awaiting_reply = True
        await self.ws.send(orjson.dumps(request).decode())

    async def on_text(self, text: str) -> None:
        message: dict[str, Any] = orjson.loads(text)
        action = message["action"]
        if action == "error":
            self.errors.append(message)
        elif self.awaiting_reply:
            if action == "init":
                self.state = message
                self.epoch, self.seq = message["epoch"], message["seq"]
            elif action == "resume":  # the log held the gap: the state stays, at `since`
                assert (message["epoch"], message["seq"]) == (self.epoch, self.seq), message
            else:
                self.discarded += 1
                return
            self.awaiting_reply = False
            if self.applied or self.gaps:
                self.replies.append(action)
                self.applied_at_s.append(time.monotonic())
        elif message["epoch"] != self.epoch or message["seq"] > self.seq + 1:
            self.gaps.append((self.seq, message["seq"]))
            await self.init(resume=True)
        elif message["seq"] <= self.seq:
            self.ignored.append(message["seq"])
        else:
            fold(self.state, message)
            self.seq = message["seq"]
            self.applied[self.seq] = text
            self.applied_at_s.append(time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until `stop`; a close is recorded, not raised, so the test can report it."""
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(self.ws.recv(), timeout=POLL_S)
            except TimeoutError:  # cancelling `recv` loses nothing (websockets' documentation)
                continue
            except websockets.ConnectionClosed as closed:
                self.closed = closed
                return
            assert isinstance(text, str), "the server sends text frames only"
            await self.on_text(text)


def fold(state: dict[str, Any], refresh: dict[str, Any]) -> None:
    """SPEC 2.1 rule 12: replace scalars and status, upsert klines by `period_id` and trades by
    `order_id`, keep as many newest as an `init` holds."""
    state["seq"] = refresh["seq"]
    state["status"].update(refresh["data"]["status"])
    for mine, theirs in zip(state["symbols"], refresh["data"]["symbols"], strict=True):
        klines = {kline["period_id"]: kline for kline in mine["klines"] + theirs["klines"]}
        trades = {trade["order_id"]: trade for trade in mine["trades"] + theirs["trades"]}
        mine.update(theirs)
        mine["klines"] = sorted(klines.values(), key=lambda k: k["time"])[-KLINE_HISTORY:]
        mine["trades"] = sorted(trades.values(), key=lambda t: t["order_id"])[-TRADE_HISTORY:]


# --- readiness and liveness, polled through the outage ------------------------------------------


@dataclass
class Probes:
    ready: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)

    def unready_between(self, name: str, start_s: float, end_s: float) -> bool:
        return any(not ok for at_s, ok in self.ready[name] if start_s <= at_s <= end_s)

    def ready_since(self, name: str, since_s: float) -> bool:
        """Ready at the last probe, and at least once after `since_s`."""
        samples = [ok for at_s, ok in self.ready[name] if at_s >= since_s]
        return bool(samples) and samples[-1]


async def probe(deployment: Deployment, probes: Probes, stop: asyncio.Event) -> None:
    services = [deployment.services[name] for name in SERVICES]
    for service in services:
        probes.ready[service.name] = []
    while not stop.is_set():
        answers = await asyncio.gather(*(asyncio.to_thread(s.ready) for s in services))
        now_s = time.monotonic()
        for service, ok in zip(services, answers, strict=True):
            probes.ready[service.name].append((now_s, ok))
            code = service.process.poll()
            if code is not None:
                probes.exits.setdefault(service.name, code)
        await asyncio.sleep(POLL_S)


# --- the run: replay, fault, recovery, settle -------------------------------------------------


Fault = Callable[[RedisServer], Awaitable[None]]
StreamEntries = list[tuple[str, dict[str, str]]]


@dataclass
class Run:
    client: Client
    probes: Probes
    snapshot: Snapshot
    fault_at_s: float
    back_at_s: float
    seq_before_fault: int
    epoch_before_fault: str
    server_before_fault: ServerRecord  # the redis-server as it was before the fault
    log: StreamEntries  # the refresh log
    sources: list[str]  # `src` of every market stream entry, in stream order


async def run_with_fault(
    deployment: Deployment, server: RedisServer, speed: float, fault: Fault, *, exact: bool
) -> Run:
    """Replay, fault, recovery, settle. `exact`: nothing acknowledged was lost, so the client must
    also reach Redis's final seq (else only Redis's state is awaited)."""
    bot = load_bots(deployment.config_path).bots[0]
    *_, (_, last_update) = read_market_file(KLINES, bot.period_ms)
    last_kline = last_update.kline

    deployment.start("accounting")
    deployment.start("gateway")
    deployment.wait_ready("accounting", "gateway")
    async with websockets.connect(deployment.ws_url, max_size=2**26) as ws:
        client = Client(ws)
        await client.init(resume=False)
        await client.on_text(str(await asyncio.wait_for(ws.recv(), 10)))
        assert client.state["action"] == "init" and client.seq == 1, client.state

        deployment.start("strategy")
        deployment.start("ingest", "--source=replay", f"--replay={PRODUCT_ID}={KLINES}",
                         f"--speed={speed}")  # fmt: skip
        deployment.wait_ready("strategy", "ingest")
        # the replay starts once ingest runs: on a busy machine starting the two processes
        # alone can take longer than FAULT_AFTER_S
        replay_started_s = time.monotonic()

        stop = asyncio.Event()
        probes = Probes()
        tasks = [
            asyncio.create_task(client.run(stop)),
            asyncio.create_task(probe(deployment, probes, stop)),
        ]
        try:
            await asyncio.sleep(max(0.0, replay_started_s + FAULT_AFTER_S - time.monotonic()))
            assert client.closed is None and client.seq > 1, "refreshes flow before the fault"
            seq_before_fault, epoch_before_fault = client.seq, client.epoch
            async with Redis.from_url(server.url, decode_responses=True) as redis:
                server_before_fault = (await read_server(redis)).record
            fault_at_s = time.monotonic()
            await fault(server)
            back_at_s = time.monotonic()
            await wait_all_ready(probes, back_at_s, deployment)
            snapshot = await settle(server, client if exact else None, last_kline)
            for _ in range(int(CLIENT_GRACE_S / POLL_S)):  # not awaited by `settle`: some time
                if client.seq == snapshot.seq:
                    break
                await asyncio.sleep(POLL_S)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert client.closed is None, f"the websocket closed: {client.closed!r}"
    async with Redis.from_url(server.url, decode_responses=True) as redis:
        log = cast(StreamEntries, await redis.xrange(keys.refresh_log(BOT)))
        stream = keys.market_stream(bot.exchange, PRODUCT_ID, bot.kline_size)
        market = cast(StreamEntries, await redis.xrange(stream))
    sources = [fields["src"] for _, fields in market]
    return Run(
        client,
        probes,
        snapshot,
        fault_at_s,
        back_at_s,
        seq_before_fault,
        epoch_before_fault,
        server_before_fault,
        log,
        sources,
    )


async def wait_all_ready(probes: Probes, since_s: float, deployment: Deployment) -> None:
    """Back to ready without human help, within the workers' capped backoff (10 s) and more:
    30 s from `since_s`, when Redis came back. A service that exits fails the wait at once."""

    def all_ready() -> bool:
        if all(probes.ready_since(name, since_s) for name in SERVICES):
            return True
        assert not probes.exits, f"exited: {probes.exits}; logs in {deployment.log_dir}"
        return False

    await eventually(
        all_ready,
        timeout_s=since_s + 30 - time.monotonic(),
        poll_s=POLL_S,
        what=lambda: (
            f"every service ready 30 s after Redis came back; not: "
            f"{[n for n in SERVICES if not probes.ready_since(n, since_s)]}; "
            f"logs in {deployment.log_dir}"
        ),
    )


def shows(snapshot: Snapshot, kline: Kline) -> bool:
    klines = snapshot.symbols[0]["klines"]
    return bool(klines) and (klines[-1]["time"], klines[-1]["close"], klines[-1]["volume"]) == (
        kline.time_ms,
        kline.close,
        kline.volume,
    )


async def settle(server: RedisServer, client: Client | None, last_kline: Kline) -> Snapshot:
    """The snapshot once the file's last update is applied and, given a client, it holds that
    seq."""
    snapshot: Snapshot | None = None  # the last one read, for the failure's message

    async def settled(redis: Redis) -> Snapshot | None:
        nonlocal snapshot
        try:
            snapshot = await read_snapshot(redis, BOT)
        except StateMissing:
            snapshot = None
        if (
            snapshot is not None
            and shows(snapshot, last_kline)
            and (client is None or (client.seq, client.awaiting_reply) == (snapshot.seq, False))
        ):
            return snapshot
        return None

    def state() -> str:
        return (
            f"settled; client at {client and client.seq}, Redis at "
            f"{snapshot and snapshot.seq}, showing the last kline: "
            f"{snapshot is not None and shows(snapshot, last_kline)}"
        )

    async with Redis.from_url(server.url, decode_responses=True) as redis:
        return await eventually(lambda: settled(redis), timeout_s=30, poll_s=POLL_S, what=state)


# --- the faults -------------------------------------------------------------------------------


async def clean_restart(server: RedisServer) -> None:
    server.stop()  # SIGTERM: Redis fsyncs the AOF and exits; nothing written is lost
    await asyncio.sleep(CLEAN_OUTAGE_S)
    server.start()


async def crash_restart(server: RedisServer) -> None:
    """A process crash. Redis has already write(2)n every acknowledged command to the AOF, so the
    page cache keeps it all: `everysec` loses nothing here, only on a crash of the host."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    await asyncio.sleep(CRASH_OUTAGE_S)
    server.start()


def aof_file(server: RedisServer) -> Path:
    """The file Redis appends to: `appendonly.aof` up to Redis 6.2, the `.incr.aof` of the
    multi-part AOF from Redis 7."""
    single = server.data_dir / "appendonly.aof"
    if single.exists():
        return single
    return max(
        (server.data_dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime
    )


async def crash_losing_the_last_second(
    server: RedisServer, *, with_it: Callable[[], None] = lambda: None
) -> None:
    """A host crash under `everysec`: what was written in the last second had not been fsynced and
    is gone. Modelled as SIGKILL, then cutting the AOF back to its length a second earlier (the
    cut may fall inside a command or a MULTI: Redis loads the whole ones, `aof-load-truncated`).
    `with_it` kills what else the host ran, in the same instant."""
    assert server.process is not None
    path = aof_file(server)
    lengths: list[tuple[float, int]] = []
    sampling_until_s = time.monotonic() + LOST_S + 0.5
    while time.monotonic() < sampling_until_s:
        lengths.append((time.monotonic(), path.stat().st_size))
        await asyncio.sleep(0.02)
    with_it()
    server.process.kill()
    killed_at_s = time.monotonic()
    server.process.wait()
    kept = max(length for at_s, length in lengths if at_s <= killed_at_s - LOST_S)
    lost = path.stat().st_size - kept
    assert lost > 0, "the replay writes to Redis all the time"
    with path.open("r+b") as aof:
        aof.truncate(kept)
    await asyncio.sleep(max(0.0, CRASH_OUTAGE_S - (time.monotonic() - killed_at_s)))
    server.start()


# --- the reference: `bandwagon backtest` on the same file and bots file --------------------------


def reference(config: Path, out: Path) -> dict[str, Any]:
    return backtest_json(config, BOT, [f"--klines={PRODUCT_ID}={KLINES}"], out)


def check_final_state_is_the_backtest(snapshot: Snapshot, backtest: dict[str, Any]) -> None:
    """As `test_backtest_parity`: every trade field by field, the SYMBOL scalars, the STATUS."""
    (live,) = snapshot.symbols
    (tested,) = backtest["symbols"]
    assert live["trades"], "the case must make trades"
    order_ids = [trade["order_id"] for trade in live["trades"]]
    assert order_ids == list(range(1, len(order_ids) + 1)), "no trade lost or doubled (3.1 r13)"
    for index, (live_trade, tested_trade) in enumerate(
        zip(live["trades"], tested["trades"], strict=True)
    ):
        assert tested_trade == live_trade, f"trade {index}"
    assert tested == {name: value for name, value in live.items() if name != "klines"}
    assert backtest["trades"] == live["trades"]
    assert backtest["status"] == snapshot.status
    assert snapshot.status["tradeNum"] == len(live["trades"])
    assert snapshot.status["timeZoneOffset"] == 0  # TZ=UTC on both sides


def check_refresh_log(run: Run) -> None:
    """The log holds every seq 1..N once, in order, each entry the refresh of its id, in one epoch
    (SPEC 2.1 rules 5 and 6; 1000 entries hold the whole run)."""
    seqs = [int(entry_id.split("-")[0]) for entry_id, _ in run.log]
    assert [entry_id for entry_id, _ in run.log] == [f"{seq}-0" for seq in seqs]
    assert seqs == list(range(1, run.snapshot.seq + 1))
    for seq, (_, fields) in zip(seqs, run.log, strict=True):
        refresh = orjson.loads(fields["msg"])
        assert (refresh["action"], refresh["seq"]) == ("refresh", seq)
        assert refresh["epoch"] == run.snapshot.epoch


def check_every_row_written_once(run: Run) -> None:
    """Issue 5 point 1: ingest neither writes a row twice nor skips one, whatever Redis lost."""
    expected = [
        f"replay:{KLINES.name}:{line}"
        for line, _ in read_market_file(KLINES, kline_period_ms("1m"))
    ]
    missing = sorted(set(expected) - set(run.sources), key=lambda src: int(src.split(":")[-1]))
    assert len(run.sources) == len(set(run.sources)), "a row written twice"
    assert run.sources == expected, (
        f"{len(missing)} rows never written: {missing[:3]}...{missing[-1:]}"
    )


def check_services_rode_it_out(run: Run, deployment: Deployment) -> None:
    """No exit, no crash loop, no traceback; ready again after the outage (SPEC 4.1 rule 2); the
    websocket open throughout, with no error answer."""
    assert not run.probes.exits, f"exited: {run.probes.exits}; logs in {deployment.log_dir}"
    for service in deployment.services.values():
        assert service.process.poll() is None, f"{service.name} exited; see {service.log_path}"
        assert "Traceback" not in service.log(), f"{service.name} crashed: {service.log_path}"
    for name in SERVICES:
        assert run.probes.ready_since(name, run.back_at_s), f"{name} not ready after the outage"
    client = run.client
    assert client.closed is None and client.errors == [], (client.closed, client.errors)
    assert any(at_s > run.back_at_s for at_s in client.applied_at_s), "updates resume after it"


def check_client_saw_every_refresh(run: Run) -> None:
    """Nothing acknowledged was lost, so no refresh was: the client saw every seq once, in order,
    each exactly as the log holds it, with no gap and no re-init (SPEC 2.1 rules 7, 8, 11), and its
    fold equals the `init` at the final seq (rule 12)."""
    client = run.client
    assert client.gaps == [] and client.replies == [] and client.discarded == 0, client.gaps
    assert list(client.applied) == list(range(2, run.snapshot.seq + 1))
    assert client.applied == {
        int(entry_id.split("-")[0]): fields["msg"] for entry_id, fields in run.log[1:]
    }
    folded = orjson.loads(orjson.dumps(client.state))
    assert folded["seq"] == run.snapshot.seq
    assert folded["symbols"] == run.snapshot.symbols
    status = {name: value for name, value in folded["status"].items() if not name.startswith("has")}
    assert status == run.snapshot.status


# --- the tests --------------------------------------------------------------------------------


async def check_epoch_kept_on_the_new_server(run: Run, server: RedisServer) -> None:
    """SPEC 2.1 rule 19: a restart under `appendfsync always` keeps the epoch, and the bot's meta
    now names the server that came back, so a later loss is measured from it."""
    assert run.snapshot.epoch == run.epoch_before_fault
    async with Redis.from_url(server.url, decode_responses=True) as redis:
        now = (await read_server(redis)).record
        recorded = await read_server_record(redis, BOT)
    assert now.run_id != run.server_before_fault.run_id, "Redis really restarted"
    assert recorded == now
    assert run.server_before_fault.appendfsync == now.appendfsync == "always"


@pytest.mark.parametrize("own_redis", ["always"], indirect=True)
async def test_a_clean_redis_restart_mid_replay_loses_nothing_and_no_client_notices(
    deployment: Deployment, own_redis: RedisServer, tmp_path: Path
) -> None:
    speed = KLINES_EVENT_S / 10  # a 10 s replay: the outage falls in its middle
    run = await run_with_fault(deployment, own_redis, speed, clean_restart, exact=True)
    check_services_rode_it_out(run, deployment)
    for name in SERVICES:  # SPEC 4.1 rule 2: 503 while Redis is down
        assert run.probes.unready_between(name, run.fault_at_s, run.back_at_s), (
            f"{name} stayed ready through a {CLEAN_OUTAGE_S} s outage"
        )
    await check_epoch_kept_on_the_new_server(run, own_redis)
    check_refresh_log(run)
    check_client_saw_every_refresh(run)
    check_every_row_written_once(run)
    check_final_state_is_the_backtest(
        run.snapshot, reference(deployment.config_path, tmp_path / "backtest.json")
    )


@pytest.mark.parametrize("own_redis", ["always"], indirect=True)
async def test_a_redis_process_crash_mid_replay_loses_nothing_acknowledged(
    deployment: Deployment, own_redis: RedisServer, tmp_path: Path
) -> None:
    speed = KLINES_EVENT_S / 6  # a 6 s replay
    run = await run_with_fault(deployment, own_redis, speed, crash_restart, exact=True)
    check_services_rode_it_out(run, deployment)
    await check_epoch_kept_on_the_new_server(run, own_redis)
    check_refresh_log(run)
    check_client_saw_every_refresh(run)
    check_every_row_written_once(run)
    check_final_state_is_the_backtest(
        run.snapshot, reference(deployment.config_path, tmp_path / "backtest.json")
    )


async def test_a_redis_host_crash_losing_the_last_second_is_recomputed_from_checkpoints(
    deployment: Deployment, own_redis: RedisServer, tmp_path: Path
) -> None:
    speed = KLINES_EVENT_S / 6  # a 6 s replay
    run = await run_with_fault(
        deployment, own_redis, speed, crash_losing_the_last_second, exact=False
    )
    check_services_rode_it_out(run, deployment)
    # Refreshes clients saw in the lost second no longer exist, and recomputing them from the
    # checkpoints that survived gives other contents (other batch boundaries). So the state counts
    # as lost (SPEC 2.1 rules 5 and 19): accounting finds another redis-server than the one the
    # bot's meta records, under `everysec`, and starts a new epoch, whose refresh 1 is the state
    # Redis kept; the old epoch's log goes. What
    # SPEC promises is checked: the log is whole and consecutive in the new epoch, no row is
    # skipped or doubled (issue 5 point 1), no trade is lost or doubled, the final state is exactly
    # the backtest's (SPEC 4.1 rule 12), and the client saw the new epoch, re-inited with a full
    # `init` (its `since` is of an epoch that no longer exists) and ends where a fresh `init`
    # would put it (rules 8 and 12).
    assert run.snapshot.epoch != run.epoch_before_fault, "a new epoch after the loss"
    assert run.client.replies and set(run.client.replies) == {"init"}, run.client.replies
    check_refresh_log(run)
    check_every_row_written_once(run)
    check_final_state_is_the_backtest(
        run.snapshot, reference(deployment.config_path, tmp_path / "backtest.json")
    )
    check_client_converges(run)
    accounting_log = deployment.services["accounting"].log()
    assert "state lost" in accounting_log and run.snapshot.epoch in accounting_log


def check_client_converges(run: Run) -> None:
    """SPEC 2.1 rule 12: the client's fold equals the `init` at the final seq."""
    client = run.client
    assert (client.epoch, client.seq) == (run.snapshot.epoch, run.snapshot.seq), (
        f"the client stays at seq {client.seq}, Redis is at {run.snapshot.seq}"
    )
    folded = orjson.loads(orjson.dumps(client.state))
    live, seen = run.snapshot.symbols[0]["trades"], folded["symbols"][0]["trades"]
    assert seen == live, f"the client holds {len(seen)} trades, Redis {len(live)}"
    assert folded["symbols"] == run.snapshot.symbols
