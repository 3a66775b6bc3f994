"""The notify worker against real receivers (SPEC section 6, issue 18): a real redis-server, the
worker in this process, webhook receivers and a Telegram stand-in served by uvicorn on loopback.

Feed entries are committed here exactly as accounting commits them (`libs.store.notices`), so
every case is about what the worker does with committed fills: bodies and signatures byte for
byte, order, retries with SPEC's backoff, isolation of a failing receiver, Telegram's 429, the
24 h window, and secrets kept out of logs and metrics. The whole pipeline, SIGKILLs and a Redis
restart are `tests/e2e/test_notify.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr
from redis.asyncio import Redis

from libs.config import BotConfig, BotsFile, read_notify_secrets
from libs.store import keys, notices
from libs.store.client import worker_redis
from libs.store.leases import LeaseKeeper
from libs.wire.notifications import fill_body, signature
from services.notify.schedule import RetryPolicy
from services.notify.worker import NotifyWorker, notify_partitions
from tests.support.polling import eventually
from tests.support.receiver import (
    Receiver,
    Reply,
    Request,
    telegram_429,
    telegram_messages,
    telegram_ok,
)
from tools.run.redis_server import RedisServer

SECRET = "hook-secret-0123456789abcdef"
OTHER_SECRET = "other-secret-0123456789abcdef"
TOKEN = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOO"
QUERY_SECRET = "QUERYSECRET42"
EPOCH = "0123456789abcdef"


def trade(order_id: int, action: str = "BollingerBands_buy_long", **fields: Any) -> dict[str, Any]:
    side = action.rsplit("_", 1)[-1]
    kind = "buy" if "_buy_" in action or action == "liquidation_short" else "sell"
    value: dict[str, Any] = {
        "order_id": order_id,
        "time": 1_700_000_000_000 + order_id * 60_000,
        "execution_time": 0,
        "slippage": 0.0,
        "type": kind,
        "size": "0.250",
        "fee": 0.5,
        "price": "2000.00",
        "order_type": "taker",
        "action": action,
        "profit": -0.001,
        "usdtProfit": -0.5,
        "position_side": side,
    }
    value.update(fields)
    return value


def bot(bot_id: str, hooks: list[dict[str, Any]]) -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": bot_id,
            "symbols": [{"product_id": "ETH-USDT", "min_size": "0.001", "price_decimals": 2}],
            "notify": hooks,
        }
    )


def hook(receiver: Receiver, path: str = "/hook", **extra: Any) -> dict[str, Any]:
    return {
        "url": f"{receiver.url}{path}",
        "secret_env": "HOOK_SECRET",
        "allow_http": True,
        **extra,
    }


async def publish(redis: Redis, bot_id: str, trades: list[dict[str, Any]]) -> None:
    """Commit fills to the feed as accounting's refresh commit does."""
    async with redis.pipeline(transaction=True) as tx:
        notices.stage_fills(
            tx,
            bot=bot_id,
            epoch=EPOCH,
            fills=[("ETH-USDT", orjson.dumps(value)) for value in trades],
        )
        await tx.execute()


def ids_of(trades: list[dict[str, Any]], kinds: tuple[str, ...] = ("fill",)) -> list[str]:
    return [f"{EPOCH}:{t['order_id']}:{kind}" for t in trades for kind in kinds]


