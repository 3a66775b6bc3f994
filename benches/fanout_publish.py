"""The fan-out bench's Redis side: the bench bots' state and a refresh publisher that commits
refreshes the way accounting does (`libs.store.stage_refresh_commit`: hashes, seq, log entry and
PUBLISH in one MULTI), so a gateway's seq logic accepts them.

    python -m benches.fanout_publish --redis-url URL --bot BOT --rate R --seconds S --out F

Each refresh is a realistic ~4 KB refresh of 3 symbols (every scalar, the closed and the forming
kline of each symbol with their bands, a fill now and then). The publisher records, per seq, the
CLOCK_MONOTONIC time just before its EXEC, and stops by itself after `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from benches.data import MINUTE_MS, START_TIME_MS
from libs.config import BotConfig, BotsFile, load_bots
from libs.store import keys
from libs.store.bot_state import display_of, ensure_state, initial_scalars, initial_status
from libs.store.published import SymbolCommit, stage_refresh_commit
from libs.wire.frames import refresh_frame, with_lists

BOTS_YAML = """\
bots:
{bots}
"""
BOT_YAML = """\
  - id: {id}
    api_key_env: {key_env}
    exchange: mexc
    kline_size: 1m
    start_capital: 1000
    refresh_interval_ms: 1000
    kline_history: 300
    trade_history: 500
    symbols:
      - {{product_id: ETH-USDT, min_size: "0.00001", price_decimals: 2, leverage: 10}}
      - {{product_id: BTC-USDT, min_size: "0.000001", price_decimals: 1, leverage: 5}}
      - {{product_id: SOL-USDT, min_size: "0.001", price_decimals: 3, leverage: 3, isolated: false}}
