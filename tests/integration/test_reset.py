import asyncio

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from libs.config import BotConfig, api_key_hash
from libs.errors import ConfigError
from libs.store import keys
from libs.store.bot_state import ensure_state, live_owners, publish_api_keys, reset_bot
from libs.store.leases import LeaseKeeper
from libs.store.partitions import accounting_partitions
from tools.reset import main as reset_main
from tools.run.redis_server import RedisServer


def bot(bot_id: str) -> BotConfig:
    symbols = [{"product_id": "ETH-USDT", "min_size": "0.001", "price_decimals": 2}]
    return BotConfig.model_validate({"id": bot_id, "symbols": symbols})


async def test_reset_clears_one_bot_and_nothing_else(redis: Redis) -> None:
    for bot_id in ("one", "two"):
        await ensure_state(redis, bot(bot_id), 0)
    await publish_api_keys(
        redis, {"one": SecretStr("key-of-bot-one-000"), "two": SecretStr("key-of-bot-two-000")}
    )
    await redis.xadd(keys.market_stream("mexc", "ETH-USDT", "1m"), {"time": "1"})
    first_epoch = await redis.hget(keys.meta("one"), "epoch")

    assert await reset_bot(redis, "one") > 0

    assert await redis.keys("bw:{one}:*") == []
    # the key is still configured: its clients get `unavailable` until the state is back, not a
    # 4401 that tells them never to retry (SPEC 2.1 rule 18)
    assert await redis.hget(keys.api_keys(), api_key_hash("key-of-bot-one-000")) == "one"
    assert await redis.hget(keys.api_keys(), api_key_hash("key-of-bot-two-000")) == "two"
    assert await redis.exists(keys.meta("two"), keys.status("two")) == 2
    assert await redis.xlen(keys.market_stream("mexc", "ETH-USDT", "1m")) == 1
    assert (await ensure_state(redis, bot("one"), 0)).created  # anew, with a new epoch
    assert await redis.hget(keys.meta("one"), "epoch") != first_epoch


async def test_a_changed_trading_config_is_a_config_error_naming_the_fields(redis: Redis) -> None:
    await ensure_state(redis, bot("one"), 0)
    changed = bot("one").model_copy(update={"maker_fee": 0.2, "refresh_interval_ms": 500})
    with pytest.raises(ConfigError) as error:
        await ensure_state(redis, changed, 0)
    assert "bots[one].maker_fee" in str(error.value)
    assert "refresh_interval_ms" not in str(error.value)  # may change freely (SPEC 4.1 rule 6)
    relaxed = bot("one").model_copy(update={"kline_history": 100, "enabled": False})
    assert (await ensure_state(redis, relaxed, 0)).created is False


async def test_reset_refuses_while_a_worker_holds_the_bot_unless_forced(
    redis: Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_state(redis, bot("one"), 0)
    keeper = LeaseKeeper(
        redis,
        service="accounting",
        worker_id="acc-7",
        partitions=accounting_partitions([bot("one")]),
    )
    await keeper.beat()
    assert await live_owners(redis, "one") == ["accounting: acc-7"]
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert await asyncio.to_thread(reset_main, ["--bot", "one", "--yes"]) == 2
    assert await redis.exists(keys.meta("one")) == 1, "nothing deleted"
    await keeper.leave()
    assert await live_owners(redis, "one") == []
    assert await asyncio.to_thread(reset_main, ["--bot", "one", "--yes"]) == 0
    assert await redis.exists(keys.meta("one")) == 0
    await ensure_state(redis, bot("one"), 0)
    await keeper.beat()
    assert await asyncio.to_thread(reset_main, ["--bot", "one", "--yes", "--force"]) == 0
    assert await redis.keys("bw:{one}:*") == []
