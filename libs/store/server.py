"""The redis-server a worker talks to, and whether it is still the one its memory was read from
(SPEC 2.1 rule 19, 4.1 rule 12): its identity (`run_id`, new at every start), its fsync policy and
its replication id, read with INFO and CONFIG GET, and the per-commit check that redis-py has not
silently reconnected to another server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

ALWAYS = "always"
"""The one `appendfsync` under which Redis fsyncs a write before acknowledging it."""

SERVER_FIELDS = ("redis_run_id", "redis_appendfsync", "redis_replid")
"""Fields of a bot's meta hash naming the server its history was last vouched for on."""


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """A redis-server process as a bot's meta records it. `run_id` is new at every start of
    redis-server. `appendfsync` is its AOF fsync policy: `always`, `everysec` or `no`; `off`
    when AOF is off, `unknown` when CONFIG is refused (a managed Redis), which both read as
    "may lose acknowledged writes". `replid` is its replication id, which a failover changes."""

    run_id: str
    appendfsync: str
    replid: str

    def fields(self) -> dict[FieldT, EncodableT]:
        return dict(zip(SERVER_FIELDS, (self.run_id, self.appendfsync, self.replid), strict=True))


@dataclass(frozen=True, slots=True)
class ServerState:
    """The redis-server answering now: its record, and whether it is a master that was not
    promoted from a replica since it started (`master_replid2` unset)."""

    record: ServerRecord
    master: bool
    promoted: bool


class RedisReplaced(RedisConnectionError):
    """The redis-server answering is not the one a worker's memory was read from (a restart or
    a failover that no error revealed: redis-py reconnects a pooled connection silently).
    Nothing was written; like any lost connection, the worker reloads from Redis."""

    def __init__(self, expected_run_id: str, run_id: str) -> None:
        super().__init__(
            f"Redis is another server now: run_id {run_id}, memory was read from {expected_run_id}"
        )


def text_of(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_server(redis: Redis) -> ServerState:
    """INFO and CONFIG GET of the server answering `redis` (on a pipeline that WATCHes, of the
    server its transaction will run on). INFO is required: without a run_id nothing tells a
    restarted Redis from the one before. CONFIG may be refused; the policy is then `unknown`."""
    try:
        info = await redis.info()
    except ResponseError as refused:
        log.error(
            "INFO refused (%s): without the server's run_id a Redis that may have lost writes "
            "cannot be noticed (SPEC 2.1 rule 19); allow this Redis user INFO",
            refused,
        )
        raise
    try:
        config = {text_of(k): text_of(v) for k, v in (await redis.config_get("append*")).items()}
    except ResponseError as refused:
        log.warning(
            "CONFIG GET appendfsync refused (%s): counting every Redis restart as one that may "
            "have lost writes (SPEC 2.1 rule 19)",
            refused,
        )
        config = {"appendonly": "yes", "appendfsync": "unknown"}
    if config.get("appendonly") == "yes":
        appendfsync = config.get("appendfsync", "unknown")
    else:
        appendfsync = "off"  # a restart keeps only the last RDB snapshot, if any
    # redis-py reads an all-zero id as the integer 0
    promoted = text_of(info.get("master_replid2", "0")).strip("0") != ""
    return ServerState(
        record=ServerRecord(
            run_id=text_of(info["run_id"]),
            appendfsync=appendfsync,
            replid=text_of(info.get("master_replid", "")),
        ),
        master=text_of(info.get("role", "")) == "master",
        promoted=promoted,
    )


async def confirm_server(tx: Pipeline, run_id: str) -> None:
    """On a pipeline that WATCHes: the server answering is still the one whose run_id is
    `run_id`, else RedisReplaced. A server that goes away takes the connection, and so the
    WATCH, with it: what this confirms holds until EXEC."""
    now = text_of((await tx.info("server"))["run_id"])
    if now != run_id:
        raise RedisReplaced(run_id, now)


def on_server(run_id: str) -> Callable[[Pipeline], Awaitable[None]]:
    """`confirm_server` for `run_id`, as a `LeaseKeeper.guard` check."""
    return partial(confirm_server, run_id=run_id)
