"""`bandwagon reset --bot ID`: start one bot over, explicitly (SPEC 2.1 rule 5, 4.1 rule 6).

Deletes the bot's state (status, trades, klines, refresh log, checkpoints, frozen config, and
its pending webhook deliveries) and nothing else. Stop the bot's strategy, accounting and notify
workers first (it refuses while they hold leases on the bot, unless --force): they keep the bot
in memory. With Redis users on (SPEC 4.1 rule 14), run it as `admin` (REDIS_USERNAME,
REDIS_PASSWORD). On their next start the bot is
created anew with a new epoch, and clients re-init.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import cast

from libs.config import BOT_ID_PATTERN, Settings, load_settings
from libs.errors import ConfigError
from libs.store.bot_state import live_owners, reset_bot
from libs.store.client import RedisNodes


async def _on_bot_node(settings: Settings, bot_id: str, reset: bool) -> list[str] | int:
    """On a cluster, every key of the bot is on its slot's master (SPEC 4.1 rule 13)."""
    nodes = RedisNodes.for_settings(settings, decode_responses=True)
    try:
        await nodes.refresh()
        redis = nodes.for_bot(bot_id)
        return await (reset_bot(redis, bot_id) if reset else live_owners(redis, bot_id))
    finally:
        await nodes.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon reset", description=__doc__)
    parser.add_argument("--bot", required=True, help="the bot id to start over")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--force",
        action="store_true",
        help="reset even while workers hold the bot's partitions (they keep its state in memory "
        "and would write it back; stop them first)",
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(BOT_ID_PATTERN, args.bot):
        raise ConfigError("--bot", args.bot, f"must match {BOT_ID_PATTERN}")
    settings = load_settings()
    owners = cast(list[str], asyncio.run(_on_bot_node(settings, args.bot, reset=False)))
    if owners and not args.force:
        print(
            f"bot {args.bot} is being worked on ({'; '.join(owners)}): stop its strategy, "
            "accounting and notify workers first, or pass --force; nothing deleted",
            file=sys.stderr,
        )
        return 2
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to reset without --yes when not on a terminal", file=sys.stderr)
            return 2
        answer = input(f"Delete every trade, status and checkpoint of bot {args.bot!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    deleted = asyncio.run(_on_bot_node(settings, args.bot, reset=True))
    print(f"bot {args.bot}: {deleted} keys deleted; restart its workers to start it over")
    return 0
