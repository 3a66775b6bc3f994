"""Shared fixtures: a real redis-server of the tests' own on a free port, never one on 6379,
with Bandwagon's ACL users loaded (SPEC 4.1 rule 14): the services started by the tests connect
as their own users, the tests' own clients as the default user."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.e2e.services import Deployment
from tools.run.redis_server import RedisServer, new_passwords

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), passwords=new_passwords())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on an emptied database: each test starts from nothing."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def deployment(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """The services of one e2e test as processes on the session's emptied redis-server, with the
    test module's `BOTS_YAML` and `API_KEY`; at the end each must drain and exit 0 on SIGTERM
    (SPEC 4.1 rule 4). Modules that need another setup define their own `deployment`."""
    config = tmp_path / "bots.yaml"
    config.write_text(textwrap.dedent(request.module.BOTS_YAML))
    deployment = Deployment(
        redis_server.url,
        config,
        tmp_path,
        request.module.API_KEY,
        passwords=redis_server.passwords,
    )
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes
