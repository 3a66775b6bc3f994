"""Partition leases and fenced commits on a real redis-server (SPEC 4.1 rule 9, 5.1 rule 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from libs.errors import LeaseLost
from libs.store import keys
from libs.store.client import worker_redis
from libs.store.leases import LeaseKeeper
from libs.store.partitions import PartitionId
from tools.run.redis_server import RedisServer, free_port

PARTITIONS = [PartitionId(f"bot-{i}", "accounting") for i in range(6)]


def keeper(redis: Redis, worker_id: str, ttl_ms: int = 10_000) -> LeaseKeeper:
    return LeaseKeeper(
        redis, service="accounting", worker_id=worker_id, partitions=PARTITIONS, ttl_ms=ttl_ms
    )


async def fenced_write(keeper: LeaseKeeper, partition: PartitionId, value: str) -> None:
    async with keeper.redis.pipeline(transaction=True) as tx:
        await keeper.guard(tx, [partition])
        tx.set(f"bw:{{{partition.bot}}}:probe", value)
        await keeper.commit(tx, [partition])


async def test_two_replicas_split_the_partitions_and_each_lease_names_its_owner(
    redis: Redis,
) -> None:
    first, second = keeper(redis, "one"), keeper(redis, "two")
    await first.beat()  # alone: takes everything
    assert set(first.tokens) == set(PARTITIONS)
    await second.beat()  # joins: its share is still held by `one`
    assert second.tokens == {}
    await first.beat()  # `one` sees `two` and gives its share up
    await second.beat()
    assert set(first.tokens).isdisjoint(second.tokens)
    assert set(first.tokens) | set(second.tokens) == set(PARTITIONS)
    assert first.tokens and second.tokens
    for holder in (first, second):
        for partition, token in holder.tokens.items():
            lease = await redis.get(keys.lease(partition.bot, partition.name))
            assert lease == f"{holder.worker_id}:{token}"
            assert 0 < await redis.pttl(keys.lease(partition.bot, partition.name)) <= 10_000


async def test_a_dead_owners_partitions_move_once_its_lease_and_membership_expire(
    redis: Redis,
) -> None:
    dead, survivor = keeper(redis, "dead", ttl_ms=1000), keeper(redis, "survivor", ttl_ms=1000)
    await dead.beat()
    await survivor.beat()
    await dead.beat()
    await survivor.beat()
    moved = set(dead.tokens)
    assert moved
    await survivor.beat()
    assert set(survivor.tokens).isdisjoint(moved), "no taking over a live lease"
    for _ in range(5):  # `dead` stops beating: its membership and leases run out
        await asyncio.sleep(0.3)
        await survivor.beat()
    assert set(survivor.tokens) == set(PARTITIONS)
    for partition in moved:
        assert survivor.tokens[partition] == dead.tokens[partition] + 1, "a new fencing token"


async def test_a_paused_owner_that_wakes_after_its_lease_moved_commits_nothing(
    redis: Redis,
) -> None:
    paused, other = keeper(redis, "paused", ttl_ms=500), keeper(redis, "other", ttl_ms=500)
    await paused.beat()
    partition = PARTITIONS[0]
    await fenced_write(paused, partition, "before the pause")
    await asyncio.sleep(0.6)  # paused past its lease
    await other.beat()
    assert partition in other.tokens
    with pytest.raises(LeaseLost):
        await fenced_write(paused, partition, "stale")
    assert partition not in paused.tokens, "it forgets the partition"
    await fenced_write(other, partition, "the new owner's")
    assert await redis.get(f"bw:{{{partition.bot}}}:probe") == "the new owner's"
    tokens = [fields["owner"] async for fields in commits(redis, partition.bot)]
    assert tokens == ["paused", "other"], "one writer per token, in order"


async def commits(redis: Redis, bot: str):  # type: ignore[no-untyped-def]
    for _, fields in await redis.xrange(keys.commits(bot)):
        yield fields


async def test_a_lease_that_moves_between_guard_and_exec_aborts_the_transaction(
    redis: Redis,
) -> None:
    owner = keeper(redis, "owner")
    await owner.beat()
    partition = PARTITIONS[0]
    async with redis.pipeline(transaction=True) as tx:
        await owner.guard(tx, [partition])
        tx.set(f"bw:{{{partition.bot}}}:probe", "late")
        # another owner takes it, as `_ACQUIRE` does: a new fencing token, then the lease
        token = await redis.incr(keys.fence(partition.bot, partition.name))
        await redis.set(keys.lease(partition.bot, partition.name), f"thief:{token}")
        with pytest.raises(LeaseLost):
            await owner.commit(tx, [partition])
    assert await redis.get(f"bw:{{{partition.bot}}}:probe") is None


async def test_a_renewal_during_a_commit_does_not_abort_it(redis: Redis) -> None:
    """The commit WATCHes the fence counter, which only a new owner changes: the renewals of
    `keep_alive` run beside the worker's commits, however long its rounds take."""
    owner = keeper(redis, "owner")
    await owner.beat()
    partition = PARTITIONS[0]
    lease = keys.lease(partition.bot, partition.name)
    await redis.pexpire(lease, 1000)
    async with redis.pipeline(transaction=True) as tx:
        await owner.guard(tx, [partition])
        tx.set(f"bw:{{{partition.bot}}}:probe", "committed")
        await owner._renew()  # what keep_alive does every renewal period
        await owner.commit(tx, [partition])
    assert await redis.get(f"bw:{{{partition.bot}}}:probe") == "committed"
    assert await redis.pttl(lease) > 1000, "the renewal extended the lease"


