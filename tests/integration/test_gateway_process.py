"""`bandwagon gateway` as a process: SIGTERM drain and config errors (SPEC 4.1 rules 4 and 7,
5.1 rule 7)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
import time

import httpx
import pytest
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from tests.integration.gateway_harness import (
    client,
    expect_close,
    recv_json,
    send_json,
)
from tests.integration.gateway_seed import seed_bot
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(30)
DRAIN_S = 5.0


def _silent_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads nor answers, so the
    gateway has a close handshake that cannot finish and must keep draining until its deadline."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


async def test_sigterm_closes_clients_1001_refuses_upgrades_and_exits_0(
    redis: Redis, redis_server: RedisServer
) -> None:
    bot = await seed_bot(redis, "alpha")
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DRAIN_S": str(DRAIN_S),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "gateway",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout_s=10, poll_s=0.05, what="the gateway's /readyz 200")
            async with client(url) as first, client(url) as second:
                for ws in (first, second):
                    await send_json(ws, {"action": "init", "apiKey": bot.api_key})
                    await recv_json(ws)
                silent = _silent_client(port)
                signalled_s = time.monotonic()
                process.send_signal(signal.SIGTERM)
                for ws in (first, second):
                    assert await expect_close(ws) == (1001, "going_away")
                assert (await http.get("/readyz")).status_code == 503
                assert (await http.get("/healthz")).status_code == 200
                with pytest.raises(InvalidStatus) as refused:
                    async with client(url):
                        pass
                assert refused.value.response.status_code == 503
            assert await asyncio.wait_for(process.wait(), DRAIN_S + 2) == 0
            assert time.monotonic() - signalled_s <= DRAIN_S + 0.5
            silent.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    logs = (await process.stderr.read()).decode()
    assert bot.api_key not in logs


async def test_a_bad_setting_exits_78_with_one_line() -> None:
    env = {**os.environ, "GATEWAY_PORT": "eighty", "REDIS_URL": "redis://127.0.0.1:1/0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "gateway",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 78
    assert stderr.decode().startswith("config error: GATEWAY_PORT: eighty:")
