"""Market terms (`min_size`, `price_decimals`) a source supplies, and the ones a bot froze.

The `ccxt` source reads them from the exchange's markets and stores them per market
(`keys.market_terms`); every other source stores SPEC 4.1 rule 10's defaults (`DEFAULT_TERMS`)
for the markets whose bots file leaves them out. A bot whose bots file leaves them out takes
them from there when its state is created; from then on the frozen copy in its trading config
is what it trades with, whatever the exchange says later (SPEC 4.1 rule 6): a change is only a
warning, until `bandwagon reset --bot ID`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from libs.config import BotConfig, MarketTerms
from libs.store import keys
from libs.store.client import RedisNodes

log = logging.getLogger(__name__)


def frozen_terms(frozen_json: str | bytes) -> dict[str, MarketTerms]:
    """The terms each symbol was frozen with, by product id (a bot frozen before terms could
    be left out has them all)."""
    frozen: dict[str, Any] = orjson.loads(frozen_json)
    found: dict[str, MarketTerms] = {}
    for symbol in frozen.get("symbols", []):
        if symbol.get("min_size") is not None and symbol.get("price_decimals") is not None:
            found[symbol["product_id"]] = MarketTerms(
                min_size=symbol["min_size"], price_decimals=symbol["price_decimals"]
            )
    return found


def changed_terms(
    bot: BotConfig, frozen: Mapping[str, MarketTerms], supplied: Mapping[str, MarketTerms]
) -> list[str]:
    """`<product>: min_size 0.001 (exchange now 0.01)` for each term the bots file leaves to
    the source whose frozen value the source no longer reports."""
    changes: list[str] = []
    for symbol in bot.symbols:
        old, new = frozen.get(symbol.product_id), supplied.get(symbol.product_id)
        if old is None or new is None:
            continue
        if symbol.min_size is None and old.min_size != new.min_size:
            changes.append(f"{symbol.product_id}: min_size {old.min_size} (now {new.min_size})")
        if symbol.price_decimals is None and old.price_decimals != new.price_decimals:
            changes.append(
                f"{symbol.product_id}: price_decimals {old.price_decimals} "
                f"(now {new.price_decimals})"
            )
    return changes


def missing_terms(bot: BotConfig) -> list[str]:
    return [symbol.product_id for symbol in bot.symbols if not symbol.has_market_terms]


# --- Redis ---------------------------------------------------------------------------------------


async def write_supplied_terms(
    redis: Redis | RedisNodes,
    exchange: str,
    terms: Mapping[str, MarketTerms],
    now_ms: int | None = None,
) -> None:
    """What the source says now, one hash per market, replacing what it said before."""
    updated_ms = int(time.time() * 1000) if now_ms is None else now_ms
    nodes = RedisNodes.wrapping(redis)
    by_key = {keys.market_terms(exchange, product): found for product, found in terms.items()}
    for node, names in nodes.by_node(by_key).items():
        async with node.pipeline(transaction=False) as pipe:
            for name in names:
                found = by_key[name]
                pipe.hset(
                    name,
                    mapping={
                        "min_size": found.min_size,
                        "price_decimals": found.price_decimals,
                        "updated_ms": updated_ms,
                    },
                )
            await pipe.execute()


async def store_terms_until_stored(
    redis: Redis | RedisNodes,
    terms_by_exchange: Mapping[str, Mapping[str, MarketTerms]],
    stop: asyncio.Event,
    then: Callable[[str, Mapping[str, MarketTerms]], Awaitable[None]] | None = None,
) -> None:
    """`write_supplied_terms` for each exchange (and `then` after each), retried with a capped
    backoff while Redis is unreachable, until stored or `stop`: a bot waiting for its terms
    must get them once Redis is back, whenever the source started."""
    delay_s = 0.5
    while not stop.is_set():
        try:
            for exchange, terms in terms_by_exchange.items():
                await write_supplied_terms(redis, exchange, terms)
                if then is not None:
                    await then(exchange, terms)
            return
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("market terms not stored yet (%s); retrying in %g s", error, delay_s)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay_s)
            except TimeoutError:
                delay_s = min(delay_s * 2, 10.0)


async def read_supplied_terms(redis: Redis | RedisNodes, bot: BotConfig) -> dict[str, MarketTerms]:
    """The source's terms of the bot's symbols whose terms the bots file leaves out."""
    nodes = RedisNodes.wrapping(redis)
    found: dict[str, MarketTerms] = {}
    for product_id in missing_terms(bot):
        name = keys.market_terms(bot.exchange, product_id)
        fields = await nodes.for_key(name).hgetall(name)
        if fields:  # decode_responses=True: str fields
            found[product_id] = MarketTerms(
                min_size=fields["min_size"], price_decimals=int(fields["price_decimals"])
            )
    return found
