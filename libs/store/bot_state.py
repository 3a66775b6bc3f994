"""Creating a bot's state, freezing its trading config, and publishing its key hashes
(SPEC 2.1 rules 5 and 16, 4.1 rules 6 and 11)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import orjson
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from libs.config import BotConfig, api_key_hash
from libs.core.pnl import Ledger
from libs.core.portfolio import status_figures, symbol_figures
from libs.errors import ConfigError, MarketTermsPending
from libs.store import keys, notices
from libs.store.client import RedisNodes
from libs.store.market_terms import frozen_terms, missing_terms, read_supplied_terms
from libs.store.published import Display, stage_state_creation, write_display
from libs.store.server import read_server
from libs.wire.convert import status_wire, symbol_scalars
from libs.wire.frames import refresh_frame, with_lists


def display_of(bot: BotConfig) -> Display:
    return Display(
        product_ids=tuple(symbol.product_id for symbol in bot.symbols),
        maker_fee=bot.maker_fee,
        taker_fee=bot.taker_fee,
        kline_history=bot.kline_history,
        trade_history=bot.trade_history,
    )


def _differences(frozen: Any, current: Any, path: str) -> list[str]:
    if isinstance(frozen, dict) and isinstance(current, dict):
        found: list[str] = []
        for name in sorted(set(frozen) | set(current)):
            found += _differences(frozen.get(name), current.get(name), f"{path}.{name}")
        return found
    if isinstance(frozen, list) and isinstance(current, list) and len(frozen) == len(current):
        found = []
        for index, (old, new) in enumerate(zip(frozen, current, strict=True)):
            found += _differences(old, new, f"{path}[{index}]")
        return found
    return [] if frozen == current else [path]


def check_frozen_config(bot: BotConfig, frozen_json: str | bytes) -> None:
    """A later start with different trading config is a config error naming the bot and fields;
    the fix is to restore the config or `bandwagon reset --bot ID` (SPEC 4.1 rule 6)."""
    frozen = orjson.loads(frozen_json)
    current = orjson.loads(orjson.dumps(bot.trading_config()))
    changed = _differences(frozen, current, f"bots[{bot.id}]")
    if changed:
        raise ConfigError(
            ", ".join(changed[:5]),
            bot.id,
            "trading config differs from the one frozen with this bot's state; "
            "restore it or run `bandwagon reset --bot " + bot.id + "`",
        )


def initial_scalars(bot: BotConfig) -> list[dict[str, Any]]:
    """Every SYMBOL before any market data: price 0, no PnL (SPEC 2.1 rule 14)."""
    return [
        symbol_scalars(
            product_id=symbol.product_id,
            exchange=bot.exchange,
            min_size=symbol.terms.min_size,
            leverage=symbol.leverage,
            isolated=symbol.isolated,
            figures=symbol_figures(Ledger(allocation=bot.allocation(index)), 0.0),
            signal=None,
        )
        for index, symbol in enumerate(bot.symbols)
    ]


def initial_status(bot: BotConfig, time_zone_offset_min: int) -> dict[str, Any]:
    figures = [
        symbol_figures(Ledger(allocation=bot.allocation(i)), 0.0) for i in range(len(bot.symbols))
    ]
    return status_wire(
        status_figures(bot.start_capital, figures),
        exchange=bot.exchange,
        start_time_ms=0,
        time_zone_offset_min=time_zone_offset_min,
        enabled=bot.enabled,
    )


def first_refresh(epoch: str, symbols: list[dict[str, Any]], status: dict[str, Any]) -> bytes:
    """Refresh seq 1: every symbol, empty `klines` and `trades` (SPEC 2.1 rule 5)."""
    listed = [with_lists(scalars, trades=[], klines=[]) for scalars in symbols]
    return refresh_frame(seq=1, epoch=epoch, symbols=listed, status=status)


class StateReady(NamedTuple):
    bot: BotConfig
    """The bot as its state froze it: market terms the bots file leaves out filled in."""
    created: bool
    """This call created the state."""


def thawed(bot: BotConfig, frozen_json: str | bytes) -> BotConfig:
    """The configured bot with the market terms it left to the source taken from its frozen
    config, checked against it: what the workers trade with (SPEC 4.1 rule 6)."""
    resolved = bot.with_market_terms(frozen_terms(frozen_json))
    check_frozen_config(resolved, frozen_json)
    return resolved


async def freeze_strategy_parameters(
    redis: Redis, bot: BotConfig, parameters: Mapping[str, Any]
) -> None:
    """A plug-in's parameters as its own model validated them, defaults included, frozen with
    the bot's state at its first load and checked at every later one (SPEC 3.2 rule 1, 4.1
    rule 6): the bots file may leave a parameter to the plug-in's default, and a new version of
    the plug-in must not change it silently. Built-ins' are frozen in the config itself."""
    meta_key = keys.meta(bot.id)
    current = orjson.dumps(dict(parameters), option=orjson.OPT_SORT_KEYS)
    await redis.hsetnx(meta_key, "strategy_parameters", current)
    frozen_json = await redis.hget(meta_key, "strategy_parameters")
    if frozen_json is None:
        return  # reset meanwhile: the next load freezes them
    frozen = orjson.loads(frozen_json)
    changed = _differences(frozen, orjson.loads(current), f"bots[{bot.id}].strategy")
    if changed:
        raise ConfigError(
            ", ".join(changed),
            bot.strategy.name,
            "the plug-in's parameters differ from those frozen with this bot's state; "
            f"restore them or run `bandwagon reset --bot {bot.id}`",
        )


