"""The Redis client of every worker: no retries inside redis-py.

redis-py retries a command on a connection error by default (10 times, up to 1 s apart). For a
worker that hides a Redis restart: a command after a short outage just succeeds, on a Redis that
may have come back without its last second of writes (AOF `everysec`), while the worker goes on
from memory that is ahead of it. Each worker retries in its own shell instead, after reloading
what Redis really holds (`libs.ops.worker_shell`), and ingest after reading back its stream.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def worker_redis(url: str) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=5,
        socket_timeout=10,
    )