async def test_a_restarted_replica_with_the_same_id_takes_its_leases_over_with_new_tokens(
    redis: Redis,
) -> None:
    before = keeper(redis, "strategy-0")
    await before.beat()
    after = keeper(redis, "strategy-0")  # same pod name, new process
    await after.beat()
    assert set(after.tokens) == set(PARTITIONS)
    assert all(after.tokens[p] == before.tokens[p] + 1 for p in PARTITIONS)
    with pytest.raises(LeaseLost):
        await fenced_write(before, PARTITIONS[0], "the old incarnation")


async def test_leave_releases_everything_so_a_survivor_takes_over_at_once(redis: Redis) -> None:
    leaving, staying = keeper(redis, "leaving"), keeper(redis, "staying")
    await leaving.beat()
    await staying.beat()
    await leaving.beat()
    await staying.beat()
    assert leaving.tokens
    await leaving.leave()
    assert await redis.zrange(keys.members("accounting"), 0, -1) == ["staying"]
    await staying.beat()
    assert set(staying.tokens) == set(PARTITIONS)


async def test_a_redis_restart_reaches_the_worker_as_an_error_never_a_silent_retry(
    tmp_path: Path,
) -> None:
    """A worker must learn of every outage, however short, and reload from Redis: one that came
    back may have lost the last second (AOF `everysec`), and memory is ahead of it. redis-py
    would reconnect and retry silently; the workers' client does not, and a connection lost
    under WATCH is a Redis error, not a moved lease."""
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    client = worker_redis(server.url)
    try:
        owner = keeper(client, "owner")
        await owner.beat()
        await fenced_write(owner, PARTITIONS[0], "before")
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        server.start()
        with pytest.raises(RedisError) as raised:
            await fenced_write(owner, PARTITIONS[0], "after a restart")
        assert not isinstance(raised.value, WatchError), "a lost connection, not a moved lease"
        assert await client.get(f"bw:{{{PARTITIONS[0].bot}}}:probe") == "before"
        await client.connection_pool.disconnect()  # the worker reloads on fresh connections
        await owner.beat()  # and renews its leases on the Redis that came back
        server.process.kill()
        server.process.wait()
        write = asyncio.create_task(fenced_write(owner, PARTITIONS[0], "during an outage"))
        await asyncio.sleep(1.0)  # Redis is away while the worker commits, then back
        server.start()
        with pytest.raises(RedisError):  # not retried behind the worker's back until it is back
            await write
    finally:
        await client.aclose()
        server.stop()
