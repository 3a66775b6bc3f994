"""Refresh delivery: gaps filled from the log, resume, new epochs, slow consumers and Redis
outages (SPEC 2.1 rules 7, 8, 9 and 15, 5.1 rule 5)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from libs.store import keys
from libs.wire.status import InitMessage, RefreshMessage, ResumeMessage
from tests.integration.gateway_harness import (
    assert_quiet,
    client,
    expect_close,
    expect_error,
    recv_json,
    recv_text,
    running_gateway,
    send_json,
)
from tests.integration.gateway_seed import SeededBot, new_epoch, seed_bot
from tools.run.redis_server import RedisServer

pytestmark = pytest.mark.timeout(40)


async def _init(ws: ClientConnection, bot: SeededBot, **extra: object) -> dict[str, object]:
    await send_json(ws, {"action": "init", "apiKey": bot.api_key, **extra})
    return await recv_json(ws)


async def test_a_refresh_the_gateway_missed_is_filled_from_the_log(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await _init(ws, bot)
        await bot.publish(redis, announce=False)
        await bot.publish(redis, announce=False)
        await bot.publish(redis)
        for seq in (2, 3, 4):
            assert await recv_text(ws) == bot.published[seq]
        await assert_quiet(ws, 0.2)


async def test_refreshes_published_while_the_subscription_is_down_arrive_after_it(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await _init(ws, bot)
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await bot.publish(redis)
        await bot.publish(redis)
        for seq in (2, 3):  # without any later publish: the hub catches up on resubscribing
            assert await recv_text(ws, 8.0) == bot.published[seq]
        await bot.publish(redis)
        assert await recv_text(ws) == bot.published[4]
        await assert_quiet(ws, 0.2)


async def test_resume_replays_the_gap_from_the_log_then_goes_live(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    for _ in range(150):  # more than the send queue: the replay is streamed, not queued
        await bot.publish(redis)
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        reply = await _init(ws, bot, since=3, epoch=bot.epoch)
        ResumeMessage.model_validate(reply)
        assert reply == {"action": "resume", "seq": 3, "epoch": bot.epoch}
        for seq in range(4, 152):
            assert await recv_text(ws) == bot.published[seq]
        await bot.publish(redis)
        assert await recv_text(ws) == bot.published[152]
        assert await _init(ws, bot, since=152, epoch=bot.epoch) == {
            "action": "resume",
            "seq": 152,
            "epoch": bot.epoch,
        }
        await assert_quiet(ws, 0.2)


@pytest.mark.parametrize("case", ["trimmed", "other_epoch", "ahead", "epoch_only"])
async def test_resume_falls_back_to_a_full_init(
    redis: Redis, redis_server: RedisServer, case: str
) -> None:
    bot = await seed_bot(redis, "alpha")
    for _ in range(9):
        await bot.publish(redis)
    await redis.xtrim(keys.refresh_log("alpha"), minid="6-0")  # the log keeps 6..10
    request: dict[str, object] = {
        "trimmed": {"since": 2, "epoch": bot.epoch},
        "other_epoch": {"since": 8, "epoch": new_epoch()},
        "ahead": {"since": 11, "epoch": bot.epoch},
        "epoch_only": {"epoch": bot.epoch},
    }[case]
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        init = await _init(ws, bot, **request)
        InitMessage.model_validate(init)
        assert init == bot.expected_init()
        await bot.publish(redis)
        assert await recv_text(ws) == bot.published[11]


async def test_resume_just_inside_the_log_is_a_resume(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    for _ in range(9):
        await bot.publish(redis)
    await redis.xtrim(keys.refresh_log("alpha"), minid="6-0")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        assert (await _init(ws, bot, since=5, epoch=bot.epoch))["action"] == "resume"
        for seq in range(6, 11):
            assert await recv_text(ws) == bot.published[seq]


async def test_a_new_epoch_is_forwarded_and_a_re_init_follows_it(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    await bot.publish(redis)
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await _init(ws, bot)
        doomed = [key async for key in redis.scan_iter(match=keys.bot_keys_pattern("alpha"))]
        await redis.delete(*doomed)  # `bandwagon reset`, keeping the key registered
        reborn = await seed_bot(redis, "alpha")
        first = await recv_text(ws)
        assert first == reborn.published[1]
        assert RefreshMessage.model_validate_json(first).epoch != bot.epoch
        init = await _init(ws, reborn, since=2, epoch=bot.epoch)
        assert init == reborn.expected_init()
        await reborn.publish(redis)
        assert await recv_text(ws) == reborn.published[2]


def _unread_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that stops reading is noticed
    after a few megabytes instead of tens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _read_until_closed(ws: ClientConnection, bot: SeededBot) -> tuple[int, int, str]:
    """Everything the stalled client still gets is in order; returns last seq and the close."""
    last_seq = 1
    async with asyncio.timeout(20):
        while True:
            try:
                text = await ws.recv()
            except Exception:
                break
            assert isinstance(text, str)
            assert text == bot.published[last_seq + 1]
            last_seq += 1
    return last_seq, ws.close_code or 1006, ws.close_reason or ""


@pytest.mark.parametrize(
    ("queue", "stall_s", "refreshes"),
    [(4, 30.0, 100), (64, 1.0, 60)],
    ids=["queue_overflow", "stalled_send"],
)
async def test_a_client_that_stops_reading_is_closed_slow_consumer_and_others_never_notice(
    redis: Redis, redis_server: RedisServer, queue: int, stall_s: float, refreshes: int
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with (
        running_gateway(
            redis_server.url, gateway_send_queue=queue, gateway_send_stall_s=stall_s
        ) as gateway,
        client(gateway.url) as good,
        client(gateway.url, sock=_unread_socket(gateway.port), max_queue=1) as slow,
    ):
        await _init(good, bot)
        await _init(slow, bot)

        async def read_all() -> None:
            for seq in range(2, refreshes + 2):
                assert await recv_text(good, 10.0) == bot.published[seq]

        reader = asyncio.create_task(read_all())
        for _ in range(refreshes):
            await bot.publish(redis, pad_chars=120_000)
        await reader
        if queue == 64:
            await asyncio.sleep(stall_s + 1.5)  # the sweep notices the blocked send
        last_seq, code, reason = await _read_until_closed(slow, bot)
        assert (code, reason) == (1013, "slow_consumer")
        assert last_seq < refreshes + 1
        await bot.publish(redis)
        assert await recv_text(good) == bot.published[refreshes + 2]


async def test_redis_down_keeps_clients_and_the_gateway_then_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    own = RedisServer(data_dir=tmp_path / "redis", appendfsync="always").start()
    redis = Redis.from_url(own.url, decode_responses=True)
    try:
        bot = await seed_bot(redis, "alpha")
        async with running_gateway(own.url) as gateway, client(gateway.url) as ws:
            await _init(ws, bot)
            await bot.publish(redis)
            assert await recv_text(ws) == bot.published[2]
            await redis.aclose()
            own.stop()
            await send_json(ws, {"action": "refresh", "apiKey": bot.api_key})
            assert await recv_text(ws) == bot.published[2]  # held in memory (rule 9)
            async with client(gateway.url) as other:
                await send_json(other, {"action": "init", "apiKey": bot.api_key})
                await expect_error(other, "unavailable")
                assert await expect_close(other) == (1013, "unavailable")
            own.start()
            redis = Redis.from_url(own.url, decode_responses=True)
            await bot.publish(redis)
            assert await recv_text(ws, 10.0) == bot.published[3]
    finally:
        await redis.aclose()
        own.stop()
