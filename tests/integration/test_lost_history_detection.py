"""SPEC 2.1 rule 19 on real redis-servers of each test's own (they are restarted, failed over and
locked down, so never the session's): a Redis that may have lost acknowledged writes gives every
bot it holds a new epoch before anything more of it is published, whether or not any service saw
it go down; a restart under `appendfsync always` keeps the epoch.

The accounting worker runs in-process on the workers' own Redis client (`worker_redis`: no
retries), so a test can drop it with Redis, as one lost node drops both, and start a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from libs.config import BotConfig
from libs.store import keys
from libs.store.bot_state import ensure_state
from libs.store.client import worker_redis
from libs.store.leases import LeaseKeeper
from libs.store.partitions import accounting_partitions
from libs.store.published import read_server_record, read_snapshot
from libs.store.server import RedisReplaced, ServerRecord, ServerState, read_server
from services.accounting.history import Continuity, continuity
from services.accounting.worker import AccountingWorker
from tests.integration.test_pipeline import bot_config, klines_updates, run_pipeline
from tools.run.redis_server import RedisServer, free_port

TRADED = bot_config(order_type="maker", mode="both")  # "alt": klines and trades by the pipeline
IDLE = BotConfig.model_validate({**TRADED.model_dump(), "id": "idle"})  # state created, no data
BOTS = [TRADED, IDLE]

pytestmark = pytest.mark.timeout(60)


def start_server(tmp_path: Path, name: str, appendfsync: str) -> RedisServer:
    return RedisServer(tmp_path / name, port=free_port(), appendfsync=appendfsync).start()


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    """The test's own servers, stopped at the end whatever happened."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    opened: list[Redis] = []
    yield opened
    for client in opened:
        await client.aclose()


def accounting(url: str, clients: list[Redis], worker_id: str = "accounting") -> AccountingWorker:
    """An accounting process's worker, as `bandwagon accounting` builds it."""
    redis = worker_redis(url)
    clients.append(redis)
    keeper = LeaseKeeper(
        redis, service="accounting", worker_id=worker_id, partitions=accounting_partitions(BOTS)
    )
    return AccountingWorker(redis, BOTS, keeper)


async def populate(url: str, clients: list[Redis]) -> None:
    """Two bots' states: one with klines and trades, one as created."""
    redis = Redis.from_url(url, decode_responses=True)
    clients.append(redis)
    await run_pipeline(redis, TRADED, klines_updates(600), strategy_batch=25)
    await ensure_state(redis, IDLE, 0)
    # the pipeline's workers are gone and left, as on SIGTERM: their leases and membership too
    leases = [keys.lease(TRADED.id, name) for name in ("accounting", "strategy:ALT-BTC")]
    await redis.delete(keys.members("accounting"), keys.members("strategy"), *leases)


async def history(redis: Redis, bot: str) -> tuple[str, int, list[str]]:
    """(epoch, seq, the refresh log's entry ids)."""
    epoch, seq = await redis.hmget(keys.meta(bot), ["epoch", "seq"])
    log = [entry_id for entry_id, _ in await redis.xrange(keys.refresh_log(bot))]
    return str(epoch), int(seq), log


async def histories(redis: Redis) -> dict[str, tuple[str, int, list[str]]]:
    return {bot.id: await history(redis, bot.id) for bot in BOTS}


async def restart(server: RedisServer, *, kill: bool) -> None:
    if kill:  # a process crash: SIGKILL
        assert server.process is not None
        server.process.kill()
        server.process.wait()
    else:  # a clean stop: Redis fsyncs and exits
        server.stop()
    server.start()


# --- the decision, on hand-made servers ---------------------------------------------------------


def state(
    run_id: str, appendfsync: str, replid: str = "r1", *, promoted: bool = False
) -> ServerState:
    return ServerState(ServerRecord(run_id, appendfsync, replid), master=True, promoted=promoted)


@pytest.mark.parametrize(
    ("recorded", "now", "expected"),
    [
        (ServerRecord("a", "everysec", "r1"), state("a", "everysec"), Continuity.SAME_SERVER),
        # its first replica attaching gives a master a new replication id, nothing more
        (ServerRecord("a", "everysec", "r1"), state("a", "everysec", "r2"), Continuity.SAME_SERVER),
        # made a replica and promoted back: what it holds came from another master
        (
            ServerRecord("a", "always", "r1"),
            state("a", "always", "r2", promoted=True),
            Continuity.MAY_HAVE_LOST,
        ),
        (ServerRecord("a", "always", "r1"), state("b", "always", "r9"), Continuity.DURABLE_RESTART),
        (ServerRecord("a", "everysec", "r1"), state("b", "always"), Continuity.MAY_HAVE_LOST),
        (ServerRecord("a", "always", "r1"), state("b", "everysec"), Continuity.MAY_HAVE_LOST),
        (ServerRecord("a", "always", "r1"), state("b", "unknown"), Continuity.MAY_HAVE_LOST),
        (ServerRecord("a", "always", "r1"), state("b", "off"), Continuity.MAY_HAVE_LOST),
        (
            ServerRecord("a", "always", "r1"),
            state("b", "always", promoted=True),
            Continuity.MAY_HAVE_LOST,
        ),
        (None, state("a", "always"), Continuity.MAY_HAVE_LOST),  # state older than the record
    ],
)
def test_only_the_same_process_or_a_restart_under_always_keeps_a_history(
    recorded: ServerRecord | None, now: ServerState, expected: Continuity
) -> None:
    assert continuity(recorded, now) is expected


