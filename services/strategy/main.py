"""`bandwagon strategy`: wires Redis and the worker shell to the strategy worker."""

from __future__ import annotations

import argparse
import asyncio

from libs.config import load_bots, load_settings
from libs.ops.health import Health
from libs.ops.logs import setup_logging
from libs.ops.worker_shell import run_worker
from libs.store.client import worker_nodes
from libs.store.leases import LeaseKeeper
from libs.store.partitions import strategy_partitions
from libs.trading import load_strategy
from services.strategy.worker import StrategyWorker

DEFAULT_HEALTH_PORT = 9102
LINGER_MS = 5.0  # well inside SPEC 2.1 rule 10's 100 ms for a fill; ~3x less CPU per update


async def amain(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging("strategy", settings.log_level)
    bots = load_bots(settings.config_path)
    for bot in bots.enabled_bots:  # a plug-in that does not import: a config error, now
        load_strategy(bot)
    redis = worker_nodes(settings)
    keeper = LeaseKeeper.for_service(
        redis, "strategy", settings, strategy_partitions(bots.enabled_bots)
    )
    health = Health("strategy")
    worker = StrategyWorker(
        redis,
        bots.enabled_bots,
        keeper,
        batch_size=args.batch_size,
        health=health,
        linger_ms=args.linger_ms,
    )
    return await run_worker(
        service="strategy",
        settings=settings,
        redis=redis,
        default_health_port=DEFAULT_HEALTH_PORT,
        load=worker.load,
        step=lambda: worker.run_once(block_ms=500),
        leave=keeper.leave,
        background=keeper.keep_alive,
        health=health,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon strategy", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=1000, help="entries per stream read")
    parser.add_argument(
        "--linger-ms",
        type=float,
        default=LINGER_MS,
        help="after a read of a few entries, wait this long before the next read, so several "
        "updates share one commit (0: read again at once)",
    )
    return asyncio.run(amain(parser.parse_args(argv)))
