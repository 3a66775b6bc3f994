"""A fresh deployment whose gateway starts before accounting: a client with the right key that
connects the moment the gateway answers is told `unavailable` (1013) and retries, never
`unauthorized` (4401, after which it would give up for good), and the gateway is not ready until
the key registry exists (SPEC 2.1 rules 4 and 18, 4.1 rule 2)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from libs.store import keys
from libs.wire.status import ErrorMessage, InitMessage
from services.gateway.hub import SUBSCRIPTION_CHECK
from tests.e2e.services import Deployment
from tests.support.polling import eventually

API_KEY = "fresh-start-key-0123456789"
WRONG_KEY = "not-the-fresh-start-key-0123"
RECV_S = 10.0
RETRY_S = 0.2

BOTS_YAML = """
bots:
  - id: fresh
    exchange: binance
    start_capital: 1.0
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 3,
         isolated: true, weight: 1}
"""

pytestmark = pytest.mark.timeout(90)


async def ask_init(url: str, api_key: str) -> tuple[dict[str, Any], tuple[int, str] | None]:
    """One connection, one `init`: the reply, and the close that follows it (None if none)."""
    async with connect(url, max_size=2**26, open_timeout=10) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": api_key}).decode())
        reply: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), RECV_S))
        if reply["action"] != "error":
            return reply, None
        try:
            await asyncio.wait_for(ws.recv(), RECV_S)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "a close frame follows the error"
            return reply, (closed.rcvd.code, closed.rcvd.reason)
        raise AssertionError("the connection stayed open after an error to init")


async def test_a_good_key_before_accounting_gets_unavailable_then_its_init(
    deployment: Deployment, redis: Redis
) -> None:
    deployment.start("gateway")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{deployment.gateway_port}") as http:

        async def alive() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(alive, timeout_s=30, what="the gateway's /healthz 200")

        for api_key in (API_KEY, WRONG_KEY):  # no registry yet: neither key is known absent
            reply, closed = await ask_init(deployment.ws_url, api_key)
            assert ErrorMessage.model_validate(reply).code == "unavailable", reply
            assert closed == (1013, "unavailable")

        async def subscribed() -> bool:
            report = (await http.get("/readyz")).json()
            return bool(report["redis"] and report["checks"].get(SUBSCRIPTION_CHECK))

        await eventually(  # Redis answered and the subscription is live...
            subscribed, timeout_s=30, poll_s=0.05, what="the gateway subscribed to refreshes"
        )
        assert (await http.get("/readyz")).status_code == 503  # ...but no registry: unready
        assert not await redis.exists(keys.api_keys())

        deployment.start("accounting")
        init: dict[str, Any] | None = None
        ready = False
        async with asyncio.timeout(60):
            while init is None or not ready:
                ready = (await http.get("/readyz")).status_code == 200
                if ready:  # read after the answer: readiness may lag the registry, never lead
                    assert await redis.exists(keys.api_keys())
                if init is None:  # a client retrying as SPEC 2.1 rule 4 says, only faster
                    reply, closed = await ask_init(deployment.ws_url, API_KEY)
                    if reply["action"] == "init":
                        init = reply
                    else:
                        assert ErrorMessage.model_validate(reply).code == "unavailable", reply
                        assert closed == (1013, "unavailable")
                await asyncio.sleep(RETRY_S)
        assert InitMessage.model_validate(init).seq == 1

    reply, closed = await ask_init(deployment.ws_url, WRONG_KEY)  # absent from it now
    assert ErrorMessage.model_validate(reply).code == "unauthorized", reply
    assert closed == (4401, "unauthorized")
