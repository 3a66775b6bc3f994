"""Notifications end to end (issue 18, SPEC section 6): ingest, strategy, accounting and notify as
processes on a redis-server of this module's own, a replay of real klines, and a webhook receiver
and a Telegram stand-in in the test process.

- Every fill of the replay reaches the webhook once by id, in id order, signed, after the epoch
  delivery; the Telegram stand-in gets one message per fill.
- Faults: the receiver answers 503 while notify is SIGKILLed 7 times at random points of a paced
  replay and Redis is restarted once; each webhook's queue then holds every expected delivery
  exactly once (created once per (id, webhook), whatever the kills hit). The receiver recovers,
  notify is killed 3 more times while it delivers, and everything arrives: nothing lost, no id
  that should not exist, first arrivals in id order (repeats are allowed on the wire).

The expected ids come from what accounting published: the bot's trades in Redis (its
`trade_history` holds them all) under its one epoch (`appendfsync always`: a clean Redis restart
keeps the epoch, SPEC 2.1 rule 19).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from libs.config import load_bots
from libs.store import keys
from tests.e2e.services import REPO, Deployment, metric_value, scrape_metrics
from tests.support.polling import eventually, wait_until
from tests.support.receiver import Receiver, Reply, telegram_messages, telegram_ok
from tools.run.redis_server import RedisServer, free_port, new_passwords

KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
BOT = "notified"
PRODUCT_ID = "ALT-BTC"
API_KEY = "notify-e2e-key-0123456789"
SECRET = "e2e-hook-secret-0123456789"
TOKEN = "987654321:ZZyyXXwwVVuuTTssRRqqPPoo"
SEED = 18


def bots_yaml(hook_url: str) -> str:
    return f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    kline_history: 5
    trade_history: 1000
    strategy: {{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}}
    symbols:
      - {{product_id: {PRODUCT_ID}, min_size: "0.01", price_decimals: 8, leverage: 20,
         isolated: true}}
    notify:
      - {{url: "{hook_url}/hook?source=bandwagon", secret_env: HOOK_SECRET, allow_http: true}}
      - {{telegram: {{token_env: TG_TOKEN, chat_id: 4242}}, events: [fill]}}
"""


pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Stopped and started again on the same port and data dir; `always`, so nothing is lost."""
    server = RedisServer(
        tmp_path / "redis", port=free_port(), appendfsync="always", passwords=new_passwords()
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    hook = await Receiver(secret=SECRET).start()
    telegram = await Receiver(behaviour=telegram_ok).start()
    yield hook, telegram
    await hook.stop()
    await telegram.stop()


@pytest.fixture
async def deployment(
    own_redis: RedisServer, tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> AsyncIterator[Deployment]:
    config = tmp_path / "bots.yaml"
    config.write_text(bots_yaml(receivers[0].url))
    load_bots(config)  # a typo here should fail as a config error, not as a timeout
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    deployment = Deployment(own_redis.url, config, log_dir, API_KEY, passwords=own_redis.passwords)
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, str(log_dir))


def start_notify(deployment: Deployment, telegram: Receiver) -> None:
    deployment.start("notify", HOOK_SECRET=SECRET, TG_TOKEN=TOKEN, TELEGRAM_API_URL=telegram.url)


async def published_fills(redis: Redis) -> tuple[str, list[dict[str, Any]]]:
    epoch = await redis.hget(keys.meta(BOT), "epoch")
    trades = [orjson.loads(t) for t in await redis.lrange(keys.trades(BOT, PRODUCT_ID), 0, -1)]
    return str(epoch), trades


def expected_ids(epoch: str, trades: list[dict[str, Any]]) -> list[str]:
    ids = [f"{epoch}:0:epoch"]
    for trade in trades:
        ids.append(f"{epoch}:{trade['order_id']}:fill")
        if trade["action"].startswith("liquidation_"):
            ids.append(f"{epoch}:{trade['order_id']}:liquidation")
    return ids


def first_arrivals(ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for delivery_id in ids:
        seen.setdefault(delivery_id)
    return list(seen)


async def settled(redis: Redis, settle_s: float = 1.5) -> tuple[str, list[dict[str, Any]]]:
    """The published fills once their count stops moving (the replay is over)."""
    last: list[int] = []

    async def still() -> tuple[str, list[dict[str, Any]]] | None:
        epoch, trades = await published_fills(redis)
        last.append(len(trades))
        window = int(settle_s / 0.25)
        if len(last) > window and len(set(last[-window:])) == 1 and await ingest_finished(redis):
            return epoch, trades
        return None

    return await eventually(still, timeout_s=120, poll_s=0.25, what="the replay published")


async def ingest_finished(redis: Redis) -> bool:
    stream = keys.market_stream("binance", PRODUCT_ID, "1m")
    newest = await redis.xrevrange(stream, count=1)
    return bool(newest) and await redis.xlen(stream) >= 3000


async def test_every_fill_of_a_replay_reaches_the_webhook_once_in_order_and_telegram(
    deployment: Deployment, redis_of: Redis, receivers: tuple[Receiver, Receiver]
) -> None:
    hook, telegram = receivers
    start_notify(deployment, telegram)
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy", "notify")
    deployment.start("ingest", "--source=replay", f"--replay={PRODUCT_ID}={KLINES}", "--speed=max")
    epoch, trades = await settled(redis_of)
    assert len(trades) > 20, "the replay must make fills"
    expected = expected_ids(epoch, trades)
    assert any(i.endswith(":liquidation") for i in expected), "a liquidation among them"
    await eventually(
        lambda: len(hook.accepted) >= len(expected) and len(telegram.accepted) >= len(trades),
        timeout_s=30,
        what=lambda: f"{len(expected)} deliveries, got {len(hook.accepted)}",
    )
    assert hook.accepted_ids() == expected
    assert hook.bad_signatures == []
    assert {r.query for r in hook.requests} == {"source=bandwagon"}
    bodies = [
        orjson.loads(r.body) for r in hook.accepted if r.headers["x-bandwagon-id"].endswith(":fill")
    ]
    assert [body["trade"] for body in bodies] == trades  # the TRADE exactly as published
    messages = telegram_messages(telegram)
    assert len(messages) == len(trades)
    assert all(m["chat_id"] == 4242 for m in messages)
    assert [m["text"].split("\n")[1].split(" ")[1] for m in messages] == [t["size"] for t in trades]
    metrics = scrape_metrics(deployment.services["notify"])
    assert metric_value(metrics, "bandwagon_notify_delivered_total", bot=BOT) == len(
        expected
    ) + len(trades)
    assert metric_value(metrics, "bandwagon_notify_pending", bot=BOT) == 0
    for text in (SECRET, TOKEN, "source=bandwagon"):
        assert text not in deployment.services["notify"].log()
        assert text not in metrics


async def kill_notify(deployment: Deployment, telegram: Receiver, rng: random.Random) -> None:
    service = deployment.services["notify"]
    assert service.process.poll() is None, f"notify exited:\n{service.log()}"
    service.process.kill()
    assert service.process.wait() == -signal.SIGKILL
    start_notify(deployment, telegram)
    await asyncio.sleep(rng.uniform(0.4, 1.6))


async def test_kills_and_a_redis_restart_lose_no_delivery_and_create_none_twice(
    deployment: Deployment,
    redis_of: Redis,
    own_redis: RedisServer,
    receivers: tuple[Receiver, Receiver],
) -> None:
    hook, telegram = receivers
    hook.behaviour = lambda _: Reply(503, b"not yet")
    telegram.behaviour = lambda _: Reply(503, b"not yet")
    rng = random.Random(SEED)
    start_notify(deployment, telegram)
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy", "notify")
    deployment.start(
        "ingest", "--source=replay", f"--replay={PRODUCT_ID}={KLINES}", "--speed=12000"
    )
    for kill in range(7):
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        await kill_notify(deployment, telegram, rng)
        if kill == 3:  # Redis goes away and comes back mid-replay, every service riding it out
            own_redis.stop()
            await asyncio.sleep(1.0)
            own_redis.start()
    epoch, trades = await settled(redis_of)
    expected = expected_ids(epoch, trades)
    fills = [f"{epoch}:{t['order_id']}:fill" for t in trades]
    config = load_bots(deployment.config_path).bots[0]
    queues = []
    for hook_config in config.notify:
        wanted = expected if hook_config.telegram is None else fills
        entries = await eventually(
            functools.partial(
                _full_queue, redis_of, keys.deliveries(BOT, hook_config.hook_id), len(wanted)
            ),
            timeout_s=30,
            what=f"{hook_config.target}'s queue",
        )
        queues.append([fields["id"] for _, fields in entries])
    webhook_queue, telegram_queue = queues
    assert webhook_queue == expected  # every delivery created once, in id order
    assert telegram_queue == fills
    assert hook.accepted == [] and telegram.accepted == []

    hook.behaviour = lambda _: Reply()
    telegram.behaviour = telegram_ok
    for _ in range(3):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await kill_notify(deployment, telegram, rng)
    await eventually(
        lambda: set(hook.accepted_ids()) >= set(expected) and len(telegram.accepted) >= len(fills),
        timeout_s=90,
        poll_s=0.2,
        what=lambda: f"all {len(expected)} delivered, got {len(set(hook.accepted_ids()))}",
    )
    assert set(hook.accepted_ids()) == set(expected), "no id that should not exist"
    assert first_arrivals(hook.accepted_ids()) == expected, "first arrivals in id order"
    assert hook.bad_signatures == []
    await eventually(
        lambda: _all_empty(redis_of, config),
        timeout_s=10,
        what="nothing pending",
    )


async def _full_queue(redis: Redis, key: str, count: int) -> list[Any] | None:
    entries = cast(list[Any], await redis.xrange(key))
    return entries if len(entries) >= count else None


async def _all_empty(redis: Redis, config: Any) -> bool:
    lengths = [await redis.xlen(keys.deliveries(BOT, h.hook_id)) for h in config.notify]
    return sum(lengths) == 0


@pytest.fixture
async def redis_of(own_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_make_run_with_a_webhook_and_a_telegram_entry_delivers_every_fill(
    tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> None:
    """Issue 18's done-when, through `bandwagon run` (what `make run` runs): a bots file with a
    webhook and a Telegram entry, a replay; one signed delivery per fill reaches the receiver
    and one message per fill the Telegram stand-in."""
    hook, telegram = receivers
    config = tmp_path / "bots.yaml"
    config.write_text(bots_yaml(hook.url))
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.update(
        BANDWAGON_CONFIG=str(config),
        HOOK_SECRET=SECRET,
        TG_TOKEN=TOKEN,
        TELEGRAM_API_URL=telegram.url,
    )
    argv = [sys.executable, "-m", "tools.cli", "run", "--run-dir", str(tmp_path / "run")]
    argv += ["--free-ports", "--replay", f"{PRODUCT_ID}={KLINES}", "--speed", "max"]
    with out.open("wb") as stdout:
        run = subprocess.Popen(  # noqa: ASYNC220 - a child for the whole test, started once
            argv, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.STDOUT
        )
    try:

        def banner() -> str | None:
            text = out.read_text()
            assert run.poll() is None, f"bandwagon run exited {run.returncode}:\n{text}"
            return text if "Bandwagon demo is ready." in text else None

        shown = await asyncio.to_thread(
            wait_until, banner, timeout_s=100, poll_s=0.2, what=lambda: out.read_text()
        )
        port = re.search(r"redis-server on 127\.0\.0\.1:(\d+)", shown)
        assert port is not None
        inspector = (tmp_path / "run" / "redis-users" / "inspector").read_text().strip()
        redis = Redis(
            port=int(port[1]), username="inspector", password=inspector, decode_responses=True
        )
        try:
            epoch, trades = await settled(redis)
        finally:
            await redis.aclose()
        fills = [f"{epoch}:{t['order_id']}:fill" for t in trades]
        assert len(fills) > 20, "the replay must make fills"
        await eventually(
            lambda: len(telegram.accepted) >= len(fills) and set(fills) <= set(hook.accepted_ids()),
            timeout_s=30,
            what=lambda: (
                f"{len(fills)} fills, got {len(hook.accepted)} and {len(telegram.accepted)}"
            ),
        )
        assert [i for i in hook.accepted_ids() if i.endswith(":fill")] == fills
        assert hook.bad_signatures == []
        assert len(telegram.accepted) == len(fills)
        run.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(run.wait, 30) == 0
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=30)


async def test_notify_test_sends_one_signed_test_delivery_per_webhook_and_prints_answers(
    tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> None:
    """`bandwagon notify test --bot ID`, with no Redis running: epoch `none`, one signed `test`
    delivery to the webhook, a message to the Telegram chat, each answer printed; exit 1 as soon
    as one receiver fails."""
    hook, telegram = receivers
    config = tmp_path / "bots.yaml"
    config.write_text(bots_yaml(hook.url))
    env = dict(os.environ)
    env.update(
        BANDWAGON_CONFIG=str(config),
        HOOK_SECRET=SECRET,
        TG_TOKEN=TOKEN,
        TELEGRAM_API_URL=telegram.url,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    argv = [sys.executable, "-m", "tools.cli", "notify", "test", "--bot", BOT]
    result = await asyncio.to_thread(
        subprocess.run, argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"notify[0] {hook.url}/hook: 200 OK in ")
    assert lines[0].endswith(" ms: delivered") and "source=bandwagon" not in result.stdout
    assert lines[1].startswith("notify[1] telegram chat 4242: 200 OK in ")
    (request,) = hook.accepted
    assert request.headers["x-bandwagon-id"] == "none:0:test"
    assert orjson.loads(request.body)["event"] == "test"
    assert hook.bad_signatures == []
    assert telegram_messages(telegram)[0]["text"] == f"{BOT}: test message from bandwagon notify"

    hook.behaviour = lambda _: Reply(404, b"no such hook")
    failed = await asyncio.to_thread(
        subprocess.run, argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1
    assert "404 Not Found" in failed.stdout and "FAILED" in failed.stdout


async def test_a_dead_notify_replicas_bots_are_delivered_by_the_survivor_within_15_s(
    deployment: Deployment, redis_of: Redis, receivers: tuple[Receiver, Receiver]
) -> None:
    """SPEC 6.1 rule 6 and 4.1 rule 9: two notify replicas share the bots by lease; SIGKILL the
    one that owns the bot and the other takes its queues over within 15 s, and every delivery
    arrives (the one cut short may arrive twice: at least once)."""
    hook, telegram = receivers
    start_notify(deployment, telegram)
    deployment.start(
        "notify",
        replica="notify-2",
        HOOK_SECRET=SECRET,
        TG_TOKEN=TOKEN,
        TELEGRAM_API_URL=telegram.url,
    )
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.wait_ready("accounting", "strategy", "notify", "notify-2")
    replay = f"--replay={PRODUCT_ID}={KLINES}"
    deployment.start("ingest", "--source=replay", replay, "--speed=6000")

    async def owner() -> str | None:
        lease = await redis_of.get(keys.lease(BOT, "notify"))
        return None if lease is None else str(lease).rpartition(":")[0]

    first_owner = await eventually(owner, timeout_s=20, what="a notify replica owning the bot")
    await eventually(lambda: len(hook.accepted) >= 5, timeout_s=30, what="deliveries begin")
    victim = deployment.services[first_owner]
    victim.process.kill()
    assert victim.process.wait() == -signal.SIGKILL
    killed_at = asyncio.get_running_loop().time()
    survivor = "notify-2" if first_owner == "notify" else "notify"
    await eventually(
        lambda: owner_is(redis_of, survivor), timeout_s=15, poll_s=0.2, what="the survivor owns it"
    )
    assert asyncio.get_running_loop().time() - killed_at <= 15.5
    epoch, trades = await settled(redis_of)
    expected = expected_ids(epoch, trades)
    await eventually(
        lambda: set(hook.accepted_ids()) >= set(expected),
        timeout_s=60,
        what=lambda: f"{len(expected)} delivered, got {len(set(hook.accepted_ids()))}",
    )
    assert set(hook.accepted_ids()) == set(expected)
    assert first_arrivals(hook.accepted_ids()) == expected
    del deployment.services[first_owner]  # killed on purpose: no clean exit to check


async def owner_is(redis: Redis, worker: str) -> bool:
    lease = await redis.get(keys.lease(BOT, "notify"))
    return lease is not None and str(lease).rpartition(":")[0] == worker
