"""`unauthorized` means "not a configured key", nothing else: the key registry (`bw:apikeys`) as
the gateway reads it, readiness, the auth timeout of a slow `init`, and what counts toward the
failed-keys limit (SPEC 2.1 rules 16 and 18, 4.1 rule 2, 5.1 rules 2 and 4)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from libs.config import api_key_hash
from libs.store import keys
from libs.wire.status import InitMessage, RefreshMessage
from tests.integration.gateway_harness import (
    RunningGateway,
    assert_quiet,
    client,
    expect_close,
    expect_error,
    recv_json,
    recv_text,
    running_gateway,
    send_json,
)
from tests.integration.gateway_seed import api_key_for, seed_bot
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

pytestmark = pytest.mark.timeout(40)

MALFORMED_KEY = "has a space in it 0123"  # can never be configured (SPEC 2.1 rule 16)
UNKNOWN_KEY = "a-well-formed-but-unknown-key"
AUTH_TIMEOUT_S = 0.5
REDIS_ANSWER_S = 20.0  # longer than the gateway's own Redis timeouts (services/gateway/server.py)


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test may pause (SIGSTOP)."""
    server = RedisServer(data_dir=tmp_path / "redis").start()
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)  # never leave it stopped
    server.stop()


@pytest.fixture
async def own_redis(own_redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """Redis frozen: connections stay open, and nothing is answered until it resumes."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def readyz(gateway: RunningGateway) -> int:
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        return (await http.get("/readyz")).status_code


async def wait_until_redis_answered(gateway: RunningGateway) -> None:
    """Readiness then hangs on the registry alone: PING answered and the subscription live."""
    await eventually(
        lambda: gateway.server.health.redis_fresh, timeout_s=5, what="Redis answered the gateway"
    )


async def expect_refused(url: str, api_key: str, code: str, close: int) -> None:
    async with client(url) as ws:
        await send_json(ws, {"action": "init", "apiKey": api_key})
        await expect_error(ws, code)
        assert await expect_close(ws) == (close, code)


# -- rule 18: unauthorized only once the registry has been read -----------------------------------


async def test_before_the_registry_exists_a_good_key_gets_unavailable_1013_then_its_init(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with running_gateway(redis_server.url) as gateway:
        for api_key in (api_key_for("alpha"), UNKNOWN_KEY, MALFORMED_KEY):  # none is absent yet
            await expect_refused(gateway.url, api_key, "unavailable", 1013)
        bot = await seed_bot(redis, "alpha")  # accounting writes the state and the registry
        async with client(gateway.url) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            assert InitMessage.model_validate(await recv_json(ws)).seq == 1
        for api_key in (UNKNOWN_KEY, MALFORMED_KEY):  # absent from a registry that exists now
            await expect_refused(gateway.url, api_key, "unauthorized", 4401)


async def test_readyz_is_503_until_the_registry_exists_and_while_it_is_gone(
    redis: Redis, redis_server: RedisServer
) -> None:
    """SPEC 4.1 rule 2, read literally: Redis keeps no empty hash, so a registry whose last key
    was deleted does not exist either."""
    async with running_gateway(redis_server.url) as gateway:
        await wait_until_redis_answered(gateway)
        assert await readyz(gateway) == 503
        bot = await seed_bot(redis, "alpha")

        async def ready() -> bool:
            return await readyz(gateway) == 200

        await eventually(ready, timeout_s=5, what="/readyz 200 once the registry exists")
        await redis.hdel(keys.api_keys(), api_key_hash(bot.api_key))
        assert not await redis.exists(keys.api_keys())

        async def unready() -> bool:
            return await readyz(gateway) == 503

        await eventually(unready, timeout_s=5, what="/readyz 503 once the registry is gone")


# -- rule 18 and 5.1 rule 2: a slow init gets its answer, never the auth timeout's 4401 -----------


async def test_an_init_slower_than_the_auth_timeout_gets_its_init(
    own_redis: Redis, own_redis_server: RedisServer
) -> None:
    bot = await seed_bot(own_redis, "alpha")
    async with (
        running_gateway(own_redis_server.url, gateway_auth_timeout_s=AUTH_TIMEOUT_S) as gateway,
        client(gateway.url) as ws,
    ):
        with paused(own_redis_server):
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            await assert_quiet(ws, quiet_s=3 * AUTH_TIMEOUT_S)  # the timer stopped at the init
        InitMessage.model_validate(await recv_json(ws, timeout_s=REDIS_ANSWER_S))


async def test_an_init_redis_never_answers_gets_unavailable_then_1013(
    own_redis: Redis, own_redis_server: RedisServer
) -> None:
    bot = await seed_bot(own_redis, "alpha")
    async with (
        running_gateway(own_redis_server.url, gateway_auth_timeout_s=AUTH_TIMEOUT_S) as gateway,
        client(gateway.url) as ws,
    ):
        with paused(own_redis_server):
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            reply = await recv_json(ws, timeout_s=REDIS_ANSWER_S)
            assert (reply["action"], reply["code"]) == ("error", "unavailable"), reply
            assert await expect_close(ws) == (1013, "unavailable")


async def test_a_first_init_stops_the_auth_timer_even_when_its_answer_keeps_the_connection_open(
    redis: Redis, redis_server: RedisServer
) -> None:
    """Rule 18: the auth timeout stops when the first `init` arrives. An `init` with the right
    key and a bad `since` gets `bad_request` and leaves the connection open (rule 3); the timer
    does not come back, and a later `init` is answered."""
    bot = await seed_bot(redis, "alpha")
    async with (
        running_gateway(redis_server.url, gateway_auth_timeout_s=AUTH_TIMEOUT_S) as gateway,
        client(gateway.url) as ws,
    ):
        await send_json(ws, {"action": "init", "apiKey": bot.api_key, "since": -1})
        await expect_error(ws, "bad_request")
        await assert_quiet(ws, quiet_s=3 * AUTH_TIMEOUT_S)
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        InitMessage.model_validate(await recv_json(ws))


# -- rule 16: only a registry that exists can show a key removed ----------------------------------


async def test_a_registry_gone_altogether_revokes_nothing_and_one_without_the_key_does(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        await recv_json(ws)
        await redis.delete(keys.api_keys())  # as after FLUSHALL: not "every key revoked"
        await gateway.server.gateway.check_keys()  # the periodic check, without waiting 5 s
        await assert_quiet(ws)
        await send_json(ws, {"action": "refresh", "apiKey": bot.api_key})
        reply = RefreshMessage.model_validate(await recv_json(ws))
        assert reply.seq == bot.seq
        await bot.publish(redis)  # and refreshes go on
        assert await recv_text(ws) == bot.published[bot.seq]

        await seed_bot(redis, "beta")  # the registry is back, without alpha's key
        await gateway.server.gateway.check_keys()
        await expect_error(ws, "unauthorized")
        assert await expect_close(ws) == (4401, "unauthorized")


# -- 5.1 rule 4: every unauthorized answer counts ---------------------------------------------


async def test_auth_timeout_answers_count_toward_the_failed_keys_limit(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(
        redis_server.url, gateway_auth_timeout_s=AUTH_TIMEOUT_S, gateway_auth_fails_per_min=1
    ) as gateway:
        for _ in range(2):  # more than 1 within 60 s
            async with client(gateway.url) as ws:
                await expect_error(ws, "unauthorized")
                assert await expect_close(ws) == (4401, "unauthorized")
        await expect_refused(gateway.url, bot.api_key, "rate_limited", 1008)


async def test_revoked_key_answers_count_toward_the_failed_keys_limit(
    redis: Redis, redis_server: RedisServer
) -> None:
    alpha = await seed_bot(redis, "alpha")
    beta = await seed_bot(redis, "beta")
    async with running_gateway(redis_server.url, gateway_auth_fails_per_min=1) as gateway:
        async with client(gateway.url) as first, client(gateway.url) as second:
            for ws in (first, second):
                await send_json(ws, {"action": "init", "apiKey": alpha.api_key})
                await recv_json(ws)
            await redis.hdel(keys.api_keys(), api_key_hash(alpha.api_key))  # beta's stays
            await gateway.server.gateway.check_keys()
            for ws in (first, second):
                await expect_error(ws, "unauthorized")
                assert await expect_close(ws) == (4401, "unauthorized")
        await expect_refused(gateway.url, beta.api_key, "rate_limited", 1008)
