"""Partition leases with fencing tokens, in Redis (SPEC 4.1 rule 9, 5.1 rule 12).

Each replica of a partitioned worker joins its service's membership, computes from the live
members which partitions it should own (`libs.store.partitions`), and holds a lease on each: a key
`<worker id>:<token>` with a 10 s TTL, renewed every 3 s. The token comes from a per-partition
counter incremented by every acquisition, so each ownership has its own number.

Leases alone cannot stop a paused owner (a long GC, SIGSTOP, a VM freeze) from waking up after
its lease moved and committing stale state. So every commit is fenced: it WATCHes the fence
counters of the partitions it writes and checks they still hold this owner's tokens before
MULTI; if another owner took a partition in between (which increments its counter), EXEC fails
and nothing is written (`LeaseLost`). The WATCH is on the counter, not on the lease, so the
renewals (`keep_alive`, a task of its own) never abort the owner's own commits, and a round of
work may take longer than a renewal period: a replica loses its leases only when its whole
process stops. A dead owner's partitions move when its membership and lease expire: within
10 s plus a 3 s renewal, under the 15 s of 4.1 rule 9.

A worker id that finds its own id on a lease with another token is a new incarnation of a
restarted replica (same pod name): it takes the lease over with a new token at once, which also
fences out the old incarnation should it still be running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from libs.config import Settings
from libs.errors import LeaseLost
from libs.ops.health import PARTITIONS_OWNED
from libs.store import keys
from libs.store.client import RedisNodes
from libs.store.partitions import PartitionId, assigned_to

log = logging.getLogger(__name__)

LEASE_TTL_MS = 10_000  # SPEC 5.1 rule 12: a lease of 10 s, renewed every 3 s
RENEW_SHARE = 0.3
COMMITS_KEPT = 10_000  # approximate length of each bot's commit record

# KEYS: members. ARGV: worker id, ttl ms. Redis time, not the replicas' clocks, ages members out.
_JOIN = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: lease, fence. ARGV: worker id, token held (0: none), ttl ms.
# Renews a lease still holding `id:token`; takes a free one, or one of an earlier incarnation of
# the same worker id, with a new token. Returns the token now held, 0 when another worker has it
# or when a lease this worker held has expired (someone may have owned it in between: the state
# must be reloaded under a new token).
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
local held = tonumber(ARGV[2])
if held > 0 then
  if current == ARGV[1] .. ':' .. ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return held
  end
  return 0
end
if current then
  local owner = string.match(current, '^(.*):%d+$')
  if owner ~= ARGV[1] then return 0 end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[3])
return token
"""

# KEYS: lease. ARGV: `id:token`. Deletes the lease only if it is still this owner's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _is_connection_loss(error: WatchError) -> bool:
    """redis-py turns a connection lost while WATCHing into a WatchError of its own wording."""
    return "occurred while watching" in str(error)


def _connection_lost(error: WatchError) -> RedisConnectionError:
    return RedisConnectionError(str(error))


