"""Run a real gateway in the test's event loop and talk to it with the `websockets` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from libs.config import Settings
from libs.wire.status import ErrorMessage
from services.gateway.hub import SUBSCRIPTION_CHECK
from services.gateway.server import GatewayServer
from tests.support.polling import eventually

CLIENT_MAX_BYTES = 64 * 2**20  # SPEC 5.1 rule 1: clients accept up to 64 MiB
RECV_TIMEOUT_S = 5.0


@dataclass
class RunningGateway:
    server: GatewayServer
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def running_gateway(redis_url: str, **overrides: Any) -> AsyncIterator[RunningGateway]:
    settings = Settings(redis_url=redis_url, gateway_port=0, gateway_drain_s=3.0, **overrides)
    server = GatewayServer(settings)
    port = await server.start()
    try:
        await eventually(
            lambda: server.health.checks.get(SUBSCRIPTION_CHECK),
            timeout_s=5,
            what="the gateway's refresh subscription live",
        )
        yield RunningGateway(server, port)
    finally:
        await server.drain_and_stop()


def client(url: str, **options: Any) -> connect:
    return connect(url, max_size=CLIENT_MAX_BYTES, open_timeout=5, **options)


async def send_json(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def recv_text(ws: ClientConnection, timeout_s: float = RECV_TIMEOUT_S) -> str:
    message = await asyncio.wait_for(ws.recv(), timeout_s)
    assert isinstance(message, str), "the server sends text frames only (SPEC 2.1 rule 1)"
    return message


async def recv_json(ws: ClientConnection, timeout_s: float = RECV_TIMEOUT_S) -> dict[str, Any]:
    document = orjson.loads(await recv_text(ws, timeout_s))
    assert isinstance(document, dict)
    return document


async def expect_error(ws: ClientConnection, code: str) -> None:
    frame = await recv_text(ws)
    error = ErrorMessage.model_validate_json(frame)
    assert error.code == code, frame
    assert set(orjson.loads(frame)) == {"action", "code", "message"}


async def expect_close(ws: ClientConnection, timeout_s: float = RECV_TIMEOUT_S) -> tuple[int, str]:
    """Read until the server's close; returns its code and reason (1006: no close frame)."""
    async with asyncio.timeout(timeout_s):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    rcvd = ws.close_code
    return (1006 if rcvd is None else rcvd), ws.close_reason or ""


async def assert_quiet(ws: ClientConnection, quiet_s: float = 0.3) -> None:
    """Nothing arrives for a while (nothing unexpected was sent)."""
    try:
        message = await asyncio.wait_for(ws.recv(), quiet_s)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {str(message)[:200]}")
