"""The gateway as one object that starts and drains: `main` runs it under signals, tests run it
in their own event loop on a free port.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from libs.config import Settings
from libs.ops.health import Health, ServerWithoutSignals
from libs.store.client import RedisNodes
from services.gateway.app import build_app
from services.gateway.service import Gateway
from services.gateway.wsprotocol import GatewayWebSocketProtocol

log = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_MAX_CONNECTIONS = 64
REDIS_POOL_WAIT_S = 5.0
REDIS_SOCKET_TIMEOUT_S = 5.0
UVICORN_SHUTDOWN_S = 1  # left of GATEWAY_DRAIN_S for uvicorn after the clients are closed


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A blocking pool: a burst of thousands of inits waits for one of a bounded set of
        # connections instead of failing past redis-py's default 100 (MaxConnectionsError).
        # On a cluster, one such pool per master (libs.store.client, SPEC 4.1 rule 13).
        self.redis = RedisNodes.for_settings(
            settings,
            pool_size=REDIS_MAX_CONNECTIONS,
            pool_wait_s=REDIS_POOL_WAIT_S,
            decode_responses=True,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        self.health = Health("gateway")
        self.gateway = Gateway(settings, self.redis, self.health)
        config = uvicorn.Config(
            build_app(self.gateway),
            host=settings.gateway_host,
            port=settings.gateway_port,
            ws=GatewayWebSocketProtocol,  # uvicorn's websockets-sansio plus transport controls
            ws_max_size=settings.gateway_max_message_bytes,  # SPEC 5.1 rule 1: 1009 above it
            ws_ping_interval=settings.gateway_ping_interval_s,  # SPEC 5.1 rule 6
            ws_ping_timeout=settings.gateway_ping_timeout_s,
            ws_per_message_deflate=False,  # SPEC 2.1 rule 17
            # X-Forwarded-For is trusted only from GATEWAY_TRUSTED_PROXIES (services.gateway.
            # limits); uvicorn's own middleware would trust it from 127.0.0.1 besides
            proxy_headers=False,
            lifespan="off",
            log_config=None,  # keep the JSON logging of libs.ops.logs
            log_level="warning",  # uvicorn logs each accepted websocket at INFO
            access_log=False,
            timeout_graceful_shutdown=UVICORN_SHUTDOWN_S,
            backlog=4096,
        )
        self.server = ServerWithoutSignals(config)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Serve in the background; returns the bound port (useful when 0 was asked)."""
        self.gateway.start()
        self._serving = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError("the gateway's HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        log.info("gateway listening on %s:%d", self.settings.gateway_host, port)
        return port

    @property
    def serving(self) -> asyncio.Task[None] | None:
        return self._serving

    async def drain_and_stop(self) -> None:
        """SPEC 4.1 rule 4 and 5.1 rule 7: everything within `GATEWAY_DRAIN_S`."""
        drain_s = self.settings.gateway_drain_s
        await self.gateway.drain(max(0.1, drain_s - 3 * UVICORN_SHUTDOWN_S))
        self.server.should_exit = True
        if self._serving is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._serving), timeout=2 * UVICORN_SHUTDOWN_S
                )
            except TimeoutError:
                self.server.force_exit = True
                self._serving.cancel()
            except asyncio.CancelledError:
                pass
        await self.gateway.stop()
        await self.redis.aclose()
