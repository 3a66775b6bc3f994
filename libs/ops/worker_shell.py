"""The imperative shell every stream worker shares: health port, signals, Redis outages.

A worker is two coroutines: `load` (read the committed state from Redis) and `step` (one batch,
committed atomically). Any Redis error drops what is in memory, since it may be ahead of the last
commit, and reloads after a capped, jittered backoff; the process never crash-loops on an outage
(SPEC 4.1 rules 2 and 4).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from redis.exceptions import RedisError

from libs.config import Settings
from libs.ops.health import Health, SidePort, ping_redis_forever

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
MEMBERSHIP = "partitions"  # readiness of strategy and accounting (SPEC 4.1 rule 2)


async def serve_until_stopped(
    stop: asyncio.Event,
    health: Health,
    load: Callable[[], Awaitable[None]],
    step: Callable[[], Awaitable[object]],
) -> None:
    backoff_s = BACKOFF_FIRST_S
    loaded = False
    while not stop.is_set():
        try:
            if not loaded:
                await load()
                loaded = True
                health.set_check(MEMBERSHIP, True)
            await step()
            backoff_s = BACKOFF_FIRST_S
        except (RedisError, OSError) as error:
            loaded = False
            health.set_check(MEMBERSHIP, False)
            log.warning("redis unavailable, retrying within %.1f s: %s", backoff_s, error)
            await asyncio.sleep(random.uniform(0, backoff_s))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)


class RedisConnections(Protocol):
    """What the shell needs of a worker's Redis: one Redis, or a cluster's masters
    (`libs.store.client.RedisNodes`)."""

    async def ping(self) -> Any: ...

    async def aclose(self) -> Any: ...


async def supervised(
    task: Callable[[], Awaitable[None]], context: Mapping[str, object] | None = None
) -> None:
    """A background task that must not die silently: a bug is logged (with `context`, the log
    line's keys) and it starts again."""
    while True:
        try:
            await task()
            return
        except Exception:
            log.exception("background task failed; starting it again", extra=context)
            await asyncio.sleep(1.0)


async def run_worker(
    *,
    service: str,
    settings: Settings,
    redis: RedisConnections,
    default_health_port: int,
    load: Callable[[], Awaitable[None]],
    step: Callable[[], Awaitable[object]],
    leave: Callable[[], Awaitable[None]] | None = None,
    health: Health | None = None,
    background: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Serve `/healthz`, `/readyz`, `/metrics`, run batches until SIGTERM/SIGINT, then let the
    current batch commit, `leave` (give up partitions, so survivors need not wait out their
    leases) and exit 0 (SPEC 4.1 rule 4). `health` lets the worker add checks of its own;
    `background` (the lease renewals) runs beside the batches until the stop."""
    health = health or Health(service)
    health.set_check(MEMBERSHIP, False)
    port = default_health_port if settings.health_port is None else settings.health_port
    side_port = SidePort(health, settings.health_host, port)
    log.info("health port %d", await side_port.start())

    stop = asyncio.Event()

    def begin_shutdown() -> None:
        health.draining = True  # /readyz 503 at once
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown)
    pinger = asyncio.create_task(ping_redis_forever(redis.ping, health))
    beside = None if background is None else asyncio.create_task(supervised(background))
    try:
        await serve_until_stopped(stop, health, load, step)
        if beside is not None:
            beside.cancel()
        if leave is not None:
            try:
                await leave()
            except (RedisError, OSError) as error:
                log.warning("could not release partitions, they move when leases expire: %s", error)
    finally:
        pinger.cancel()
        if beside is not None:
            beside.cancel()
        await side_port.stop()
        await redis.aclose()
    log.info("stopped")
    return 0