@dataclass
class Running:
    worker: NotifyWorker
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def notify_worker(
    redis_server: RedisServer,
    bots: list[BotConfig],
    *,
    telegram_api_url: str = "http://127.0.0.1:9",
    policy: RetryPolicy | None = None,
) -> AsyncIterator[NotifyWorker]:
    """The worker's loop as `bandwagon notify` runs it, in this process."""
    environ = {"HOOK_SECRET": SECRET, "OTHER_SECRET": OTHER_SECRET, "TG_TOKEN": TOKEN}
    secrets: dict[tuple[str, str], SecretStr] = read_notify_secrets(BotsFile(bots=bots), environ)
    redis = worker_redis(redis_server.url)
    keeper = LeaseKeeper(
        redis, service="notify", worker_id="notify-test", partitions=notify_partitions(bots)
    )
    worker = NotifyWorker(
        redis, bots, keeper, secrets, telegram_api_url=telegram_api_url, policy=policy
    )

    stop = asyncio.Event()

    async def loop() -> None:
        await worker.load()
        while not stop.is_set():
            await worker.run_once(max_block_ms=100)

    task = asyncio.create_task(loop())
    try:
        yield worker
    finally:
        stop.set()  # not task.cancel(): on 3.11 redis-py's wait_for may swallow a cancel
        await asyncio.wait_for(task, 10)
        await worker.stop_senders()
        await redis.aclose()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Any]]:
    started: list[Receiver] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = await Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


def has_accepted(receiver: Receiver, count: int) -> bool:
    return len(receiver.accepted) >= count


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_fill_arrives_once_in_id_order_signed_over_the_exact_body(
    redis: Redis, redis_server: RedisServer, receivers: Callable[..., Any]
) -> None:
    """SPEC 6.1 rules 2-4: one delivery per kind the webhook hears, the body byte for byte,
    `X-Bandwagon-Id`, the HMAC-SHA256 signature of the body, the attempt's timestamp."""
    receiver: Receiver = await receivers(secret=SECRET)
    config = bot("orders", [hook(receiver)])
    trades = [trade(1), trade(2, "BollingerBands_sell_long", usdtProfit=12.5, profit=0.025)]
    trades += [trade(3, "BollingerBands_buy_long"), trade(4, "stopLoss_sell_long")]
    trades += [trade(5, "BollingerBands_sell_short"), trade(6, "liquidation_short")]
    trades += [trade(order_id) for order_id in range(7, 31)]
    async with notify_worker(redis_server, [config]):
        started_ms = int(time.time() * 1000)
        await publish(redis, "orders", trades[:10])
        await publish(redis, "orders", trades[10:])
        expected: list[str] = []
        for value in trades:
            kinds = ["fill"]
            kinds += ["liquidation"] if value["action"].startswith("liquidation_") else []
            kinds += ["riskExit"] if value["action"].startswith("stopLoss_") else []
            expected += [f"{EPOCH}:{value['order_id']}:{kind}" for kind in kinds]
        await eventually(
            lambda: len(receiver.accepted) >= len(expected),
            timeout_s=10,
            what=lambda: f"{len(expected)} deliveries, got {receiver.accepted_ids()}",
        )
        await eventually(
            lambda: metric("bandwagon_notify_pending", bot="orders") == 0,
            timeout_s=5,
            what="pending back to 0",
        )
        assert await redis.xlen(keys.deliveries("orders", config.notify[0].hook_id)) == 0
    assert receiver.accepted_ids() == expected  # once each, in id order
    assert receiver.bad_signatures == []
    by_id = {request.headers["x-bandwagon-id"]: request for request in receiver.accepted}
    for value in trades:
        for kind in ("fill", "liquidation", "riskExit"):
            request = by_id.get(f"{EPOCH}:{value['order_id']}:{kind}")
            if request is None:
                continue
            body = fill_body(
                bot="orders", epoch=EPOCH, product_id="ETH-USDT", trade=value, kind=kind
            )
            assert request.body == body
            assert request.headers["x-bandwagon-signature"] == signature(SECRET, body)
            assert request.headers["content-type"] == "application/json"
            assert request.path == "/hook"
            assert started_ms <= int(request.headers["x-bandwagon-timestamp"]) <= time.time() * 1000
    assert orjson.loads(by_id[f"{EPOCH}:6:liquidation"].body)["trade"]["action"] == (
        "liquidation_short"
    )


