"""`bandwagon accounting`: creates bots' state, then folds strategy events into refreshes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.bot_state import ensure_state, publish_api_keys
from libs.config import BotsFile, load_bots, load_settings, read_api_keys
from libs.ops.health import Health, SidePort, ping_redis_forever
from libs.ops.logs import setup_logging
from libs.ops.timezone import local_time_zone_offset_min
from services.accounting.worker import AccountingWorker

log = logging.getLogger("bandwagon.accounting")
DEFAULT_HEALTH_PORT = 9103
BACKOFF_MAX_S = 10.0


async def prepare(redis: Redis, bots: BotsFile) -> None:
    """State creation (SPEC 4.1 rule 11) and key hashes (2.1 rule 16), before any event."""
    for bot in bots.bots:
        if await ensure_state(redis, bot, local_time_zone_offset_min()):
            log.info("bot state created", extra={"bot": bot.id})
    await publish_api_keys(redis, read_api_keys(bots))


async def serve(
    stop: asyncio.Event, health: Health, redis: Redis, bots: BotsFile, worker: AccountingWorker
) -> None:
    """Publish until stopped; on a Redis error back off (capped, jittered) and reload the book
    from the last commit, since memory may hold events that were never committed."""
    backoff_s = 0.1
    loaded = False
    while not stop.is_set():
        try:
            if not loaded:
                await prepare(redis, bots)
                await worker.load()
                loaded = True
                health.set_check("partitions", True)
            await worker.run_once()
            backoff_s = 0.1
        except (RedisError, OSError) as error:
            loaded = False
            health.set_check("partitions", False)
            log.warning("redis unavailable, retrying in %.1f s: %s", backoff_s, error)
            await asyncio.sleep(random.uniform(0, backoff_s))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)


async def amain(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging("accounting", settings.log_level)
    bots = load_bots(settings.config_path)
    read_api_keys(bots)  # a missing or malformed key is a config error at start (exit 78)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    health = Health("accounting")
    health.set_check("partitions", False)
    port = DEFAULT_HEALTH_PORT if settings.health_port is None else settings.health_port
    side_port = SidePort(health, settings.health_host, port)
    log.info("health port %d", await side_port.start())

    stop = asyncio.Event()

    def begin_shutdown() -> None:
        health.draining = True  # /readyz 503 at once (SPEC 4.1 rule 4)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown)

    pinger = asyncio.create_task(ping_redis_forever(redis.ping, health))
    worker = AccountingWorker(redis, bots.bots, batch_size=args.batch_size)
    try:
        await serve(stop, health, redis, bots, worker)
    finally:
        pinger.cancel()
        await side_port.stop()
        await redis.aclose()
    log.info("stopped")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon accounting", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=1000, help="events per read")
    return asyncio.run(amain(parser.parse_args(argv)))
