"""Market terms a source supplies, frozen with the bot's state (SPEC 4.1 rule 6, 4.1 rule 11),
on a real redis-server: state creation waits for them, freezes them, keeps them when the
exchange changes, and takes the new ones after `bandwagon reset`; the strategy worker trades
with the frozen ones."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from libs.config import BotConfig, BotsFile, MarketTerms
from libs.errors import ConfigError, MarketTermsPending
from libs.store import bot_state, keys
from libs.store.bot_state import ensure_state, reset_bot
from libs.store.market_terms import write_supplied_terms
from services.ingest.ccxt_source import warn_of_changed_terms
from services.strategy.worker import load_partitions

OLD = {"ETH-USDT": MarketTerms(min_size="0.0001", price_decimals=2)}
NEW = {"ETH-USDT": MarketTerms(min_size="0.001", price_decimals=3)}


def live_bot(**symbol: Any) -> BotConfig:
    return BotConfig.model_validate(
        {"id": "live", "exchange": "binance", "symbols": [{"product_id": "ETH-USDT", **symbol}]}
    )


async def test_the_state_waits_for_the_source_then_freezes_its_terms(redis: Redis) -> None:
    with pytest.raises(MarketTermsPending, match="ETH-USDT"):
        await ensure_state(redis, live_bot(), 0)
    assert await redis.exists(keys.meta("live")) == 0  # nothing written while pending
    await write_supplied_terms(redis, "binance", OLD, now_ms=1)

    ready = await ensure_state(redis, live_bot(), 0)

    assert ready.created and ready.bot.symbols[0].terms == OLD["ETH-USDT"]
    frozen = orjson.loads(await redis.hget(keys.meta("live"), "config"))
    assert frozen["symbols"][0]["min_size"] == "0.0001"
    assert frozen["symbols"][0]["price_decimals"] == 2
    shown = await redis.hget(keys.symbol("live", "ETH-USDT"), "min_size")
    assert orjson.loads(shown) == "0.0001"  # SYMBOL.min_size as the exchange gives it


async def test_a_later_change_at_the_exchange_is_a_warning_and_the_frozen_terms_stay(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await write_supplied_terms(redis, "binance", OLD)
    await ensure_state(redis, live_bot(), 0)
    await write_supplied_terms(redis, "binance", NEW)

    with caplog.at_level(logging.WARNING):
        await warn_of_changed_terms(redis, live_bot(), NEW)
    ready = await ensure_state(redis, live_bot(), 0)

    assert "the exchange changed ETH-USDT: min_size 0.0001 (now 0.001)" in caplog.text
    assert "price_decimals 2 (now 3)" in caplog.text
    assert "bandwagon reset --bot live" in caplog.text
    assert not ready.created and ready.bot.symbols[0].terms == OLD["ETH-USDT"]
    [partition] = await load_partitions(redis, [live_bot()])
    assert partition.strategy.terms.min_size == "0.0001"
    assert partition.strategy.terms.price_decimals == 2

    assert await reset_bot(redis, "live") > 0
    renewed = await ensure_state(redis, live_bot(), 0)
    assert renewed.created and renewed.bot.symbols[0].terms == NEW["ETH-USDT"]


async def test_the_bots_file_may_restate_the_frozen_terms_but_not_change_them(
    redis: Redis,
) -> None:
    await write_supplied_terms(redis, "binance", OLD)
    await ensure_state(redis, live_bot(), 0)

    same = await ensure_state(redis, live_bot(min_size="0.0001"), 0)
    assert same.bot.symbols[0].terms == OLD["ETH-USDT"]
    with pytest.raises(ConfigError) as error:
        await ensure_state(redis, live_bot(min_size="0.01"), 0)
    assert "bots[live].symbols[0].min_size" in str(error.value)


async def test_the_file_overrides_the_exchange_when_the_state_is_created(redis: Redis) -> None:
    await write_supplied_terms(redis, "binance", OLD)

    ready = await ensure_state(redis, live_bot(price_decimals=4), 0)

    assert ready.bot.symbols[0].terms == MarketTerms(min_size="0.0001", price_decimals=4)


async def test_the_strategy_waits_for_the_state_of_a_bot_whose_terms_come_from_the_source(
    redis: Redis,
) -> None:
    complete = BotConfig.model_validate(
        {
            "id": "fixed",
            "symbols": [{"product_id": "BTC-USDT", "min_size": "0.1", "price_decimals": 1}],
        }
    )
    bots = BotsFile(bots=[live_bot(), complete]).bots

    before = await load_partitions(redis, bots)
    await write_supplied_terms(redis, "binance", OLD)
    await ensure_state(redis, live_bot(), 0)
    after = await load_partitions(redis, bots)

    assert [p.bot.id for p in before] == ["fixed"]  # a file with every term needs no state
    assert [p.bot.id for p in after] == ["live", "fixed"]
    assert after[0].strategy.terms.min_size == "0.0001"


async def test_replicas_racing_to_create_the_state_both_end_with_the_first_freeze(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica B reads the exchange's newer terms; replica A, which read the older ones,
    creates the state first; B's transaction fails its WATCH, and on retry B must take A's
    frozen terms, not compare the file against what it had read (a config error)."""
    await write_supplied_terms(redis, "binance", NEW)
    real = bot_state.read_supplied_terms
    raced = False

    async def racing(client: Redis, bot: BotConfig) -> dict[str, MarketTerms]:
        nonlocal raced
        found = await real(client, bot)
        if not raced:
            raced = True
            await write_supplied_terms(redis, "binance", OLD)
            assert (await ensure_state(redis, live_bot(), 0)).created  # replica A
        return found

    monkeypatch.setattr(bot_state, "read_supplied_terms", racing)
    ready = await ensure_state(redis, live_bot(), 0)  # replica B

    assert raced and not ready.created
    assert ready.bot.symbols[0].terms == OLD["ETH-USDT"]