class LeaseKeeper:
    """One replica's membership and leases. Its worker rebalances between batches (`beat` when
    `due`: acquire and release); `keep_alive` renews what it holds meanwhile, on time whatever
    the worker is doing."""

    def __init__(
        self,
        redis: Redis | RedisNodes,
        *,
        service: str,
        worker_id: str,
        partitions: Sequence[PartitionId],
        ttl_ms: int = LEASE_TTL_MS,
        renew_every_s: float = LEASE_TTL_MS / 1000 * RENEW_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nodes = RedisNodes.wrapping(redis)
        redis = self.nodes.default
        self.service = service
        self.worker_id = worker_id
        self.partitions = list(partitions)
        self.ttl_ms = ttl_ms
        self.renew_every_s = renew_every_s
        self.clock = clock
        self.tokens: dict[PartitionId, int] = {}
        self.members: list[str] = []
        self._last_beat_s: float | None = None
        self._lock = asyncio.Lock()  # a beat and a renewal never interleave
        self._join = redis.register_script(_JOIN)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    @classmethod
    def for_service(
        cls,
        redis: Redis | RedisNodes,
        service: str,
        settings: Settings,
        partitions: Sequence[PartitionId],
    ) -> LeaseKeeper:
        """The keeper of a service replica: `WORKER_ID`, `LEASE_TTL_S` from its settings."""
        return cls(
            redis,
            service=service,
            worker_id=settings.worker_id,
            partitions=partitions,
            ttl_ms=int(settings.lease_ttl_s * 1000),
            renew_every_s=settings.lease_ttl_s * RENEW_SHARE,
        )

    @property
    def redis(self) -> Redis:
        """The one Redis (on a cluster: the configured node)."""
        return self.nodes.default

    def due(self) -> bool:
        return self.seconds_until_due() <= 0

    def seconds_until_due(self) -> float:
        """How long a worker may block on a read before it must beat again."""
        if self._last_beat_s is None:
            return 0.0
        return self._last_beat_s + self.renew_every_s - self.clock()

    def lease_value(self, partition: PartitionId) -> str:
        return f"{self.worker_id}:{self.tokens[partition]}"

    async def beat(self) -> set[PartitionId]:
        """Renew membership and leases; release what another member should now own; acquire
        what this one should. Returns the partitions owned now."""
        async with self._lock:
            return await self._beat()

    async def keep_alive(self) -> None:
        """Renew membership and the leases held, every renewal period, until cancelled: the
        worker may be busy with a long round meanwhile (a thousand bots), its leases stay."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                async with self._lock:
                    await self._renew()
            except (RedisError, OSError) as error:
                log.debug("leases not renewed: %s", error)

    async def _renew(self) -> None:
        members_key = keys.members(self.service)
        await self._join(
            keys=[members_key],
            args=[self.worker_id, self.ttl_ms],
            client=self.nodes.for_key(members_key),
        )
        held = dict(self.tokens)  # a token of 0 would acquire: only what is held now is renewed
        for partition, token in (await self._acquire_each(sorted(held), held)).items():
            if token <= 0 and partition in self.tokens:
                log.warning("lease lost", extra=self._context(partition, self.tokens[partition]))
                del self.tokens[partition]
        PARTITIONS_OWNED.set(len(self.tokens))

    async def _acquire_each(
        self, partitions: Sequence[PartitionId], held: Mapping[PartitionId, int]
    ) -> dict[PartitionId, int]:
        """`_ACQUIRE` on each partition: renewing those `held` gives a token for, taking the
        others when free. One round trip per Redis."""
        by_node: dict[Redis, list[PartitionId]] = defaultdict(list)
        for partition in partitions:
            by_node[self.nodes.for_bot(partition.bot)].append(partition)
        tokens: dict[PartitionId, int] = {}
        for client, on_node in by_node.items():
            async with client.pipeline(transaction=False) as pipe:
                for partition in on_node:
                    await self._acquire(
                        keys=[
                            keys.lease(partition.bot, partition.name),
                            keys.fence(partition.bot, partition.name),
                        ],
                        args=[self.worker_id, held.get(partition, 0), self.ttl_ms],
                        client=pipe,
                    )
                replies = await pipe.execute()
            tokens.update((p, int(t)) for p, t in zip(on_node, replies, strict=True))
        return tokens

    async def _beat(self) -> set[PartitionId]:
        started_s = self.clock()
        members_key = keys.members(self.service)
        members = await self._join(
            keys=[members_key],
            args=[self.worker_id, self.ttl_ms],
            client=self.nodes.for_key(members_key),
        )
        self.members = [str(member) for member in members]
        wanted = assigned_to(self.worker_id, self.partitions, self.members)
        for partition in sorted(set(self.tokens) - wanted):
            await self._give_up(partition)
        candidates = sorted(wanted | set(self.tokens))
        tokens = await self._acquire_each(candidates, dict(self.tokens))
        for partition in candidates:
            token, held = tokens[partition], self.tokens.get(partition)
            if token > 0:
                if held is None:
                    log.info("partition acquired", extra=self._context(partition, token))
                self.tokens[partition] = token
            elif held is not None:
                log.warning("lease lost", extra=self._context(partition, held))
                del self.tokens[partition]
        self._last_beat_s = started_s
        PARTITIONS_OWNED.set(len(self.tokens))
        return set(self.tokens)

    async def guard(
        self,
        tx: Pipeline,
        partitions: Iterable[PartitionId],
        check: Callable[[Pipeline], Awaitable[None]] | None = None,
    ) -> None:
        """Start a fenced commit on `tx`: WATCH the fence counters of `partitions` and check
        they still hold this owner's tokens (nobody took a partition since), then MULTI. The
        caller adds its commands and calls `commit`.

        `check`, when given, runs on the watching connection before MULTI and may raise to
        abort: what it reads holds until EXEC, since a Redis that goes away takes the
        connection and the WATCH with it (accounting confirms the server is the one its
        memory was read from, SPEC 2.1 rule 19)."""
        partitions = sorted(set(partitions))
        lost = [p for p in partitions if p not in self.tokens]
        if lost:
            raise LeaseLost(lost)
        fence_keys = [keys.fence(p.bot, p.name) for p in partitions]
        try:
            await tx.watch(*fence_keys)
            values = await tx.mget(fence_keys)
        except WatchError as error:
            raise _connection_lost(error) from error
        lost = [
            p for p, value in zip(partitions, values, strict=True) if value != str(self.tokens[p])
        ]
        if lost:  # the caller's `async with` resets the pipeline, which UNWATCHes
            self.forget(lost)
            raise LeaseLost(lost)
        if check is not None:
            try:
                await check(tx)
            except WatchError as error:
                raise _connection_lost(error) from error
        tx.multi()  # type: ignore[no-untyped-call]
        for partition in partitions:
            tx.xadd(
                keys.commits(partition.bot),
                {
                    "partition": partition.name,
                    "owner": self.worker_id,
                    "token": self.tokens[partition],
                },
                maxlen=COMMITS_KEPT,
                approximate=True,
            )

    async def commit(self, tx: Pipeline, partitions: Iterable[PartitionId]) -> None:
        """EXEC a transaction `guard` opened; a partition taken since turns it into `LeaseLost`."""
        try:
            await tx.execute()
        except WatchError as error:
            if _is_connection_loss(error):  # not a moved lease: Redis went away (reload all)
                raise _connection_lost(error) from error
            partitions = list(partitions)
            self.forget(partitions)
            raise LeaseLost(partitions) from None

    def forget(self, partitions: Iterable[PartitionId]) -> None:
        """Stop believing we own these; the next `beat` may acquire them again, with new tokens."""
        for partition in partitions:
            self.tokens.pop(partition, None)
        self._last_beat_s = None
        PARTITIONS_OWNED.set(len(self.tokens))

    async def leave(self) -> None:
        """On shutdown: release every lease and leave membership, so survivors take the
        partitions over at their next beat instead of after the TTL."""
        async with self._lock:
            for partition in sorted(self.tokens):
                await self._give_up(partition)
        members_key = keys.members(self.service)
        await self.nodes.for_key(members_key).zrem(members_key, self.worker_id)
        PARTITIONS_OWNED.set(0)

    async def _give_up(self, partition: PartitionId) -> None:
        value = self.lease_value(partition)
        await self._release(
            keys=[keys.lease(partition.bot, partition.name)],
            args=[value],
            client=self.nodes.for_bot(partition.bot),
        )
        log.info("partition released", extra=self._context(partition, self.tokens.pop(partition)))

    def _context(self, partition: PartitionId, token: int) -> dict[str, object]:
        return {"partition": str(partition), "owner": self.worker_id, "token": token}