@pytest.mark.timeout(300)
async def test_a_receiver_failing_30_s_gets_everything_in_order_and_delays_nobody_else(
    redis: Redis, redis_server: RedisServer, receivers: Callable[..., Any]
) -> None:
    """500 for 30 s, then 200: SPEC's backoff (1 s doubling, full jitter) brings every delivery,
    in order, after the recovery; meanwhile another webhook of the same bot and another bot get
    theirs at once."""
    failing: Receiver = await receivers(secret=SECRET)
    healthy: Receiver = await receivers(secret=OTHER_SECRET)
    other_bot: Receiver = await receivers(secret=SECRET)
    failing_until = time.monotonic() + 30

    def fail_for_30_s(_: Request) -> Reply:
        return Reply(500, b"down") if time.monotonic() < failing_until else Reply()

    failing.behaviour = fail_for_30_s
    first = bot(
        "first",
        [hook(failing), hook(healthy, "/other", secret_env="OTHER_SECRET", events=["fill"])],
    )
    second = bot("second", [hook(other_bot)])
    async with notify_worker(redis_server, [first, second]):
        waves = [[trade(i) for i in range(1, 6)], [trade(i) for i in range(6, 11)]]
        for wave in waves:
            published = time.monotonic()
            await publish(redis, "first", wave)
            await publish(redis, "second", wave)
            count = len(ids_of(wave)) + len(healthy.accepted)
            for receiver in (healthy, other_bot):
                await eventually(
                    functools.partial(has_accepted, receiver, count), timeout_s=3, what="at once"
                )
            assert time.monotonic() - published < 3
            await asyncio.sleep(5)
        assert failing.accepted == [] and len(failing.requests) >= 3, "retried while failing"
        everything = ids_of(waves[0] + waves[1])
        # the last attempt before the recovery may have drawn a wait of up to 64 s (1 s
        # doubling, full jitter), and the one after it up to 128 s
        await eventually(
            lambda: len(failing.accepted) >= len(everything),
            timeout_s=200,
            poll_s=0.2,
            what=lambda: f"everything after the recovery: {failing.accepted_ids()}",
        )
        assert metric("bandwagon_notify_failed_total", bot="first", reason="http_500") >= 3
    assert failing.accepted_ids() == everything
    assert healthy.accepted_ids() == everything
    assert other_bot.accepted_ids() == everything
    attempts_before_recovery = [r.at_s for r in failing.requests if r.at_s < failing_until]
    gaps = [b - a for a, b in itertools.pairwise(attempts_before_recovery)]
    assert all(gap <= 2 ** (n + 1) + 0.5 for n, gap in enumerate(gaps)), gaps  # full jitter
    assert len(attempts_before_recovery) < 15, "backoff doubles: no hammering"


async def test_a_receiver_that_never_answers_costs_5_s_per_attempt_and_nothing_else(
    redis: Redis, redis_server: RedisServer, receivers: Callable[..., Any]
) -> None:
    silent: Receiver = await receivers(secret=SECRET, behaviour=lambda _: Reply(hang=True))
    healthy: Receiver = await receivers(secret=SECRET)
    config = bot("silent", [hook(silent), hook(healthy, "/healthy")])
    async with notify_worker(redis_server, [config]):
        await publish(redis, "silent", [trade(1), trade(2)])
        await eventually(lambda: len(healthy.accepted) == 2, timeout_s=3, what="healthy at once")
        await eventually(
            lambda: len(silent.closed_after_s) >= 2, timeout_s=20, what="two attempts given up"
        )
        await publish(redis, "silent", [trade(3)])
        await eventually(lambda: len(healthy.accepted) == 3, timeout_s=3, what="still at once")
    # the two attempts waited for above (a third may be cut short by the worker's stop at the
    # end), 5 s each as the receiver measures them
    attempts = silent.closed_after_s[:2]
    assert all(4.8 <= seconds <= 6.0 for seconds in attempts), silent.closed_after_s
    assert metric("bandwagon_notify_failed_total", bot="silent", reason="timeout") >= 2


