"""The ASGI app: `/ws` handled directly, everything else (`/healthz`, `/readyz`, `/metrics`) by
FastAPI, all on `GATEWAY_PORT` (SPEC 4.1 rule 3).

`/ws` bypasses FastAPI's websocket wrapper: the hot path is one ASGI send per message, and the
handshake needs the raw ASGI denial response for HTTP 503 while draining.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI

from libs.ops.health import health_routes
from services.gateway.connection import ASGIReceive, ASGISend, Connection
from services.gateway.dashboard.routes import dashboard_routes
from services.gateway.limits import client_address
from services.gateway.protocol import CLOSE_GOING_AWAY, REASON_GOING_AWAY
from services.gateway.service import Gateway
from services.gateway.wsprotocol import transport_control

WS_PATH = "/ws"
ASGIApp = Callable[[dict[str, Any], ASGIReceive, ASGISend], Awaitable[None]]


def _header_values(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


async def _refuse(scope: dict[str, Any], send: ASGISend, status: int, body: bytes) -> None:
    """An HTTP answer to the upgrade, where the server supports it; else ASGI's 403 close."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def websocket_endpoint(
    gateway: Gateway, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    if gateway.draining:  # SPEC 4.1 rule 4: new upgrades get HTTP 503 while draining
        await _refuse(scope, send, 503, b"draining\n")
        return
    origins = _header_values(scope, b"origin")
    if not gateway.origin_allowed(origins[0] if origins else None):  # SPEC 2.1 rule 17
        await _refuse(scope, send, 403, b"origin not allowed\n")
        return
    await send({"type": "websocket.accept"})
    client = scope.get("client")
    peer = client[0] if client else None
    address = client_address(
        peer, _header_values(scope, b"x-forwarded-for"), gateway.trusted_proxies
    )
    scope["headers"] = []  # read above, never again: a KiB per connection, freed
    connection = Connection(gateway.context, receive, send, address, transport_control(scope))
    gateway.add(connection)
    if gateway.draining:  # the drain started while this upgrade was being accepted
        connection.close_now(CLOSE_GOING_AWAY, REASON_GOING_AWAY)
    try:
        await connection.run()
    finally:
        gateway.discard(connection)


def build_app(gateway: Gateway) -> ASGIApp:
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    health_routes(api, gateway.health)
    dashboard_routes(api)  # GET /: the web dashboard's static files

    async def app(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await websocket_endpoint(gateway, scope, receive, send)
        else:
            await api(scope, receive, send)  # type: ignore[arg-type]

    return app
