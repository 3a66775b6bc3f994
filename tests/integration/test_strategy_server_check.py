"""The strategy worker commits only to the redis-server its partitions were read from (SPEC 4.1
rule 12: checkpoints and outputs are committed together, so a lost second is recomputed, not
corrupted; 2.1 rule 19 for why a restarted Redis may have lost it).

redis-py reconnects a pooled connection without a word. A Redis restarted under `appendfsync
everysec` may come back without its last second of writes, among them the worker's last commit;
a worker that went on from memory would commit events from past a checkpoint Redis no longer
holds, and the events of the lost batch, fills included, would never reach accounting. The test
runs on a redis-server of its own (it is restarted), with the worker in-process on the workers'
own Redis client (`worker_redis`: no retries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from libs.core.market import MarketUpdate
from libs.store import keys
from libs.store.client import worker_redis
from libs.store.leases import LeaseKeeper
from libs.store.partitions import strategy_partitions
from libs.store.server import RedisReplaced, read_server
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.market import encode_update
from services.strategy.worker import StrategyWorker
from tests.integration.test_pipeline import bot_config, klines_updates
from tools.run.redis_server import RedisServer, free_port

BOT = bot_config()  # "alt", one symbol: ALT-BTC
PRODUCT_ID = "ALT-BTC"
BATCH = 100
# The pure core fills at update 350 (order ids 10 and 11) and 448 (12 and 13): the lost batch,
# 300 to 399, and the one after it both trade.
UPDATES = klines_updates(500)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """The test's own redis-server, stopped at the end whatever happened."""
    started = RedisServer(tmp_path / "redis", port=free_port(), appendfsync="everysec").start()
    yield started
    started.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    opened: list[Redis] = []
    yield opened
    for client in opened:
        await client.aclose()


def strategy(url: str, clients: list[Redis]) -> StrategyWorker:
    """A strategy process's worker, as `bandwagon strategy` builds it."""
    redis = worker_redis(url)
    clients.append(redis)
    keeper = LeaseKeeper(
        redis, service="strategy", worker_id="strategy", partitions=strategy_partitions([BOT])
    )
    return StrategyWorker(redis, [BOT], keeper, batch_size=BATCH)


async def ingest(redis: Redis, updates: list[MarketUpdate], first_line: int) -> list[str]:
    """XADD `updates` to the bot's market stream, as ingest does; their entry ids."""
    stream = keys.market_stream(BOT.exchange, PRODUCT_ID, BOT.kline_size)
    async with redis.pipeline(transaction=False) as pipe:
        for line, update in enumerate(updates, start=first_line):
            pipe.xadd(stream, encode_update(update, f"test:{line}"))  # type: ignore[arg-type]
        return [str(entry_id) for entry_id in await pipe.execute()]


async def run_until_idle(worker: StrategyWorker) -> None:
    while await worker.run_once(block_ms=10):
        pass


async def written(redis: Redis) -> tuple[dict[str, str], int, int]:
    """What the worker commits: the partition's state and checkpoint, the events, the commits."""
    state = await redis.hgetall(keys.strategy_state(BOT.id, PRODUCT_ID))
    return state, await redis.xlen(keys.events(BOT.id)), await redis.xlen(keys.commits(BOT.id))


async def test_a_commit_after_redis_was_replaced_writes_nothing_and_the_reload_recomputes(
    server: RedisServer, clients: list[Redis]
) -> None:
    redis = Redis.from_url(server.url, decode_responses=True)
    clients.append(redis)
    entry_ids = await ingest(redis, UPDATES[:300], 0)
    worker = strategy(server.url, clients)
    await worker.load()
    await run_until_idle(worker)
    [partition] = worker.partitions
    assert partition.checkpoint == entry_ids[-1]
    assert partition.redis_run_id == (await read_server(redis)).record.run_id
    kept = await written(redis)  # what the restarted Redis will still hold
    events_kept = await redis.xrange(keys.events(BOT.id))
    commits_kept = await redis.xrange(keys.commits(BOT.id))

    entry_ids += await ingest(redis, UPDATES[300:400], 300)
    await run_until_idle(worker)  # the batch a restart will lose
    assert worker.partitions[0].checkpoint == entry_ids[-1]
    assert (await written(redis))[1] > kept[1], "that batch made events"

    server.stop()
    server.start()
    redis = Redis.from_url(server.url, decode_responses=True)  # the old one's connection died
    clients.append(redis)
    # a restart under everysec may lose the last second: here, exactly the last commit
    async with redis.pipeline(transaction=True) as tx:
        tx.delete(keys.events(BOT.id), keys.commits(BOT.id))
        tx.hset(keys.strategy_state(BOT.id, PRODUCT_ID), mapping=kept[0])
        for entry_id, fields in events_kept:
            tx.xadd(keys.events(BOT.id), fields, id=entry_id)
        for entry_id, fields in commits_kept:
            tx.xadd(keys.commits(BOT.id), fields, id=entry_id)
        await tx.execute()
    assert await written(redis) == kept
    entry_ids += await ingest(redis, UPDATES[400:], 400)  # ingest goes on
    # as after another user of the client (the health pinger) met the dead connection first:
    # the next commands reconnect silently
    await worker.redis.connection_pool.disconnect()

    with pytest.raises(RedisReplaced):
        await worker.run_once(block_ms=10)  # reads 400..499 from a checkpoint Redis lost
    assert await written(redis) == kept, "nothing written"
    assert worker.partitions == [], "memory is ahead of this Redis: dropped"

    await worker.load()  # what the worker shell does after any Redis error
    [partition] = worker.partitions
    assert partition.checkpoint == kept[0]["checkpoint"] == entry_ids[299]
    assert partition.redis_run_id == (await read_server(redis)).record.run_id
    await run_until_idle(worker)

    state, _, _ = await written(redis)
    assert state["checkpoint"] == entry_ids[-1]
    # every fill reached the events stream once, in order, as the pure core makes them
    core = new_symbol_strategy(BOT, 0)
    expected = [trade_wire(fill, 8) for update in UPDATES for fill in core.on_update(update).fills]
    events = await redis.xrange(keys.events(BOT.id))
    trades = [trade for _, fields in events for trade in orjson.loads(fields["data"])["trades"]]
    assert [trade["order_id"] for trade in expected] == list(range(1, 14))
    assert trades == expected
