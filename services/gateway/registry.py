"""The registry of configured keys (`bw:apikeys`, hash of key -> bot) as the gateway reads it.

`unauthorized` means "not a configured key", nothing else (SPEC 2.1 rule 18): a key is absent
only from a registry that exists. Redis keeps no empty hash, so "exists" is `EXISTS bw:apikeys`:
a registry accounting has not written yet (a fresh deployment) and one that was lost (FLUSHALL, a
Redis that came back empty) look the same, and in neither can a key be called absent. Each read
takes the registry's existence and the owners in one MULTI, so the two cannot disagree, and
reports the existence to `/readyz` (4.1 rule 2: ready once the registry exists).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.errors import BandwagonError
from libs.ops.health import Health
from libs.store import keys
from libs.store.client import RedisNodes

log = logging.getLogger(__name__)

REGISTRY_CHECK = "key_registry"
POLL_S = 1.0  # how soon `/readyz` follows the registry appearing or vanishing

Owners = list[str | None]


class RegistryMissing(BandwagonError):
    """`bw:apikeys` does not exist: no key can be called absent. An `init` gets `unavailable`
    and 1013, and no connection is revoked (SPEC 2.1 rules 16 and 18)."""

    def __init__(self) -> None:
        super().__init__(f"{keys.api_keys()} does not exist (not written yet, or lost)")


class KeyRegistry:
    def __init__(self, redis: Redis | RedisNodes, health: Health) -> None:
        self._nodes = RedisNodes.wrapping(redis)
        self._health = health
        self._found: bool | None = None
        health.set_check(REGISTRY_CHECK, False)

    async def owners(self, key_hashes: Sequence[str]) -> Owners:
        """The bot of each key hash, None where the registry has none. Raises RegistryMissing,
        or RedisError when the registry cannot be read."""
        registry = keys.api_keys()
        redis = self._nodes.for_key(registry)
        if not key_hashes:
            found = bool(await redis.exists(registry))
            owners: Owners = []
        else:
            async with redis.pipeline(transaction=True) as tx:
                tx.exists(registry)
                tx.hmget(registry, list(key_hashes))
                exists, owners = await tx.execute()
            found = bool(exists)
        self._note(found)
        if not found:
            raise RegistryMissing()
        return owners

    def _note(self, found: bool) -> None:
        self._health.set_check(REGISTRY_CHECK, found)
        if found == self._found:
            return
        if found:
            log.info("key registry found")
        elif self._found is None:
            log.info("key registry not written yet: inits get unavailable until accounting runs")
        else:
            log.warning("key registry gone: inits get unavailable until accounting writes it")
        self._found = found

    async def watch_forever(self) -> None:
        """Keep the readiness check current while no request reads the registry. A Redis error
        leaves it as it was: the PING check already makes the gateway unready then."""
        while True:
            try:
                await self.owners(())
            except RegistryMissing:
                pass
            except RedisError as error:
                log.debug("key registry unreadable: %s", error)
            await asyncio.sleep(POLL_S)
