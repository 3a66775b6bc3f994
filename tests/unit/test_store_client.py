"""The pure parts of `libs.store.client`: where a cluster node's client points, how keys group
for multi-key commands (SPEC 4.1 rule 13), and the bounded side-by-side runner."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from libs.store import keys
from libs.store.client import RedisNodes, node_url, side_by_side


def test_a_node_url_keeps_the_credentials_tls_and_options_of_the_configured_one() -> None:
    url = "rediss://bandwagon:s3cret@seed.example:6380/0?ssl_ca_certs=/ca.pem"
    assert node_url(url, "10.0.0.7", 7001) == (
        "rediss://bandwagon:s3cret@10.0.0.7:7001/0?ssl_ca_certs=/ca.pem"
    )
    assert node_url("redis://seed:6379", "::1", 7002) == "redis://[::1]:7002"


def test_on_one_redis_every_key_goes_in_one_group_and_to_one_client() -> None:
    nodes = RedisNodes("redis://127.0.0.1:1/0")
    streams = [keys.market_stream("mexc", pid, "1m") for pid in ("A-USDT", "B-USDT", "C-USDT")]
    assert nodes.by_slot(streams) == [streams]
    assert nodes.by_slot([]) == []
    assert list(nodes.by_node(streams).values()) == [streams]
    assert nodes.for_bot("demo") is nodes.default


def test_on_a_cluster_a_multi_key_group_never_spans_two_slots() -> None:
    nodes = RedisNodes("redis://127.0.0.1:1", cluster=True)
    streams = [keys.market_stream("mexc", f"M{n:02d}-USDT", "1m") for n in range(30)]
    groups = nodes.by_slot([*streams, streams[0]])
    assert sorted(name for group in groups for name in group) == sorted([*streams, streams[0]])
    for group in groups:
        assert len({key_slot(name.encode()) for name in group}) == 1


def test_a_cluster_key_has_no_client_before_the_slot_map_is_read() -> None:
    from redis.exceptions import RedisError

    nodes = RedisNodes("redis://127.0.0.1:1", cluster=True)
    with pytest.raises(RedisError, match="slot map"):
        nodes.for_bot("demo")


async def test_side_by_side_runs_at_most_the_limit_at_once_and_raises_after_all_settle() -> None:
    running, peak, done = 0, 0, []

    async def work(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (item % 3))
        running -= 1
        if item == 5:
            raise ValueError("item 5")
        done.append(item)

    with pytest.raises(ValueError, match="item 5"):
        await side_by_side(work, range(40), limit=4)
    assert peak == 4
    assert sorted(done) == [item for item in range(40) if item != 5]
