"""Init texts shared by concurrent inits at one (epoch, seq), never staler than a lone init's,
on a real redis-server (services.gateway.inits)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from libs.errors import StateMissing
from libs.store.published import Snapshot
from services.gateway import inits
from services.gateway.inits import InitCache
from tests.integration.gateway_seed import seed_bot


@pytest.fixture
def snapshot_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every snapshot the cache reads, by bot."""
    reads: list[str] = []
    real = inits.read_snapshot

    async def counted(redis: Redis, bot: str) -> Snapshot:
        reads.append(bot)
        return await real(redis, bot)

    monkeypatch.setattr(inits, "read_snapshot", counted)
    return reads


async def test_a_burst_of_inits_at_one_seq_reads_and_builds_once(
    redis: Redis, snapshot_reads: list[str]
) -> None:
    seeded = await seed_bot(redis, "burst")
    await seeded.publish(redis, trades=3)
    cache = InitCache(redis)

    built = await asyncio.gather(*(cache.get("burst") for _ in range(50)))

    assert snapshot_reads == ["burst"]
    assert all(b is built[0] for b in built)
    assert orjson.loads(built[0].text) == seeded.expected_init()
    assert built[0].frame.endswith(built[0].text.encode())  # one text frame, unmasked
    assert built[0].frame[0] == 0x81


async def test_a_newer_seq_is_built_anew_and_never_served_stale(
    redis: Redis, snapshot_reads: list[str]
) -> None:
    seeded = await seed_bot(redis, "moving")
    cache = InitCache(redis)
    first = await cache.get("moving")

    await seeded.publish(redis, trades=1)
    second = await cache.get("moving")

    assert (first.seq, second.seq) == (1, 2)
    assert orjson.loads(second.text) == seeded.expected_init()
    assert len(snapshot_reads) == 2
    assert await cache.get("moving") is second  # held by this test: shared


async def test_a_text_nobody_holds_is_not_kept(redis: Redis, snapshot_reads: list[str]) -> None:
    await seed_bot(redis, "quiet")
    cache = InitCache(redis)
    built: Any = await cache.get("quiet")
    del built
    gc.collect()

    await cache.get("quiet")

    assert snapshot_reads == ["quiet", "quiet"]


async def test_a_failed_build_fails_only_its_own_request(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = await seed_bot(redis, "flaky")
    real = inits.read_snapshot
    calls = 0

    async def first_one_fails(redis: Redis, bot: str) -> Snapshot:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # the others arrive while it is in flight
        if calls == 1:
            raise ValueError("a torn read")
        return await real(redis, bot)

    monkeypatch.setattr(inits, "read_snapshot", first_one_fails)
    cache = InitCache(redis)

    results = await asyncio.gather(*(cache.get("flaky") for _ in range(5)), return_exceptions=True)

    assert isinstance(results[0], ValueError)
    assert all(not isinstance(r, BaseException) for r in results[1:])
    assert orjson.loads(results[1].text) == seeded.expected_init()  # type: ignore[union-attr]
    with pytest.raises(StateMissing):
        await cache.get("no-such-bot")
