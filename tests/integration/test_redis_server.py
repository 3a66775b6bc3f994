from redis.asyncio import Redis


async def test_the_private_redis_server_speaks_at_least_redis_6_2(redis: Redis) -> None:
    info = await redis.info("server")
    major, minor, *_ = (int(part) for part in str(info["redis_version"]).split("."))
    assert (major, minor) >= (6, 2)
    assert int(info["tcp_port"]) != 6379
