"""The Redis clients of every service: one Redis, or each master of a Redis Cluster.

No retries inside redis-py. It retries a command on a connection error by default (10 times, up
to 1 s apart). For a worker that hides a Redis restart: a command after a short outage just
succeeds, on a Redis that may have come back without its last second of writes (AOF `everysec`),
while the worker goes on from memory that is ahead of it. Each worker retries in its own shell
instead, after reloading what Redis really holds (`libs.ops.worker_shell`), and ingest after
reading back its stream.

On a cluster (SPEC 4.1 rule 13, `REDIS_CLUSTER=true`) every command is sent, as on one Redis,
through a plain client of the master that owns the key's slot: a bot's fenced transaction, its
server check (INFO on the very connection that WATCHes) and its scripts (loaded on the node that
runs them) are then exactly the single-Redis code. redis-py's `RedisCluster` is not used: its
pipelines refuse PUBLISH, MGET and INFO, and queue transaction commands through a thread. The slot
map is read with CLUSTER SLOTS at start and again after any error (`refresh`): a failover shows
up as a connection error or a MOVED reply, both RedisErrors every service already recovers from.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoPermissionError, RedisError
from redis.typing import ChannelT, EncodableT

from libs.config import Settings
from libs.store import acl, keys

log = logging.getLogger(__name__)

SLOTS = 16384


def worker_redis(url: str) -> Redis:
    return Redis.from_url(url, **_worker_options())


def connection_options(settings: Settings) -> dict[str, Any]:
    """How a service proves who it is and reaches Redis: its ACL user (SPEC 4.1 rule 14) and,
    for a `rediss://` URL, the CA that signed the server's certificate. The password comes from
    `REDIS_PASSWORD`, never from the URL, so no URL a log shows holds it."""
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls_ca is not None and urlsplit(settings.redis_url).scheme == "rediss":
        options["ssl_ca_certs"] = str(settings.redis_tls_ca)
    return options


def key_pattern(argument: str) -> str:
    """The ACL pattern (deploy/redis-users.acl) a command's first argument falls under, for the
    log line of a refused command: which rule is missing, without the bot or symbol. `-` when
    the argument is no key of Bandwagon's (CONFIG GET's parameter...)."""
    for pattern in (*acl.ACCESS, *acl.CHANNELS):
        if fnmatchcase(argument, pattern):
            return pattern
    return argument if argument.startswith(f"{keys.PREFIX}:") else "-"


_PIPELINE_COMMAND = re.compile(r"\((\S+)(?: (\S+))?")


def refusal(error: NoPermissionError, command: Sequence[object] = ()) -> str:
    """A NOPERM as the ERROR line names it: the command and the key pattern it touched (from
    the command, or from the pipeline's annotation of the error), and Redis's own words."""
    words = [str(word) for word in command[:2]]
    if not words:
        found = _PIPELINE_COMMAND.search(str(error))
        words = [word for word in found.groups() if word] if found else []
    name = words[0].upper() if words else "?"
    key = key_pattern(words[1]) if len(words) > 1 else "-"
    return f"command {name}, key pattern {key}: {str(error).splitlines()[0]}"


def log_refusal(error: NoPermissionError, command: Sequence[object] = ()) -> NoPermissionError:
    """Log a NOPERM at ERROR where Redis said it (SPEC 4.1 rule 14: a refused command is a
    deployment's missing rule, never a passing outage), and return it with the command and key
    pattern in its message. A command reaches Redis through the client or a pipeline, never
    both, so each refusal is logged once. The line holds no password: AUTH is never a command
    here."""
    described = NoPermissionError(refusal(error, command))
    log.error("redis refused a command (NOPERM): %s", described)
    return described


class _ServicePipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        except NoPermissionError as error:
            raise log_refusal(error) from None


class ServiceRedis(Redis):
    """A service's client: a command Redis refuses with NOPERM is logged at ERROR naming the
    command and key pattern (`log_refusal`), then raised as before."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except NoPermissionError as error:
            raise log_refusal(error, args) from None

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _ServicePipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


IN_FLIGHT = 32
"""Bots' transactions a worker runs side by side, each on a connection of its own from a pool
of `WORKER_CONNECTIONS`: a thousand bots must not ask Redis for a thousand connections."""

T = TypeVar("T")


async def side_by_side(
    work: Callable[[T], Awaitable[object]], items: Iterable[T], limit: int = IN_FLIGHT
) -> None:
    """`work` on each item, at most `limit` at once; once all have settled, the first error,
    if any, is raised (a failed item never leaves another one half done)."""
    items = list(items)
    if len(items) == 1:
        await work(items[0])
        return
    in_flight = asyncio.Semaphore(limit)

    async def bounded(item: T) -> object:
        async with in_flight:
            return await work(item)

    outcomes = await asyncio.gather(*(bounded(item) for item in items), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


WORKER_CONNECTIONS = 64
"""A worker's connections to each Redis, at most: a blocking pool, so that a burst of side by
side commits waits for a connection instead of failing with `Too many connections`."""


def worker_nodes(settings: Settings) -> RedisNodes:
    """A worker's Redis: `REDIS_URL`, a cluster when `REDIS_CLUSTER` says so, as the worker's
    own user."""
    return RedisNodes.for_settings(settings, pool_size=WORKER_CONNECTIONS, **_worker_options())


def _worker_options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
    }


def node_url(url: str, host: str, port: int) -> str:
    """`url` with its host and port replaced, credentials, TLS and options kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class _ShardedPipeline(_ServicePipeline):
    """A cluster master's pipeline: PUBLISH goes out as SPUBLISH."""

    def publish(self, channel: ChannelT, message: EncodableT, **kwargs: Any) -> Any:
        return self.execute_command("SPUBLISH", channel, message, **kwargs)


class ClusterNodeRedis(ServiceRedis):
    """A cluster master's client. A refresh travels on sharded pub/sub (SPEC 4.1 rule 13): a
    plain PUBLISH on a cluster reaches every node and every subscriber of the whole cluster, an
    SPUBLISH only the shard that owns the channel's slot, and only its SSUBSCRIBErs. The code
    that commits a refresh stays the same on one Redis and on a cluster."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _ShardedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )

    async def publish(self, channel: ChannelT, message: EncodableT, **kwargs: Any) -> Any:
        return await self.execute_command("SPUBLISH", channel, message, **kwargs)


@dataclass(frozen=True, slots=True)
class _Range:
    first: int
    last: int
    address: tuple[str, int]


class RedisNodes:
    """Where a key lives: `for_key` is the one client on a single Redis, and the client of the
    slot's master on a cluster. Clients are made once per address and kept, each with redis-py's
    `options`; `pool_size` bounds each one's connections (a blocking pool, waiting at most
    `pool_wait_s` for a free one)."""

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        pool_size: int | None = None,
        pool_wait_s: float = 5.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self._pool_size = pool_size
        self._pool_wait_s = pool_wait_s
        self._options = options
        self._clients: dict[tuple[str, int], Redis] = {}
        self._slot_owner: list[tuple[str, int]] = []
        parts = urlsplit(url)
        self._seeds = [(parts.hostname or "127.0.0.1", parts.port or 6379)]
        self.default = self._client_for(self._seeds[0])

    @classmethod
    def for_settings(cls, settings: Settings, **options: Any) -> RedisNodes:
        """A service's nodes: `REDIS_URL`, `REDIS_CLUSTER`, its user and TLS CA."""
        return cls(
            settings.redis_url,
            cluster=settings.redis_cluster,
            **connection_options(settings),
            **options,
        )

    @classmethod
    def wrapping(cls, client: Redis | RedisNodes) -> RedisNodes:
        """Nodes of one Redis whose client exists already (tests, tools)."""
        if isinstance(client, RedisNodes):
            return client
        kwargs = client.connection_pool.connection_kwargs
        nodes = cls(f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}")
        nodes.default = client
        return nodes

    async def keep_fresh(self, interval_s: float = 1.0) -> None:
        """Re-read the slot map every `interval_s` (cluster only, until cancelled): a service
        that answers requests (the gateway) follows a failover without waiting for an error."""
        while self.cluster:
            try:
                await self.refresh()
            except (RedisError, OSError) as error:
                log.debug("cluster slot map not refreshed: %s", error)
            await asyncio.sleep(interval_s)

    def _client_for(self, address: tuple[str, int]) -> Redis:
        client = self._clients.get(address)
        if client is None:
            url = node_url(self.url, *address)
            kind = ClusterNodeRedis if self.cluster else ServiceRedis
            if self._pool_size is not None:
                pool = BlockingConnectionPool.from_url(
                    url,
                    max_connections=self._pool_size,
                    timeout=self._pool_wait_s,
                    **self._options,
                )
                client = kind.from_pool(pool)
            else:
                client = kind.from_url(url, **self._options)
            self._clients[address] = client
        return client

    async def refresh(self) -> None:
        """Read the slot map (cluster only) from the first node that answers: the configured
        one, then every node met before, so a dead seed does not hide the cluster."""
        if not self.cluster:
            return
        candidates = list(dict.fromkeys([*self._seeds, *self._clients]))
        last_error: RedisError | OSError | None = None
        for address in candidates:
            try:
                reply = await self._client_for(address).execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "SLOTS"
                )
            except (RedisError, OSError) as error:
                last_error = error
                continue
            self._install(_ranges(reply, fallback_host=address[0]))
            return
        assert last_error is not None
        raise last_error

    def _install(self, ranges: Sequence[_Range]) -> None:
        owner = [("", 0)] * SLOTS
        for found in ranges:
            for slot in range(found.first, found.last + 1):
                owner[slot] = found.address
        self._slot_owner = owner
        for found in ranges:
            self._client_for(found.address)

    async def ensure_map(self) -> None:
        if self.cluster and not self._slot_owner:
            await self.refresh()

    def for_key(self, key: str) -> Redis:
        if not self.cluster:
            return self.default
        if not self._slot_owner:
            raise RedisError("the cluster's slot map has not been read yet")
        address = self._slot_owner[key_slot(key.encode())]
        if not address[0]:
            raise RedisError(f"no master serves the slot of {key} now (CLUSTERDOWN)")
        return self._client_for(address)

    def for_bot(self, bot: str) -> Redis:
        """The client of a bot's `{bot}` slot, where all its keys live."""
        return self.for_key(keys.meta(bot))

    def by_node(self, names: Iterable[str]) -> dict[Redis, list[str]]:
        """`names` (keys) grouped by the client that serves them, each group in given order."""
        groups: dict[Redis, list[str]] = defaultdict(list)
        for name in names:
            groups[self.for_key(name)].append(name)
        return groups

    def by_slot(self, names: Iterable[str]) -> list[list[str]]:
        """`names` (keys) in groups one multi-key command may take: all of them on one Redis,
        one slot each on a cluster (no command touches two slots)."""
        names = list(names)
        if not self.cluster:
            return [names] if names else []
        groups: dict[int, list[str]] = defaultdict(list)
        for name in names:
            groups[key_slot(name.encode())].append(name)
        return list(groups.values())

    def masters(self) -> list[Redis]:
        if not self.cluster:
            return [self.default]
        owners = dict.fromkeys(address for address in self._slot_owner if address[0])
        return [self._client_for(address) for address in owners]

    async def ping(self) -> bool:
        """Every master answers (the one Redis, or each master owning slots)."""
        for client in self.masters():
            await client.ping()
        return True

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def _ranges(reply: Any, fallback_host: str) -> list[_Range]:
    ranges: list[_Range] = []
    for first, last, master, *_replicas in reply:
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ranges.append(_Range(int(first), int(last), (host or fallback_host, int(master[1]))))
    return ranges
