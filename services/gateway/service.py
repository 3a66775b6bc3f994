"""The gateway's process-wide state and its background duties: the hub, the open connections, the
stalled-send sweep, the key-rotation check and drain.

Per-connection work stays in `connection.py`; what is here runs once per process however many
clients there are (one HMGET per check for all keys in use, one sweep a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.config import Settings
from libs.errors import ConfigError
from libs.ops.health import Health, ping_redis_forever
from libs.store.client import RedisNodes
from services.gateway.connection import Connection, ConnectionContext
from services.gateway.hub import Hub
from services.gateway.inits import InitCache
from services.gateway.limits import FailedKeys, TrustedProxies
from services.gateway.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    REASON_GOING_AWAY,
    REASON_SLOW_CONSUMER,
)
from services.gateway.registry import KeyRegistry, RegistryMissing

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 1.0
KEY_CHECK_EVERY_S = 5.0  # SPEC 2.1 rule 16: rotated keys' connections closed within 10 s
KEY_CHECK_BATCH = 1000
DRAIN_POLL_S = 0.05


class Gateway:
    def __init__(self, settings: Settings, redis: Redis | RedisNodes, health: Health) -> None:
        self.settings = settings
        self.redis = redis = RedisNodes.wrapping(redis)
        self.health = health
        self.hub = Hub(redis, health)
        self.registry = KeyRegistry(redis, health)
        self.failed_keys = FailedKeys(settings.gateway_auth_fails_per_min)
        try:
            self.trusted_proxies = TrustedProxies(settings.gateway_trusted_proxies)
        except ValueError as error:
            raise ConfigError(
                "GATEWAY_TRUSTED_PROXIES", ",".join(settings.gateway_trusted_proxies), str(error)
            ) from None
        self.allowed_origins = frozenset(
            origin.lower().rstrip("/") for origin in settings.gateway_allowed_origins
        )
        self.context = ConnectionContext(
            settings, redis, self.hub, self.failed_keys, InitCache(redis), self.registry
        )
        self.connections: set[Connection] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def draining(self) -> bool:
        return self.health.draining

    def origin_allowed(self, origin: str | None) -> bool:
        """SPEC 2.1 rule 17: only checked when a list is configured; no `Origin` is allowed."""
        if not self.allowed_origins or origin is None:
            return True
        return origin.lower().rstrip("/") in self.allowed_origins

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._no_connections.clear()

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._no_connections.set()

    def start(self) -> None:
        def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
            self._tasks.append(asyncio.create_task(coroutine))

        spawn(self.hub.run())
        spawn(self.registry.watch_forever())
        spawn(ping_redis_forever(self.redis.ping, self.health))
        spawn(self.redis.keep_fresh())  # a cluster's slot map (SPEC 4.1 rule 13)
        spawn(self._sweep_forever())
        spawn(self._check_keys_forever())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def drain(self, close_budget_s: float) -> None:
        """SPEC 4.1 rule 4 and 5.1 rule 7: `/readyz` 503 and upgrades refused from now on, every
        client closed with 1001 `going_away`; wait for the handshakes, then abort stragglers."""
        self.health.draining = True
        log.info("draining %d connections", len(self.connections))
        for connection in list(self.connections):
            connection.close_now(CLOSE_GOING_AWAY, REASON_GOING_AWAY)
        try:
            await asyncio.wait_for(self._no_connections.wait(), timeout=close_budget_s)
        except TimeoutError:
            log.warning("drain timeout: aborting %d connections", len(self.connections))
            for connection in list(self.connections):
                connection.abort()
            await asyncio.sleep(DRAIN_POLL_S)

    async def _sweep_forever(self) -> None:
        """A send blocked past `GATEWAY_SEND_STALL_S` closes `slow_consumer` (SPEC 5.1 rule 5);
        checked by one sweep rather than a timer per send, which would cost every send."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            now_s = loop.time()
            for connection in list(self.connections):
                if connection.stalled(now_s):
                    connection.close_now(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER)
            self.failed_keys.prune(now_s)

    async def _check_keys_forever(self) -> None:
        while True:
            await asyncio.sleep(KEY_CHECK_EVERY_S)
            try:
                await self.check_keys()
            except RedisError as error:
                log.debug("key check skipped, redis unavailable: %s", error)

    async def check_keys(self) -> None:
        """SPEC 2.1 rule 16: a removed or rotated key's connections get `unauthorized` and 4401.
        One HMGET per batch of distinct key hashes, not one call per connection.

        Only a registry that exists can show a key removed (rule 18): when `bw:apikeys` is gone
        altogether (Redis lost its data, FLUSHALL) nothing is revoked, and the connections are
        checked again once accounting has written it anew."""
        by_hash: dict[str, list[Connection]] = {}
        for connection in self.connections:
            if connection.key_hash is not None and connection.bot is not None:
                by_hash.setdefault(connection.key_hash, []).append(connection)
        hashes = list(by_hash)
        for start in range(0, len(hashes), KEY_CHECK_BATCH):
            batch = hashes[start : start + KEY_CHECK_BATCH]
            try:
                owners = await self.registry.owners(batch)
            except RegistryMissing:
                log.debug("key check skipped: the key registry does not exist")
                return
            for key_hash, owner in zip(batch, owners, strict=True):
                for connection in by_hash[key_hash]:
                    if owner != connection.bot:
                        connection.revoke()
