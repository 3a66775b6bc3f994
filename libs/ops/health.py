"""Liveness, readiness and metrics, the same on every service (SPEC 4.1 rules 1, 2, 3 and 5).

`Health` is the readiness state a service updates as it works; `health_routes` adds `/healthz`,
`/readyz` and `/metrics` to a FastAPI app (the gateway's own, or a worker's small side app served
by `serve_side_port`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

VERSION = importlib.metadata.version("bandwagon")  # pyproject.toml's, as installed
REDIS_PING_FRESH_S = 5.0

BUILD_INFO = Gauge("bandwagon_build_info", "Build of this process", ["service", "version"])
READY = Gauge("bandwagon_ready", "1 when /readyz answers 200")
PARTITIONS_OWNED = Gauge("bandwagon_partitions_owned", "Partitions this worker replica owns")

log = logging.getLogger(__name__)


class Health:
    """Readiness = Redis answered a PING within 5 s, not draining, and the service's own check.

    `clock` is injectable so tests can move time; services use the monotonic clock.
    """

    def __init__(self, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._clock = clock
        self._last_redis_ok: float | None = None
        self.draining = False
        self.checks: dict[str, bool] = {}
        BUILD_INFO.labels(service=service, version=VERSION).set(1)

    def redis_ok(self) -> None:
        self._last_redis_ok = self._clock()

    def set_check(self, name: str, ok: bool) -> None:
        """A service-specific condition (gateway: subscription live; ingest: source open...)."""
        self.checks[name] = ok

    @property
    def redis_fresh(self) -> bool:
        return (
            self._last_redis_ok is not None
            and self._clock() - self._last_redis_ok <= REDIS_PING_FRESH_S
        )

    @property
    def ready(self) -> bool:
        ready = self.redis_fresh and not self.draining and all(self.checks.values())
        READY.set(1 if ready else 0)
        return ready

    def report(self) -> dict[str, object]:
        return {
            "service": self.service,
            "ready": self.ready,
            "redis": self.redis_fresh,
            "draining": self.draining,
            "checks": dict(self.checks),
        }


def health_routes(app: FastAPI, health: Health) -> None:
    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        report = health.report()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        health.ready  # noqa: B018  (refreshes the bandwagon_ready gauge)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def ping_redis_forever(
    ping: Callable[[], object], health: Health, interval_s: float = 1.0
) -> None:
    """Keep `redis_ok` fresh while Redis answers; readiness lapses 5 s after it stops."""
    while True:
        try:
            await asyncio.wait_for(ping(), timeout=interval_s * 2)  # type: ignore[arg-type]
            health.redis_ok()
        except Exception as error:  # any failure only means "not ready"
            log.debug("redis ping failed: %s", error)
        await asyncio.sleep(interval_s)


class ServerWithoutSignals(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to the service, which drains and commits
    before it stops the server (SPEC 4.1 rule 4)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SidePort:
    """A worker's `/healthz`, `/readyz`, `/metrics` on `HEALTH_PORT` (0 picks a free port)."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        health_routes(app, health)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = ServerWithoutSignals(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Serve in the background; returns the bound port (logged, useful when 0 was asked)."""
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
