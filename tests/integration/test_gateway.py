"""The gateway's answers to each request and each bad input (SPEC 2, 2.1 rules 1-4 and 9, 5.1)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from libs.config import api_key_hash
from libs.store import keys
from libs.wire.status import InitMessage, RefreshMessage
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
from tests.integration.gateway_seed import api_key_for, seed_bot
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)


async def test_init_shows_the_seeded_state_field_by_field(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    for trades in (0, 2, 0, 1):
        await bot.publish(redis, trades=trades)
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None  # 2.1 rule 17
        await assert_quiet(ws, 0.2)  # nothing before the first request (2.1 rule 1)
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        init = await recv_json(ws)
        InitMessage.model_validate(init)
        expected = bot.expected_init()
        assert init.keys() == expected.keys()
        for name in expected:
            assert init[name] == expected[name], name
        assert init["seq"] == 5
        assert [s["product_id"] for s in init["symbols"]] == ["ETH-USDT", "BTC-USDT"]


async def test_refreshes_after_init_arrive_in_order_byte_identical(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        assert (await recv_json(ws))["seq"] == 1
        for _ in range(30):
            await bot.publish(redis, trades=1)
        for seq in range(2, 32):
            text = await recv_text(ws)
            assert text == bot.published[seq]
            RefreshMessage.model_validate_json(text)
        await assert_quiet(ws, 0.2)


async def test_a_refresh_published_while_init_reads_is_neither_lost_nor_doubled(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway:
        clients = [await client(gateway.url) for _ in range(8)]
        try:
            for ws in clients:
                await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            for _ in range(20):
                await bot.publish(redis)
            for ws in clients:
                init = await recv_json(ws)
                for seq in range(init["seq"] + 1, 22):
                    assert await recv_text(ws) == bot.published[seq]
                await assert_quiet(ws, 0.05)
        finally:
            for ws in clients:
                await ws.close()


async def test_two_bots_are_isolated(redis: Redis, redis_server: RedisServer) -> None:
    alpha = await seed_bot(redis, "alpha")
    beta = await seed_bot(redis, "beta")
    async with (
        running_gateway(redis_server.url) as gateway,
        client(gateway.url) as ws_alpha,
        client(gateway.url) as ws_beta,
    ):
        await send_json(ws_alpha, {"action": "init", "apiKey": alpha.api_key})
        await send_json(ws_beta, {"action": "init", "apiKey": beta.api_key})
        assert (await recv_json(ws_alpha))["status"]["exchange"] == "mexc"
        await recv_json(ws_beta)
        await beta.publish(redis)
        await alpha.publish(redis)
        await beta.publish(redis)
        assert await recv_text(ws_alpha) == alpha.published[2]
        assert await recv_text(ws_beta) == beta.published[2]
        assert await recv_text(ws_beta) == beta.published[3]
        await assert_quiet(ws_alpha, 0.2)


async def test_refresh_request_replies_with_the_newest_refresh(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        await recv_json(ws)
        await send_json(ws, {"action": "refresh", "apiKey": bot.api_key})
        assert await recv_text(ws) == bot.published[1]  # its own seq, byte-identical
        await bot.publish(redis, announce=False)  # newer than what the connection was sent
        await bot.publish(redis, announce=False)
        await send_json(ws, {"action": "refresh", "apiKey": bot.api_key})
        assert await recv_text(ws) == bot.published[2]  # the one in between first (rule 9)
        assert await recv_text(ws) == bot.published[3]
        await bot.publish(redis)
        assert await recv_text(ws) == bot.published[4]  # and 3 is not sent twice
        await assert_quiet(ws, 0.2)


async def test_bot_without_state_is_unavailable_then_1013(
    redis: Redis, redis_server: RedisServer
) -> None:
    await redis.hset(keys.api_keys(), api_key_hash(api_key_for("ghost")), "ghost")
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, {"action": "init", "apiKey": api_key_for("ghost")})
        await expect_error(ws, "unavailable")
        assert await expect_close(ws) == (1013, "unavailable")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{nope", "bad_json"),
        ('{"action":"init"} trailing', "bad_json"),
        ('{"action":"init","x":NaN}', "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"init"', "bad_json"),
        ("[" * 33 + "]" * 33, "bad_json"),
        ('{"a":' * 33 + "1" + "}" * 33, "bad_json"),
        (b'{"action":"init"}', "bad_json"),
        ('{"apiKey":"x"}', "unknown_action"),
        ('{"action":"INIT"}', "unknown_action"),
        ('{"action":7}', "unknown_action"),
        ('{"action":"init","action":"subscribe"}', "unknown_action"),
        ('{"action":"init","apiKey":"KEY","since":1.5}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","since":-1}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","since":9007199254740992}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","since":"3"}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","since":true}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","since":1e400}', "bad_request"),
        ('{"action":"init","apiKey":"KEY","epoch":12}', "bad_request"),
    ],
)
async def test_bad_input_is_answered_and_the_connection_stays_usable(
    redis: Redis, redis_server: RedisServer, frame: str | bytes, code: str
) -> None:
    bot = await seed_bot(redis, "alpha")
    if isinstance(frame, str):
        frame = frame.replace("KEY", bot.api_key)
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await ws.send(frame)
        await expect_error(ws, code)
        await send_json(ws, {"action": "init", "apiKey": bot.api_key, "unknown": [1]})
        InitMessage.model_validate(await recv_json(ws))
        await ws.send(frame)  # and after init too, with the state unchanged
        await expect_error(ws, code)
        await bot.publish(redis)
        assert await recv_text(ws) == bot.published[2]


async def test_32_levels_of_nesting_are_accepted_and_duplicates_take_the_last(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    nested = '{"a":' * 31 + "1" + "}" * 31
    frame = f'{{"action":"refresh","action":"init","apiKey":"{bot.api_key}","x":{nested}}}'
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await ws.send(frame)
        InitMessage.model_validate(await recv_json(ws))


@pytest.mark.parametrize(
    "request_",
    [
        {"action": "init", "apiKey": "not-a-configured-key-000"},
        {"action": "init"},
        {"action": "init", "apiKey": ""},
        {"action": "init", "apiKey": 12345},
        {"action": "init", "apiKey": "k" * 257},
        {"action": "init", "apiKey": "ключ-ключ-ключ-ключ"},
        {"action": "refresh", "apiKey": "KEY"},  # refresh before init
    ],
)
async def test_unauthorized_closes_with_4401(
    redis: Redis, redis_server: RedisServer, request_: dict[str, object]
) -> None:
    bot = await seed_bot(redis, "alpha")
    if request_.get("apiKey") == "KEY":
        request_ = {**request_, "apiKey": bot.api_key}
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, request_)
        await expect_error(ws, "unauthorized")
        assert await expect_close(ws) == (4401, "unauthorized")


async def test_a_request_with_another_key_than_the_connections_is_unauthorized(
    redis: Redis, redis_server: RedisServer
) -> None:
    alpha = await seed_bot(redis, "alpha")
    beta = await seed_bot(redis, "beta")
    for action in ("refresh", "init"):
        async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
            await send_json(ws, {"action": "init", "apiKey": alpha.api_key})
            await recv_json(ws)
            await send_json(ws, {"action": action, "apiKey": beta.api_key})
            await expect_error(ws, "unauthorized")
            assert await expect_close(ws) == (4401, "unauthorized")


async def test_a_message_over_65536_bytes_closes_1009(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    prefix = f'{{"action":"init","apiKey":"{bot.api_key}","pad":"'
    async with running_gateway(redis_server.url) as gateway:
        async with client(gateway.url) as ws:
            exact = prefix + "p" * (65536 - len(prefix) - 2) + '"}'
            assert len(exact.encode()) == 65536
            await ws.send(exact)
            InitMessage.model_validate(await recv_json(ws))
        async with client(gateway.url) as ws:
            await ws.send(exact[:-2] + 'p"}')
            code, _ = await expect_close(ws)
            assert code == 1009


async def test_invalid_utf8_closes_1007(redis: Redis, redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await ws.send(b'{"action":"init","apiKey":"\xff\xfe"}', text=True)
        code, _ = await expect_close(ws)
        assert code == 1007


async def test_the_21st_frame_of_a_burst_is_rate_limited_then_1008(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        for _ in range(20):
            await ws.send(b"binary frames take a token too")
        await ws.send("[]")
        for _ in range(20):
            await expect_error(ws, "bad_json")
        await expect_error(ws, "rate_limited")
        assert await expect_close(ws) == (1008, "rate_limited")


async def test_no_init_within_the_auth_timeout_is_unauthorized_then_4401(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with (
        running_gateway(redis_server.url, gateway_auth_timeout_s=0.5) as gateway,
        client(gateway.url) as ws,
    ):
        await ws.send("{}")  # a bad request does not reset the timer
        await expect_error(ws, "unknown_action")
        await expect_error(ws, "unauthorized")
        assert await expect_close(ws) == (4401, "unauthorized")


async def test_more_than_20_failed_keys_from_one_address_block_its_inits(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway:
        for _ in range(21):
            async with client(gateway.url) as ws:
                await send_json(ws, {"action": "init", "apiKey": "wrong-key-0123456789"})
                await expect_error(ws, "unauthorized")
        async with client(gateway.url) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            await expect_error(ws, "rate_limited")
            assert await expect_close(ws) == (1008, "rate_limited")


async def test_the_failed_keys_address_is_the_right_most_untrusted_forwarded_hop(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    async with running_gateway(
        redis_server.url, gateway_trusted_proxies=("127.0.0.0/8",), gateway_auth_fails_per_min=1
    ) as gateway:
        for hop in ("203.0.113.7", "203.0.113.7"):
            headers = {"X-Forwarded-For": f"198.51.100.1, {hop}, 127.0.0.5"}
            async with client(gateway.url, additional_headers=headers) as ws:
                await send_json(ws, {"action": "init", "apiKey": "wrong-key-0123456789"})
                await expect_error(ws, "unauthorized")
        blocked = {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}
        async with client(gateway.url, additional_headers=blocked) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            await expect_error(ws, "rate_limited")
        other = {"X-Forwarded-For": "203.0.113.7, 203.0.113.8"}
        async with client(gateway.url, additional_headers=other) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            InitMessage.model_validate(await recv_json(ws))


async def test_a_rotated_key_closes_its_connections_with_4401(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    await seed_bot(redis, "beta")  # the registry still exists without alpha's key: a rotation
    async with running_gateway(redis_server.url) as gateway, client(gateway.url) as ws:
        await send_json(ws, {"action": "init", "apiKey": bot.api_key})
        await recv_json(ws)
        await redis.hdel(keys.api_keys(), api_key_hash(bot.api_key))
        await gateway.server.gateway.check_keys()  # the periodic check, without waiting 5 s
        await expect_error(ws, "unauthorized")
        assert await expect_close(ws) == (4401, "unauthorized")


async def test_origin_outside_the_allow_list_gets_http_403(
    redis: Redis, redis_server: RedisServer
) -> None:
    from websockets.exceptions import InvalidStatus

    async with running_gateway(
        redis_server.url, gateway_allowed_origins=("https://app.example",)
    ) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            async with client(gateway.url, origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with client(gateway.url, origin="https://app.example") as ws:
            await send_json(ws, {"action": "refresh"})
            await expect_error(ws, "unauthorized")
        async with client(gateway.url) as ws:  # no Origin: allowed
            await ws.send("[]")
            await expect_error(ws, "bad_json")


async def test_health_ready_and_metrics_on_the_gateway_port(
    redis: Redis, redis_server: RedisServer
) -> None:
    import httpx

    bot = await seed_bot(redis, "alpha")
    async with running_gateway(redis_server.url) as gateway:
        async with client(gateway.url) as ws:
            await send_json(ws, {"action": "init", "apiKey": bot.api_key})
            await recv_json(ws)
            await ws.send("nope")
            await expect_error(ws, "bad_json")
        async with httpx.AsyncClient(base_url=gateway.http) as http:
            assert (await http.get("/healthz")).text == "ok"

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=5, what="/readyz 200")
            metrics = (await http.get("/metrics")).text
    for name in (
        "bandwagon_build_info{",
        "bandwagon_ready ",
        "bandwagon_ws_connections ",
        'bandwagon_ws_inits_total{mode="full"}',
        'bandwagon_ws_errors_total{code="bad_json"}',
        "bandwagon_ws_closes_total{",
        "bandwagon_ws_messages_sent_total ",
        "bandwagon_ws_publish_to_send_seconds_bucket{",
    ):
        assert name in metrics, name
    assert bot.api_key not in metrics and "127.0.0.1" not in metrics


async def test_a_client_that_answers_no_ping_is_dropped(
    redis: Redis, redis_server: RedisServer
) -> None:
    async with running_gateway(
        redis_server.url, gateway_ping_interval_s=0.2, gateway_ping_timeout_s=0.3
    ) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        async with asyncio.timeout(3):  # a raw client: it never answers a ping (5.1 rule 6)
            received = await reader.read(-1)
        writer.close()
        frames = received.split(b"\r\n\r\n", 1)[1]
        assert frames[0] == 0x89  # a ping first
        assert b"\x88" in frames  # then a close, and the TCP connection ends
