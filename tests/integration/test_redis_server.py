from pathlib import Path

from redis.asyncio import Redis

from tools.run.redis_server import RedisServer
from tools.run.supervisor import _parse_args


async def test_the_private_redis_server_speaks_at_least_redis_6_2(redis: Redis) -> None:
    info = await redis.info("server")
    major, minor, *_ = (int(part) for part in str(info["redis_version"]).split("."))
    assert (major, minor) >= (6, 2)
    assert int(info["tcp_port"]) != 6379


async def test_durability_is_aof_everysec_by_default_and_always_on_request(tmp_path: Path) -> None:
    """SPEC 4.1 rule 12; `bandwagon run --appendfsync always` passes its choice through."""
    assert _parse_args(["--appendfsync", "always"]).appendfsync == "always"
    assert _parse_args([]).appendfsync == "everysec"
    for choice in ("everysec", "always"):
        server = RedisServer(tmp_path / choice, appendfsync=choice).start()
        try:
            async with Redis.from_url(server.url, decode_responses=True) as client:
                assert await client.config_get("appendonly") == {"appendonly": "yes"}
                assert await client.config_get("appendfsync") == {"appendfsync": choice}
        finally:
            server.stop()
