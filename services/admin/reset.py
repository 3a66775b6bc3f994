"""`bandwagon reset --bot ID`: start one bot over, explicitly (SPEC 2.1 rule 5, 4.1 rule 6).

Deletes the bot's state (status, trades, klines, refresh log, checkpoints, frozen config) and
nothing else. Stop the bot's strategy and accounting workers first; on their next start the bot is
created anew with a new epoch, and clients re-init.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from redis.asyncio import Redis

from libs.bot_state import reset_bot
from libs.config import BOT_ID_PATTERN, load_settings
from libs.errors import ConfigError


async def _reset(redis_url: str, bot_id: str) -> int:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        return await reset_bot(redis, bot_id)
    finally:
        await redis.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon reset", description=__doc__)
    parser.add_argument("--bot", required=True, help="the bot id to start over")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    if not re.fullmatch(BOT_ID_PATTERN, args.bot):
        raise ConfigError("--bot", args.bot, f"must match {BOT_ID_PATTERN}")
    settings = load_settings()
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to reset without --yes when not on a terminal", file=sys.stderr)
            return 2
        answer = input(f"Delete every trade, status and checkpoint of bot {args.bot!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    deleted = asyncio.run(_reset(settings.redis_url, args.bot))
    print(f"bot {args.bot}: {deleted} keys deleted; restart its workers to start it over")
    return 0