"""
BASE_PRICES = {"ETH-USDT": 3012.34, "BTC-USDT": 64123.5, "SOL-USDT": 143.217}


def write_bots_file(path: Path, bots: dict[str, str]) -> BotsFile:
    """A bots file of 3-symbol bots (id -> the variable holding its key)."""
    text = "".join(BOT_YAML.format(id=bot, key_env=env) for bot, env in bots.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BOTS_YAML.format(bots=text.rstrip("\n")))
    return load_bots(path)


def kline(product_id: str, index: int) -> dict[str, Any]:
    """A kline as `kline_wire` spells it, bands included."""
    base = BASE_PRICES[product_id]
    close = round(base * (1 + 0.001 * math.sin(index / 7)), 2)
    time_ms = START_TIME_MS + index * MINUTE_MS
    middle = round(base * (1 + 0.0007 * math.sin(index / 9)), 6)
    return {
        "period_id": f"m{time_ms // MINUTE_MS}",
        "time": time_ms,
        "size": "1m",
        "close_time": time_ms + MINUTE_MS - 1,
        "open": round(close * 0.9995, 2),
        "high": round(close * 1.0012, 2),
        "low": round(close * 0.9987, 2),
        "close": close,
        "volume": round(12.5 + index % 17 * 0.731, 4),
        "strategy": {
            "BollingerBands_buyCrossCount": index % 3,
            "BollingerBands_sellCrossCount": index % 5,
            "BollingerBands_buy": index % 3 == 0,
            "BollingerBands_sell": False,
            "middle": middle,
            "upper": round(middle * 1.0123456, 6),
            "lower": round(middle * 0.9876543, 6),
            "pb": 0.4123456789012345,
            "pw": 2.469135802469136,
        },
    }


def trade(product_id: str, order_id: int) -> dict[str, Any]:
    """A fill as `trade_wire` spells it."""
    price = BASE_PRICES[product_id] * (1 + 0.0001 * (order_id % 13))
    return {
        "order_id": order_id,
        "time": START_TIME_MS + order_id * 61_000,
        "execution_time": 2_000,
        "slippage": 0.05,
        "type": "buy" if order_id % 2 else "sell",
        "size": "0.06512",
        "fee": 0.19612345678901234,
        "price": f"{price:.2f}",
        "order_type": "maker",
        "action": "BollingerBands_buy_long" if order_id % 2 else "BollingerBands_sell_long",
        "profit": -0.0010000000000000002,
        "usdtProfit": -0.19612345678901234,
        "position_side": "long",
    }


class RefreshMaker:
    """Refreshes seq+1, seq+2, ... of one bot, each with its commit parts."""

    def __init__(self, bot: BotConfig, epoch: str, seq: int) -> None:
        self.bot = bot
        self.epoch = epoch
        self.seq = seq
        self.scalars = initial_scalars(bot)
        self.status = initial_status(bot, 0)
        self.order_id = 10_000

    def next(self) -> tuple[int, bytes, list[SymbolCommit]]:
        self.seq += 1
        seq = self.seq
        listed: list[dict[str, Any]] = []
        commits: list[SymbolCommit] = []
        for scalars in self.scalars:
            product_id = scalars["product_id"]
            klines = [kline(product_id, seq), kline(product_id, seq + 1)]
            trades = []
            if seq % 10 == 0:
                self.order_id += 1
                trades.append(trade(product_id, self.order_id))
            scalars = {
                **scalars,
                "price": klines[-1]["close"],
                "dynamicUsdtProfit": 0.123456789 * (seq % 11),
                "dynamicProfit": 0.000123456789 * (seq % 11),
                "signal": "buying" if seq % 2 else "bought",
            }
            listed.append(with_lists(scalars, trades=trades, klines=klines))
            commits.append(
                SymbolCommit(
                    product_id=product_id,
                    scalars=scalars,
                    replaced_klines=1,
                    klines=[orjson.dumps(k) for k in klines],
                    trades=[orjson.dumps(t) for t in trades],
                )
            )
        status = {**self.status, "dynamicUsdtProfit": 0.370370367 * (seq % 11)}
        text = refresh_frame(seq=seq, epoch=self.epoch, symbols=listed, status=status)
        return seq, text, commits


async def commit(redis: Redis, maker: RefreshMaker) -> tuple[int, int, int]:
    """Commit and publish the next refresh; (seq, monotonic ns before EXEC, its size)."""
    seq, text, commits = maker.next()
    bot = maker.bot
    async with redis.pipeline(transaction=True) as tx:
        stage_refresh_commit(
            tx,
            bot=bot.id,
            seq=seq,
            refresh_text=text,
            status=maker.status,
            symbols=commits,
            display=display_of(bot),
            refresh_log_len=bot.refresh_log_len,
            accounting_fields={"checkpoint": "0-0"},
        )
        started_ns = time.monotonic_ns()
        await tx.execute()
    return seq, started_ns, len(text)


async def maker_for(redis: Redis, bot: BotConfig) -> RefreshMaker:
    await ensure_state(redis, bot, 0)
    seq_text, epoch = await redis.hmget(keys.meta(bot.id), ["seq", "epoch"])
    return RefreshMaker(bot, str(epoch), int(seq_text or 1))


async def seed_history(redis: Redis, bot: BotConfig, klines: int, trades: int) -> None:
    """Fill the bot's lists to a full `init`: `klines` klines and `trades` fills per symbol."""
    async with redis.pipeline(transaction=True) as tx:
        for symbol in bot.symbols:
            product_id = symbol.product_id
            tx.delete(keys.klines(bot.id, product_id), keys.trades(bot.id, product_id))
            tx.rpush(
                keys.klines(bot.id, product_id),
                *[orjson.dumps(kline(product_id, i)) for i in range(klines)],
            )
            tx.rpush(
                keys.trades(bot.id, product_id),
                *[orjson.dumps(trade(product_id, i)) for i in range(1, trades + 1)],
            )
        await tx.execute()


async def trim_history(redis: Redis, bot: BotConfig) -> None:
    """Keep the bot's newest 2 klines per symbol and no trade, so each client's `init` stays a
    few KiB and the steady-state figures (RSS per connection above all) are not an init's."""
    async with redis.pipeline(transaction=True) as tx:
        for symbol in bot.symbols:
            tx.ltrim(keys.klines(bot.id, symbol.product_id), -2, -1)
            tx.delete(keys.trades(bot.id, symbol.product_id))
        await tx.execute()


async def publish(
    redis_url: str, config: Path, bot_id: str, rate: float, seconds: float
) -> dict[str, Any]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    bot = next(b for b in load_bots(config).bots if b.id == bot_id)
    maker = await maker_for(redis, bot)
    published: dict[int, int] = {}
    sizes: list[int] = []
    interval_ns = int(1e9 / rate)
    start_ns = time.monotonic_ns()
    deadline_ns = start_ns + int(seconds * 1e9)
    tick = 0
    while True:
        due_ns = start_ns + tick * interval_ns
        if due_ns >= deadline_ns:
            break
        delay_ns = due_ns - time.monotonic_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        seq, at_ns, size = await commit(redis, maker)
        published[seq] = at_ns
        sizes.append(size)
        tick += 1
    elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
    await redis.aclose()
    return {
        "published": published,
        "rate": len(published) / elapsed_s if elapsed_s else 0.0,
        "bytes": sum(sizes) / max(1, len(sizes)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.fanout_publish", description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--bot", required=True)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    done = asyncio.run(publish(args.redis_url, args.config, args.bot, args.rate, args.seconds))
    args.out.write_bytes(orjson.dumps(done, option=orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
