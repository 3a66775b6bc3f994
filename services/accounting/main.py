"""`bandwagon accounting`: creates bots' state, then folds strategy events into refreshes."""

from __future__ import annotations

import argparse
import asyncio
import logging

from libs.config import BotConfig, BotsFile, load_bots, load_settings, read_api_keys
from libs.errors import MarketTermsPending
from libs.ops.logs import setup_logging
from libs.ops.timezone import local_time_zone_offset_min
from libs.ops.worker_shell import run_worker
from libs.store import keys
from libs.store.bot_state import ensure_state, publish_api_keys
from libs.store.client import RedisNodes, side_by_side, worker_nodes
from libs.store.leases import LeaseKeeper
from libs.store.partitions import accounting_partitions
from services.accounting.worker import AccountingWorker

log = logging.getLogger(__name__)
DEFAULT_HEALTH_PORT = 9103


async def prepare(nodes: RedisNodes, bots: BotsFile, worker: AccountingWorker) -> None:
    """State creation (SPEC 4.1 rule 11) and key hashes (2.1 rule 16) before any event, then the
    book as of the last commit."""
    await nodes.refresh()

    async def create(bot: BotConfig) -> None:
        try:
            state = await ensure_state(nodes.for_bot(bot.id), bot, local_time_zone_offset_min())
            if state.created:
                log.info("bot state created", extra={"bot": bot.id})
        except MarketTermsPending as pending:  # retried whenever the worker takes the bot
            log.warning("%s", pending, extra={"bot": bot.id})

    await side_by_side(create, bots.bots)  # a thousand bots: a bounded number at once
    await publish_api_keys(nodes.for_key(keys.api_keys()), read_api_keys(bots))
    await worker.load()


async def amain(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging("accounting", settings.log_level)
    bots = load_bots(settings.config_path)
    read_api_keys(bots)  # a missing or malformed key is a config error at start (exit 78)
    redis = worker_nodes(settings)
    keeper = LeaseKeeper.for_service(
        redis, "accounting", settings, accounting_partitions(bots.bots)
    )
    worker = AccountingWorker(redis, bots.bots, keeper, batch_size=args.batch_size)
    return await run_worker(
        service="accounting",
        settings=settings,
        redis=redis,
        default_health_port=DEFAULT_HEALTH_PORT,
        load=lambda: prepare(redis, bots, worker),
        step=worker.run_once,
        leave=keeper.leave,
        background=keeper.keep_alive,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon accounting", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=1000, help="events per read")
    return asyncio.run(amain(parser.parse_args(argv)))