async def test_a_redirect_is_not_followed_and_the_delivery_is_retried(
    redis: Redis, redis_server: RedisServer, receivers: Callable[..., Any]
) -> None:
    receiver: Receiver = await receivers(secret=SECRET)
    receiver.behaviour = lambda request: (
        Reply(302, b"", (("location", f"{receiver.url}/moved"),))
        if request.path == "/hook"
        else Reply()
    )
    async with notify_worker(redis_server, [bot("moved", [hook(receiver)])]):
        await publish(redis, "moved", [trade(1)])
        await eventually(
            lambda: metric("bandwagon_notify_failed_total", bot="moved", reason="http_302") >= 2,
            timeout_s=5,
            what="a retry after the 302",
        )
        assert [request.path for request in receiver.requests] == ["/hook"] * len(
            receiver.requests
        ), "the redirect was followed"
        receiver.behaviour = lambda _: Reply()
        await eventually(lambda: receiver.accepted, timeout_s=10, what="delivered once 200")
    assert receiver.accepted_ids() == [f"{EPOCH}:1:fill"]


async def test_telegram_gets_a_short_message_per_event_and_honours_retry_after(
    redis: Redis, redis_server: RedisServer, receivers: Callable[..., Any]
) -> None:
    """The Bot API stand-in answers the first `sendMessage` with 429 and `retry_after` 2: the
    next attempt waits those 2 s, not the 1 s backoff."""
    replies = iter([telegram_429(2)])
    telegram: Receiver = await receivers(behaviour=lambda _: next(replies, None) or telegram_ok(_))
    chat = {"telegram": {"token_env": "TG_TOKEN", "chat_id": -100123}}
    config = bot("tg", [chat])
    trades = [
        trade(1, "BollingerBands_buy_long"),
        trade(2, "stopLoss_sell_long", usdtProfit=-3.25, profit=-0.0065, price="1987.00"),
        trade(3, "liquidation_long", usdtProfit=-100.0, profit=-0.2),
    ]
    async with notify_worker(redis_server, [config], telegram_api_url=telegram.url):
        await publish(redis, "tg", trades)
        # the stop-loss fill is a fill and a risk exit, the liquidation a fill and a liquidation
        await eventually(lambda: len(telegram.accepted) == 5, timeout_s=10, what="5 messages")
    first_two = telegram.requests[:2]
    assert first_two[1].at_s - first_two[0].at_s >= 2.0, "retry_after honoured"
    assert {request.path for request in telegram.requests} == {f"/bot{TOKEN}/sendMessage"}
    messages = telegram_messages(telegram)
    assert {message["chat_id"] for message in messages} == {-100123}
    texts = [message["text"] for message in messages]
    assert texts[0] == "tg ETH-USDT: fill\nbuy 0.250 at 2000.00 (taker), opens long"
    assert texts[1] == (
        "tg ETH-USDT: fill\nsell 0.250 at 1987.00 (taker), closes long\n"
        "PnL -3.25 USDT (-0.65 %)\nreason: stopLoss"
    )
    assert texts[2].startswith("tg ETH-USDT: risk exit (stopLoss)\n")
    assert texts[3].endswith("PnL -100.00 USDT (-20.00 %)\nreason: liquidation")
    assert texts[4].startswith("tg ETH-USDT: LIQUIDATION\nsell 0.250 at 2000.00")


