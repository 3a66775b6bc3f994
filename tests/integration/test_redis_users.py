"""Least privilege in Redis, proven by denial (SPEC 4.1 rule 14, issue 19): the users of
deploy/redis-users.acl loaded into a real redis-server (the tests' Redis 6.2) and into a Redis 7
(Valkey, which tells read-only keys apart), each user trying what its job must never do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from libs.store import keys
from libs.store.client import ServiceRedis
from tools.run.redis_cluster import find_cluster_server
from tools.run.redis_server import RedisServer, new_passwords

BOT = "demo"
MARKET = keys.market_stream("mexc", "ETH-USDT", "1m")
STATUS = keys.status(BOT)


def client(server: RedisServer, user: str) -> Redis:
    assert server.passwords is not None
    return ServiceRedis.from_url(
        server.url, username=user, password=server.passwords[user], decode_responses=True
    )


@pytest.fixture(scope="module")
def redis7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp("redis7"), binary=find_cluster_server(), passwords=new_passwords()
    ).start()
    yield server
    server.stop()


@pytest.fixture(params=["6.2", "7"])
async def server(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis7: RedisServer, redis: Redis
) -> AsyncIterator[RedisServer]:
    """Each Redis with a bot's keys in place, as the services would have written them."""
    chosen = redis_server if request.param == "6.2" else redis7
    admin = client(chosen, "admin")
    await admin.flushall()
    await admin.hset(STATUS, "tradeNum", "3")
    await admin.xadd(MARKET, {"u": "1"})
    await admin.hset(keys.api_keys(), "ab" * 32, BOT)
    await admin.aclose()
    yield chosen


async def refused(redis: Redis, *command: object) -> bool:
    try:
        await redis.execute_command(*command)  # type: ignore[no-untyped-call]
    except NoPermissionError:
        return True
    return False


WRITES = [
    ("SET", "bw:anything", "x"),
    ("HSET", STATUS, "tradeNum", "999"),
    ("XADD", keys.refresh_log(BOT), "*", "msg", "x"),
    ("DEL", STATUS),
    ("PUBLISH", keys.refresh_channel(BOT), "x"),
    ("EVAL", "return 1", "0"),
    ("FLUSHALL",),
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "*"),
    ("ACL", "LIST"),
    ("SCAN", "0"),
    ("KEYS", "*"),
]


async def test_the_gateway_can_write_nothing(server: RedisServer) -> None:
    gateway = client(server, "gateway")
    try:
        for command in WRITES:
            assert await refused(gateway, *command), command
        assert await gateway.hget(STATUS, "tradeNum") == "3"  # it reads what it serves
        assert await gateway.hget(keys.api_keys(), "ab" * 32) == BOT
        for key in (keys.strategy_state(BOT, "ETH-USDT"), keys.events(BOT), MARKET):
            assert await refused(gateway, "TYPE", key), key  # outside its patterns
        pubsub = gateway.pubsub()
        await pubsub.subscribe(keys.refresh_channel(BOT))  # what it needs
        await pubsub.subscribe("bw:other")  # the refusal comes back as the channel's reply
        with pytest.raises(NoPermissionError):
            for _ in range(10):
                await pubsub.get_message(timeout=0.2)
        await pubsub.aclose()
    finally:
        await gateway.aclose()


async def test_each_worker_is_refused_the_keys_of_the_other_jobs(server: RedisServer) -> None:
    ingest, strategy = client(server, "ingest"), client(server, "strategy")
    accounting, notify = client(server, "accounting"), client(server, "notify")
    try:
        assert await refused(ingest, "HGET", STATUS, "tradeNum")
        assert await refused(ingest, "XADD", keys.events(BOT), "*", "a", "b")
        assert await ingest.xadd(MARKET, {"u": "2"})  # its own job
        assert await refused(strategy, "HSET", STATUS, "tradeNum", "1")
        assert await refused(strategy, "XADD", keys.refresh_log(BOT), "*", "a", "b")
        assert await refused(accounting, "XADD", MARKET, "*", "a", "b")
        assert await refused(accounting, "XREAD", "STREAMS", MARKET, "0")
        assert await refused(notify, "HSET", STATUS, "tradeNum", "1")
        assert await refused(notify, "SET", keys.lease(BOT, "accounting"), "x")
        assert await refused(strategy, "INCR", keys.fence(BOT, "accounting"))
        for worker in (ingest, strategy, accounting, notify):
            for command in (("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"), ("ACL", "LIST")):
                assert await refused(worker, *command), command
    finally:
        for worker in (ingest, strategy, accounting, notify):
            await worker.aclose()


async def test_on_redis_7_a_key_a_worker_only_reads_is_read_only(server: RedisServer) -> None:
    """Redis 6.2 has no read-only key rule (docs/security.md): there the strategy, which reads
    market streams, could also write them; Redis 7 refuses it."""
    strategy = client(server, "strategy")
    try:
        assert await strategy.xrange(MARKET)
        write_refused = await refused(strategy, "XADD", MARKET, "*", "a", "b")
        assert write_refused == (server is not None and server.binary == find_cluster_server())
    finally:
        await strategy.aclose()


async def test_the_inspector_reads_every_key_and_writes_none(server: RedisServer) -> None:
    inspector = client(server, "inspector")
    try:
        found = [key async for key in inspector.scan_iter(match="bw:*")]
        assert set(found) >= {STATUS, MARKET, keys.api_keys()}
        assert await inspector.hgetall(STATUS) == {"tradeNum": "3"}
        assert await inspector.xrange(MARKET)
        for command in WRITES[:8]:
            assert await refused(inspector, *command), command
    finally:
        await inspector.aclose()


async def test_a_refused_command_is_logged_at_error_naming_command_and_key_pattern(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.passwords is not None
    gateway = client(server, "gateway")
    try:
        with caplog.at_level(logging.ERROR, logger="libs.store.client"):
            assert await refused(gateway, "HSET", STATUS, "tradeNum", "1")
            async with gateway.pipeline(transaction=True) as tx:
                tx.hget(STATUS, "tradeNum")
                tx.xadd(keys.refresh_log(BOT), {"msg": "x"})
                with pytest.raises(NoPermissionError):
                    await tx.execute()
    finally:
        await gateway.aclose()
    lines = [record.getMessage() for record in caplog.records]
    assert any("command HSET, key pattern bw:{*}:status" in line for line in lines), lines
    assert any("key pattern bw:{*}:refreshes" in line for line in lines), lines
    assert all(server.passwords["gateway"] not in line for line in lines)


def test_the_users_file_loads_as_written(tmp_path: Path) -> None:
    """deploy/redis-users.acl, without passwords, is a users file Redis 7 accepts."""
    users = Path(__file__).parents[2] / "deploy" / "redis-users.acl"
    server = RedisServer(
        tmp_path, binary=find_cluster_server(), extra_args=["--aclfile", str(users)]
    ).start()
    server.stop()
