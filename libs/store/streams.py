"""Reading many streams at once, on one Redis or across a cluster's slots (SPEC 4.1 rule 13).

On one Redis a worker reads all its streams in one blocking XREAD. On a cluster one XREAD may
name only streams of one slot, and a worker's streams (a market stream per tag, an events stream
per bot) lie in many: it sends one XREAD per slot, pipelined per master and the masters side by
side, without BLOCK, and when nothing came it waits `CLUSTER_POLL_S` before it returns, so an
idle worker polls instead of holding a blocked connection per slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

from redis.asyncio import Redis

from libs.store.client import RedisNodes

StreamEntries = list[tuple[str, dict[str, str]]]
StreamReply = list[tuple[str, StreamEntries]]

CLUSTER_POLL_S = 0.01
"""An idle cluster worker's wait between rounds of reads: a market update or a fill waits at
most this long more than on one Redis (SPEC 2.1 rule 10 leaves 100 ms)."""


async def read_streams(
    nodes: RedisNodes, read_from: Mapping[str, str], *, count: int, block_ms: int | None
) -> StreamReply:
    """XREAD `read_from` (stream -> last id read), at most `count` entries per stream, waiting
    up to `block_ms` for the first entry (None: not at all)."""
    if not read_from:
        return []
    if not nodes.cluster:
        reply = await nodes.default.xread(dict(read_from), count=count, block=block_ms)  # type: ignore[arg-type]
        return cast(StreamReply, reply or [])
    found = await _read_each_slot(nodes, read_from, count)
    if not found and block_ms:
        await asyncio.sleep(min(block_ms / 1000, CLUSTER_POLL_S))
    return found


async def _read_each_slot(
    nodes: RedisNodes, read_from: Mapping[str, str], count: int
) -> StreamReply:
    async def on_node(client: Redis, streams: list[str]) -> StreamReply:
        async with client.pipeline(transaction=False) as pipe:
            for group in nodes.by_slot(streams):
                pipe.xread({stream: read_from[stream] for stream in group}, count=count)
            replies = cast(list[StreamReply | None], await pipe.execute())
        return [item for reply in replies for item in reply or []]

    groups = nodes.by_node(read_from)
    replies = await asyncio.gather(*(on_node(redis, streams) for redis, streams in groups.items()))
    return [item for reply in replies for item in reply]
