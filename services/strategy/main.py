"""`bandwagon strategy`: wires Redis, signals and the health port to the strategy worker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.config import load_bots, load_settings
from libs.ops.health import Health, SidePort, ping_redis_forever
from libs.ops.logs import setup_logging
from services.strategy.worker import StrategyWorker

log = logging.getLogger("bandwagon.strategy")
DEFAULT_HEALTH_PORT = 9102
BACKOFF_MAX_S = 10.0


async def serve(stop: asyncio.Event, health: Health, worker: StrategyWorker) -> None:
    """Process batches until stopped; on a Redis error back off (capped, jittered) and reload the
    committed state, since memory may be ahead of what was committed."""
    backoff_s = 0.1
    loaded = False
    while not stop.is_set():
        try:
            if not loaded:
                await worker.load()
                loaded = True
                health.set_check("partitions", True)
            await worker.run_once(block_ms=500)
            backoff_s = 0.1
        except (RedisError, OSError) as error:
            loaded = False
            health.set_check("partitions", False)
            log.warning("redis unavailable, retrying in %.1f s: %s", backoff_s, error)
            await asyncio.sleep(random.uniform(0, backoff_s))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)


async def amain(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging("strategy", settings.log_level)
    bots = load_bots(settings.config_path)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    health = Health("strategy")
    health.set_check("partitions", False)
    port = DEFAULT_HEALTH_PORT if settings.health_port is None else settings.health_port
    side_port = SidePort(health, settings.health_host, port)
    bound = await side_port.start()
    log.info("health port %d", bound)

    stop = asyncio.Event()

    def begin_shutdown() -> None:
        health.draining = True  # /readyz 503 at once (SPEC 4.1 rule 4)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown)

    pinger = asyncio.create_task(ping_redis_forever(redis.ping, health))
    worker = StrategyWorker(redis, bots.enabled_bots, batch_size=args.batch_size)
    try:
        await serve(stop, health, worker)
    finally:
        pinger.cancel()
        await side_port.stop()
        await redis.aclose()
    log.info("stopped")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon strategy", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=1000, help="entries per stream read")
    return asyncio.run(amain(parser.parse_args(argv)))
