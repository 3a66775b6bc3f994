"""Per-bot subscriptions (SPEC 4.1 rule 13, issue 17 item 2): a gateway subscribes to a bot's
channel while it has a client of that bot and unsubscribes after the last one leaves, so it
receives nothing of the bots it serves no client of, and SPEC 2.1 rule 7 holds across the
subscribe and unsubscribe races."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from redis.asyncio import Redis

from services.gateway import metrics
from tests.integration.gateway_harness import client, recv_json, running_gateway, send_json
from tests.integration.gateway_seed import seed_bot
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

pytestmark = pytest.mark.timeout(90)


async def channels(redis: Redis) -> set[str]:
    return {str(name) for name in await redis.pubsub_channels("bw:*")}


async def subscribed_to(redis: Redis, expected: set[str]) -> bool:
    return await channels(redis) == expected


async def test_a_bot_is_subscribed_while_it_has_a_client_and_only_then(
    redis: Redis, redis_server: RedisServer
) -> None:
    served = await seed_bot(redis, "served")
    other = await seed_bot(redis, "other")
    async with running_gateway(redis_server.url) as gateway:
        assert await channels(redis) == set()
        unserved_before = metrics.REFRESHES_UNSERVED._value.get()
        async with client(gateway.url) as ws:
            await send_json(ws, {"action": "init", "apiKey": served.api_key})
            assert (await recv_json(ws))["seq"] == 1
            await eventually(
                lambda: subscribed_to(redis, {"bw:{served}:refresh"}),
                timeout_s=5,
                what="the served bot's channel subscribed, and no other",
            )
            for _ in range(5):
                await other.publish(redis)
            await served.publish(redis)
            refresh = await recv_json(ws)
            assert (refresh["action"], refresh["seq"]) == ("refresh", 2)
        await eventually(
            lambda: subscribed_to(redis, set()),
            timeout_s=5,
            what="unsubscribed after the last client",
        )
        for _ in range(5):
            await served.publish(redis)
        await asyncio.sleep(0.2)
        assert metrics.REFRESHES_UNSERVED._value.get() == unserved_before


async def test_clients_that_come_and_go_while_the_bot_publishes_get_every_seq_in_order(
    redis: Redis, redis_server: RedisServer
) -> None:
    """Hammer one bot with connects and disconnects, so its subscription is taken and dropped
    again and again while it publishes: each client gets every seq after its `init`, once and
    in order, with nothing skipped (the log holds them all)."""
    bot = await seed_bot(redis, "busy")
    rng = random.Random(17)
    stop = asyncio.Event()
    checked: list[int] = []

    async def publisher() -> None:
        while not stop.is_set():
            await bot.publish(redis)
            await asyncio.sleep(rng.uniform(0, 0.004))

    async def short_lived_client(url: str) -> None:
        async with client(url) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            init = await recv_json(ws)
            expected = init["seq"] + 1
            target = expected + rng.randrange(1, 8)
            while expected <= target:
                refresh = await recv_json(ws, timeout_s=10)
                assert refresh["action"] == "refresh"
                assert refresh["seq"] == expected, (init["seq"], expected, refresh["seq"])
                assert refresh == orjson.loads(bot.published[expected])
                expected += 1
            checked.append(expected - init["seq"] - 1)

    async with running_gateway(redis_server.url) as gateway:
        publishing = asyncio.create_task(publisher())
        try:
            for _ in range(40):  # waves of one to three clients: often none between waves
                await asyncio.gather(
                    *(short_lived_client(gateway.url) for _ in range(rng.randrange(1, 4)))
                )
        finally:
            stop.set()
            await publishing
    assert len(checked) >= 40 and sum(checked) > 100
