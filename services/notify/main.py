"""`bandwagon notify`: committed fills -> signed webhook deliveries and Telegram messages
(SPEC section 6). `bandwagon notify test --bot ID` sends one signed test delivery to each of the
bot's webhooks and prints each answer, to check a receiver before the first fill."""

from __future__ import annotations

import argparse
import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import RedisError

from libs.config import (
    BotsFile,
    Settings,
    load_bots,
    load_settings,
    public_url,
    read_notify_secrets,
)
from libs.errors import ConfigError
from libs.ops.logs import setup_logging
from libs.ops.worker_shell import run_worker
from libs.store import keys
from libs.store.client import RedisNodes, worker_nodes
from libs.store.leases import LeaseKeeper
from libs.wire.notifications import TEST_EVENT, test_body
from services.notify.schedule import RetryPolicy
from services.notify.sender import wall_ms
from services.notify.sinks import new_client, sink_for, url_problem
from services.notify.worker import NotifyWorker, notify_partitions

DEFAULT_HEALTH_PORT = 9104  # SPEC 6.1 rule 6
EPOCH_READ_TIMEOUT_S = 3.0
RESOLVER_THREADS = 64


def check_urls(bots: BotsFile) -> None:
    """A webhook httpx could never send to is a config error at start (SPEC 4.1 rule 7)."""
    for bot_index, bot in enumerate(bots.bots):
        for index, hook in enumerate(bot.notify):
            problem = None if hook.url is None else url_problem(hook.url)
            if problem is not None:
                assert hook.url is not None
                raise ConfigError(
                    f"bots[{bot_index}].notify[{index}].url", public_url(hook.url), problem
                )


async def serve(settings: Settings, bots: BotsFile, batch_size: int) -> int:
    secrets = read_notify_secrets(bots)  # a missing or malformed one: config error, exit 78
    check_urls(bots)
    # what the imports and the config made lives as long as the process: out of every full
    # collection, whose pauses (14-63 ms) made the p99 of a delivery (docs/benchmarks.md)
    gc.collect()
    gc.freeze()
    # host names are resolved on the default executor's threads, which a resolver that never
    # answers holds past the 5 s of an attempt: enough of them that one such receiver's
    # lookups cannot starve another webhook's (SPEC 6.1 rule 4)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="notify-resolve")
    )
    redis = worker_nodes(settings)
    keeper = LeaseKeeper.for_service(redis, "notify", settings, notify_partitions(bots.bots))
    worker = NotifyWorker(
        redis,
        bots.bots,
        keeper,
        secrets,
        telegram_api_url=settings.telegram_api_url,
        policy=RetryPolicy(retry_for_s=settings.notify_retry_for_s),
        batch_size=batch_size,
    )

    async def leave() -> None:
        await worker.stop_senders()  # an attempt cut short is sent again by the next owner
        await keeper.leave()

    try:
        return await run_worker(
            service="notify",
            settings=settings,
            redis=redis,
            default_health_port=DEFAULT_HEALTH_PORT,
            load=worker.load,
            step=worker.run_once,
            leave=leave,
            background=keeper.keep_alive,
        )
    finally:
        await worker.stop_senders()


async def current_epoch(settings: Settings, bot_id: str) -> str:
    """The bot's epoch for the test delivery's id, or `none` without a state or a Redis."""
    nodes = RedisNodes.for_settings(settings, decode_responses=True)
    try:
        async with asyncio.timeout(EPOCH_READ_TIMEOUT_S):
            await nodes.refresh()
            epoch = await nodes.for_bot(bot_id).hget(keys.meta(bot_id), "epoch")
    except (RedisError, OSError, TimeoutError):
        epoch = None
    finally:
        await nodes.aclose()
    return "none" if epoch is None else str(epoch)


async def send_test(settings: Settings, bots: BotsFile, bot_id: str) -> int:
    """One signed test delivery per webhook of the bot, each answer printed; exit 0 when every
    receiver answered 2xx."""
    bot = bots.bot(bot_id)
    if not bot.notify:
        print(f"bot {bot_id} has no webhooks: add a notify: list to it in the bots file")
        return 1
    secrets = read_notify_secrets(bots, only=bot_id)
    epoch = await current_epoch(settings, bot_id)
    now_ms = wall_ms()
    body = test_body(bot=bot_id, epoch=epoch, now_ms=now_ms)
    failed = 0
    async with new_client() as client:
        for index, hook in enumerate(bot.notify):
            sink = sink_for(
                hook, secrets[(bot_id, hook.hook_id)].get_secret_value(), settings.telegram_api_url
            )
            answer = await sink.send(
                client, delivery_id=f"{epoch}:0:{TEST_EVENT}", body=body, now_ms=now_ms
            )
            failed += not answer.delivered
            verdict = "delivered" if answer.delivered else "FAILED"
            print(
                f"notify[{index}] {sink.target}: {answer.detail} "
                f"in {answer.elapsed_s * 1000:.0f} ms: {verdict}"
            )
    return 1 if failed else 0


async def amain(args: argparse.Namespace) -> int:
    settings = load_settings()
    bots = load_bots(settings.config_path)
    if args.action == "test":
        setup_logging("notify", "WARNING")
        return await send_test(settings, bots, args.bot)
    setup_logging("notify", settings.log_level)
    return await serve(settings, bots, args.batch_size)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon notify", description=__doc__)
    parser.add_argument(
        "action", nargs="?", choices=["test"], help="test: one test delivery per webhook"
    )
    parser.add_argument("--bot", help="the bot whose webhooks `test` sends to")
    parser.add_argument("--batch-size", type=int, default=200, help="feed entries per read")
    args = parser.parse_args(argv)
    if args.action == "test" and not args.bot:
        parser.error("test needs --bot ID")
    return asyncio.run(amain(args))