def test_a_replica_is_never_vouched_for() -> None:
    replica = ServerState(ServerRecord("a", "always", "r1"), master=False, promoted=False)
    assert continuity(ServerRecord("a", "always", "r1"), replica) is Continuity.MAY_HAVE_LOST


# --- restarts -----------------------------------------------------------------------------------


async def test_a_restart_under_everysec_gives_every_bot_a_new_epoch_though_no_service_saw_it(
    tmp_path: Path,
    servers: list[RedisServer],
    clients: list[Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A clean stop loses nothing here, but nothing tells it from a host crash that did: under
    `everysec` every restart counts as one that may have lost writes."""
    server = start_server(tmp_path, "redis", "everysec")
    servers.append(server)
    await populate(server.url, clients)
    before_redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(before_redis)
    before = await histories(before_redis)
    assert before[TRADED.id][1] > 3, "the pipeline published refreshes"
    await restart(server, kill=False)  # no worker runs: none sees it

    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    kept = {bot.id: await read_snapshot(redis, bot.id) for bot in BOTS}
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(keys.refresh_channel(bot.id) for bot in BOTS))
    await pubsub.get_message(timeout=1.0)
    await pubsub.get_message(timeout=1.0)  # the two subscribe confirmations

    with caplog.at_level(logging.WARNING):
        await accounting(server.url, clients).load()

    after = await histories(redis)
    server_now = await read_server(redis)
    published: dict[str, str] = {}
    for _ in BOTS:
        message = await pubsub.get_message(timeout=2.0)
        assert message is not None and message["type"] == "message"
        published[str(message["channel"])] = message["data"]
    await pubsub.aclose()
    for bot in BOTS:
        epoch, seq, log = after[bot.id]
        assert epoch != before[bot.id][0], f"{bot.id}: a new epoch"
        assert (seq, log) == (1, ["1-0"]), f"{bot.id}: the old epoch's log is gone"
        # refresh 1 of the new epoch is the whole state Redis kept, klines and trades included
        refresh = orjson.loads(published[keys.refresh_channel(bot.id)])
        assert (refresh["epoch"], refresh["seq"]) == (epoch, 1)
        assert refresh["data"] == {"symbols": kept[bot.id].symbols, "status": kept[bot.id].status}
        logged = (await redis.xrange(keys.refresh_log(bot.id)))[0][1]["msg"]
        assert logged == published[keys.refresh_channel(bot.id)]
        assert await read_server_record(redis, bot.id) == server_now.record
    assert kept[TRADED.id].symbols[0]["trades"], "the case has trades"
    assert sum("state lost" in record.getMessage() for record in caplog.records) == 2


async def test_a_restart_under_always_keeps_every_epoch_and_records_the_new_server(
    tmp_path: Path, servers: list[RedisServer], clients: list[Redis]
) -> None:
    server = start_server(tmp_path, "redis", "always")
    servers.append(server)
    await populate(server.url, clients)
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    before = await histories(redis)
    first_server = await read_server(redis)
    assert await read_server_record(redis, TRADED.id) == first_server.record

    await restart(server, kill=True)  # SIGKILL: `always` fsynced every acknowledged write
    await accounting(server.url, clients).load()

    assert await histories(redis) == before, "epoch, seq and log all kept"
    second_server = await read_server(redis)
    assert second_server.record.run_id != first_server.record.run_id
    for bot in BOTS:  # so a later loss is measured from the server that holds the state now
        assert await read_server_record(redis, bot.id) == second_server.record


async def test_a_failover_to_a_replica_gives_a_new_epoch_even_under_always(
    tmp_path: Path, servers: list[RedisServer], clients: list[Redis]
) -> None:
    """Replication is asynchronous: a promoted replica may miss what its master acknowledged,
    whatever either fsyncs."""
    master = start_server(tmp_path, "master", "always")
    replica = start_server(tmp_path, "replica", "always")
    servers += [master, replica]
    replica_redis = Redis.from_url(replica.url, decode_responses=True)
    clients.append(replica_redis)
    await replica_redis.replicaof("127.0.0.1", master.port)
    await populate(master.url, clients)
    master_redis = Redis.from_url(master.url, decode_responses=True)
    clients.append(master_redis)
    assert await master_redis.wait(1, 5000) == 1, "the replica has every write"
    before = await histories(master_redis)
    assert await histories(replica_redis) == before

    await replica_redis.replicaof("NO", "ONE")  # the failover: the replica is the master now
    await accounting(replica.url, clients).load()

    after = await histories(replica_redis)
    promoted = await read_server(replica_redis)
    assert promoted.promoted
    for bot in BOTS:
        assert after[bot.id][0] != before[bot.id][0], f"{bot.id}: a new epoch"
        assert after[bot.id][1:] == (1, ["1-0"])
        assert await read_server_record(replica_redis, bot.id) == promoted.record


async def test_a_worker_never_commits_to_a_server_it_did_not_compare(
    tmp_path: Path, servers: list[RedisServer], clients: list[Redis]
) -> None:
    """redis-py reconnects a pooled connection without a word (here: the pool is dropped, as
    after another user of the client, the health pinger, met the dead connection first). The
    worker's next commit must find out that Redis is another server, write nothing there, and
    reload, which starts the new epoch before anything is published."""
    server = start_server(tmp_path, "redis", "everysec")
    servers.append(server)
    await populate(server.url, clients)
    worker = accounting(server.url, clients)
    await worker.load()
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    before = await histories(redis)

    await restart(server, kill=True)
    await worker.redis.connection_pool.disconnect()  # the next commands reconnect silently
    commits_before = await redis.xlen(keys.commits(TRADED.id))
    with pytest.raises(RedisReplaced):
        for _ in range(3):  # the first step commits the book it loaded ("check once")
            await worker.run_once(max_block_ms=10)
    assert await redis.xlen(keys.commits(TRADED.id)) == commits_before, "nothing written"
    assert await histories(redis) == before

    await worker.load()  # what the worker shell does after any Redis error
    after = await histories(redis)
    for bot in BOTS:
        assert after[bot.id][0] != before[bot.id][0] and after[bot.id][1:] == (1, ["1-0"])


async def test_one_new_epoch_per_loss_however_many_replicas_and_owners(
    tmp_path: Path, servers: list[RedisServer], clients: list[Redis]
) -> None:
    """The epoch change is a fenced commit of the bot's owner, and records the server: a replica
    that takes the bot over later finds the server vouched for and keeps that epoch."""
    server = start_server(tmp_path, "redis", "everysec")
    servers.append(server)
    await populate(server.url, clients)
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    before = await histories(redis)
    await restart(server, kill=True)

    first = accounting(server.url, clients, worker_id="first")
    second = accounting(server.url, clients, worker_id="second")
    await asyncio.gather(first.load(), second.load())
    renewed = await histories(redis)
    for bot in BOTS:
        assert renewed[bot.id][0] != before[bot.id][0] and renewed[bot.id][1:] == (1, ["1-0"])

    for leaving, staying in ((first, second), (second, first)):  # every bot moves over
        await leaving.keeper.leave()
        leaving.books.clear()
        await staying.load()  # alone now: it takes every bot
        await staying.run_once(max_block_ms=10)
        assert set(staying.books) == {bot.id for bot in BOTS}
        now = await histories(redis)
        assert {bot.id: now[bot.id][0] for bot in BOTS} == {
            bot.id: renewed[bot.id][0] for bot in BOTS
        }, "no second epoch: the server was recorded with the first"


# --- what a managed or locked-down Redis refuses ------------------------------------------------


async def lock_down(url: str, clients: list[Redis], refused: str) -> str:
    """A Redis user allowed everything but `refused`; returns its URL."""
    admin = Redis.from_url(url, decode_responses=True)
    clients.append(admin)
    await admin.acl_setuser(
        "accounting",
        enabled=True,
        passwords=["+accounting-password"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=[f"-{refused}"],
    )
    return url.replace("redis://", "redis://accounting:accounting-password@", 1)


async def test_a_policy_config_refuses_to_tell_counts_as_may_have_lost(
    tmp_path: Path,
    servers: list[RedisServer],
    clients: list[Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A managed Redis may refuse CONFIG: the safe reading is "may lose", even under `always`."""
    server = start_server(tmp_path, "redis", "always")
    servers.append(server)
    with caplog.at_level(logging.WARNING):
        await accounting(await lock_down(server.url, clients, "config"), clients).load()
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    record = await read_server_record(redis, TRADED.id)
    assert record is not None and record.appendfsync == "unknown"
    assert "CONFIG GET appendfsync refused" in caplog.text
    before = await histories(redis)

    await restart(server, kill=False)  # ACL users live in memory only: made again after it
    await accounting(await lock_down(server.url, clients, "config"), clients).load()

    after = await histories(redis)
    for bot in BOTS:
        assert after[bot.id][0] != before[bot.id][0], f"{bot.id}: a new epoch"


async def test_without_info_accounting_publishes_nothing_and_says_why(
    tmp_path: Path,
    servers: list[RedisServer],
    clients: list[Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a run_id nothing tells a restarted Redis from the one before: the worker cannot
    keep rule 19, so it creates and publishes nothing, and logs an ERROR naming INFO."""
    server = start_server(tmp_path, "redis", "everysec")
    servers.append(server)
    worker = accounting(await lock_down(server.url, clients, "info"), clients)
    with caplog.at_level(logging.ERROR), pytest.raises(ResponseError):
        await worker.load()
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    assert await redis.exists(*(keys.meta(bot.id) for bot in BOTS)) == 0
    assert "INFO refused" in caplog.text