async def ensure_state(
    nodes: Redis | RedisNodes, bot: BotConfig, time_zone_offset_min: int
) -> StateReady:
    """Create the bot's state unless it exists, else check the frozen config. WATCH makes two
    accounting replicas starting at once create it only once. Market terms the bots file
    leaves out are taken from the source's report (`libs.store.market_terms`) and frozen with the
    state; MarketTermsPending while the source has not reported them. A new state records the
    redis-server it is created on (`libs.store.server.ServerRecord`, SPEC 2.1 rule 19)."""
    meta_key = keys.meta(bot.id)
    display = display_of(bot)
    nodes = RedisNodes.wrapping(nodes)
    redis = nodes.for_bot(bot.id)
    while True:
        async with redis.pipeline(transaction=True) as tx:
            try:
                await tx.watch(meta_key)
                frozen = await tx.hget(meta_key, "config")
                if frozen is not None:
                    resolved = thawed(bot, frozen)
                    await write_display(redis, bot.id, display)
                    return StateReady(resolved, created=False)
                # resolved anew on every pass: after a WatchError another replica may have
                # frozen other terms, which `thawed` must compare with the file, not with ours
                resolved = bot
                if not resolved.has_market_terms:
                    resolved = bot.with_market_terms(await read_supplied_terms(nodes, bot))
                    if not resolved.has_market_terms:
                        raise MarketTermsPending(bot.id, missing_terms(resolved))
                epoch = secrets.token_hex(8)
                symbols = initial_scalars(resolved)
                status = initial_status(resolved, time_zone_offset_min)
                text = first_refresh(epoch, symbols, status)
                # the server the new history starts on (SPEC 2.1 rule 19), read on the watching
                # connection: the very server EXEC runs on
                server = await read_server(tx)
                tx.multi()  # type: ignore[no-untyped-call]
                stage_state_creation(
                    tx,
                    bot=bot.id,
                    epoch=epoch,
                    refresh_text=text,
                    status=status,
                    symbols=symbols,
                    meta={
                        "config": orjson.dumps(resolved.trading_config()),
                        "display": display.to_json(),
                        **server.record.fields(),
                    },
                )
                if bot.notify:  # the webhooks hear of it (SPEC 6.1 rule 2: created or reset)
                    now_ms = int(time.time() * 1000)
                    notices.stage_epoch(tx, bot=bot.id, epoch=epoch, time_ms=now_ms)
                await tx.execute()
                return StateReady(resolved, created=True)
            except WatchError:
                continue


async def publish_api_keys(redis: Redis, api_keys: Mapping[str, SecretStr]) -> None:
    """Make `bw:apikeys` hold exactly the configured keys' hashes, so a removed or rotated key
    is refused at once (SPEC 2.1 rule 16)."""
    wanted: dict[FieldT, EncodableT] = {
        api_key_hash(key.get_secret_value()): bot for bot, key in api_keys.items()
    }
    current = await redis.hgetall(keys.api_keys())
    stale = [digest for digest in current if digest not in wanted]
    async with redis.pipeline(transaction=True) as tx:
        if stale:
            tx.hdel(keys.api_keys(), *stale)
        if wanted:
            tx.hset(keys.api_keys(), mapping=wanted)
        await tx.execute()


async def live_owners(redis: Redis, bot_id: str) -> list[str]:
    """`<partition>: <owner>` for each unexpired lease on the bot: workers that would go on
    writing it from memory after a reset."""
    owners: list[str] = []
    prefix = keys.lease(bot_id, "")
    async for key in redis.scan_iter(match=keys.lease(bot_id, "*"), count=500):
        value = cast(str | None, await redis.get(key))  # decode_responses=True
        if value is not None:
            owners.append(f"{str(key).removeprefix(prefix)}: {value.rpartition(':')[0]}")
    return sorted(owners)


async def reset_bot(redis: Redis, bot_id: str) -> int:
    """Delete every key of one bot (its `{bot}` slot); nothing else. Market streams are shared
    and stay, and so do its key hashes: the key is still configured, so until accounting creates
    the state anew its clients get `unavailable` and retry, never `unauthorized` (SPEC 2.1 rule
    18); accounting drops a key from the registry when the bots file does. Returns the number of
    keys deleted."""
    doomed = [key async for key in redis.scan_iter(match=keys.bot_keys_pattern(bot_id), count=500)]
    if doomed:
        await redis.delete(*doomed)  # one slot, one command: atomic
    return len(doomed)