async def test_a_delivery_failing_for_its_whole_window_is_dropped_logged_and_counted(
    redis: Redis,
    redis_server: RedisServer,
    receivers: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC's 24 h, shortened to 2 s: the head is dropped with a WARNING and counted, and the
    queue goes on (the next delivery is not held forever behind it)."""
    receiver: Receiver = await receivers(secret=SECRET, behaviour=lambda _: Reply(503))
    policy = RetryPolicy(retry_for_s=2.0)
    before = metric("bandwagon_notify_failed_total", bot="dropped", reason="expired")
    with caplog.at_level(logging.WARNING, logger="services.notify"):
        async with notify_worker(redis_server, [bot("dropped", [hook(receiver)])], policy=policy):
            await publish(redis, "dropped", [trade(1)])
            await eventually(
                lambda: (
                    metric("bandwagon_notify_failed_total", bot="dropped", reason="expired")
                    > before
                ),
                timeout_s=10,
                what="dropped after 2 s",
            )
            receiver.behaviour = lambda _: Reply()
            await publish(redis, "dropped", [trade(2)])
            await eventually(lambda: receiver.accepted, timeout_s=10, what="the next one goes")
    assert receiver.accepted_ids() == [f"{EPOCH}:2:fill"]
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and dropped[0].levelno == logging.WARNING
    assert getattr(dropped[0], "delivery", None) == f"{EPOCH}:1:fill"


async def test_no_log_line_or_metric_holds_a_secret_or_a_query_string(
    redis: Redis,
    redis_server: RedisServer,
    receivers: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing: Receiver = await receivers(secret=SECRET, behaviour=lambda _: Reply(500))
    telegram: Receiver = await receivers(behaviour=lambda _: telegram_429(1))
    closed_port = f"http://127.0.0.1:9/hook?token={QUERY_SECRET}"
    config = bot(
        "secrets",
        [
            hook(failing, f"/hook?token={QUERY_SECRET}"),
            {"url": closed_port, "secret_env": "OTHER_SECRET", "allow_http": True},
            {"telegram": {"token_env": "TG_TOKEN", "chat_id": 42}},
        ],
    )
    with caplog.at_level(logging.DEBUG):
        async with notify_worker(redis_server, [config], telegram_api_url=telegram.url):
            await publish(redis, "secrets", [trade(1)])
            await eventually(
                lambda: len(failing.requests) >= 2 and len(telegram.requests) >= 2,
                timeout_s=10,
                what="failed attempts on every receiver",
            )
            await asyncio.sleep(1.5)
    assert failing.requests[0].query == f"token={QUERY_SECRET}", "the URL is used whole"
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "delivery failed" in logged
    metrics = generate_latest(REGISTRY).decode()
    for secret in (SECRET, OTHER_SECRET, TOKEN, TOKEN.split(":")[1], QUERY_SECRET):
        assert secret not in logged
        assert secret not in metrics
    assert "127.0.0.1" not in metrics


async def test_a_removed_receivers_pending_deliveries_are_named_not_lost(
    redis: Redis,
    redis_server: RedisServer,
    receivers: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver taken out of the bots file while its queue still holds deliveries: its queue
    stays in Redis, and the worker names it at WARNING with the key that drops it."""
    kept: Receiver = await receivers(secret=SECRET)
    removed: Receiver = await receivers(secret=SECRET, behaviour=lambda _: Reply(503))
    before = bot("orphans", [hook(kept), hook(removed, "/gone")])
    async with notify_worker(redis_server, [before]):
        await publish(redis, "orphans", [trade(1), trade(2)])
        await eventually(lambda: len(kept.accepted) == 2, timeout_s=5, what="kept delivered")
    gone = before.notify[1].hook_id
    assert await redis.xlen(keys.deliveries("orphans", gone)) == 2
    with caplog.at_level(logging.WARNING, logger="services.notify"):
        async with notify_worker(redis_server, [bot("orphans", [hook(kept)])]):
            await publish(redis, "orphans", [trade(3)])
            await eventually(lambda: len(kept.accepted) == 3, timeout_s=5, what="goes on")
    warned = [r.getMessage() for r in caplog.records if "no longer lists" in r.getMessage()]
    assert warned and keys.deliveries("orphans", gone) in warned[0] and "2 deliveries" in warned[0]
    assert await redis.xlen(keys.deliveries("orphans", gone)) == 2
    state = await redis.hget(keys.notify_state("orphans"), "hooks")
    assert gone in orjson.loads(state or "[]"), "still named at the next take"
