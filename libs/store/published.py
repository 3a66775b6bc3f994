"""A bot's published state in Redis: written by accounting in one atomic commit per refresh, read
by gateways to build `init` (SPEC 2.1 rules 5, 6 and 11).

Writer and reader share this module so the layout has one definition: every write to it (a
refresh, a state's creation, a new epoch, the server record) is staged here, whoever commits
it. Everything of a bot sits in its `{bot}` slot, so one MULTI/EXEC covers status hashes, seq,
log entry and checkpoint, and one MULTI/EXEC reads a consistent snapshot. The bot's meta also
names the redis-server its history was last vouched for on (`libs.store.server`, SPEC 2.1
rule 19; `services.accounting.history`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from libs.errors import StateMissing
from libs.store import keys
from libs.store.server import SERVER_FIELDS, ServerRecord, text_of
from libs.wire.frames import init_frame, with_lists
from libs.wire.status import STATUS_FIELDS, SYMBOL_SCALAR_FIELDS

JSONValue = Any


@dataclass(frozen=True, slots=True)
class Display:
    """What `init` needs besides the hashes; rewritten by accounting at every start, since
    fees are frozen but `kline_history` and `trade_history` may change (SPEC 4.1 rule 6)."""

    product_ids: tuple[str, ...]
    maker_fee: float
    taker_fee: float
    kline_history: int
    trade_history: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "product_ids": list(self.product_ids),
                "maker_fee": self.maker_fee,
                "taker_fee": self.taker_fee,
                "kline_history": self.kline_history,
                "trade_history": self.trade_history,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Display:
        raw = orjson.loads(text)
        return cls(
            product_ids=tuple(raw["product_ids"]),
            maker_fee=raw["maker_fee"],
            taker_fee=raw["taker_fee"],
            kline_history=raw["kline_history"],
            trade_history=raw["trade_history"],
        )


def encode_fields(fields: Mapping[str, JSONValue]) -> dict[FieldT, EncodableT]:
    """Hash fields hold JSON values, so `redis-cli HGETALL` shows them and types survive."""
    return {name: orjson.dumps(value) for name, value in fields.items()}


@dataclass(frozen=True, slots=True)
class SymbolCommit:
    """One symbol's part of a commit. `replaced_klines` counts trailing list items that the new
    `klines` replace (a kline updated since the last refresh); the list is then trimmed."""

    product_id: str
    scalars: Mapping[str, JSONValue]
    replaced_klines: int
    klines: Sequence[bytes]
    trades: Sequence[bytes]
    fills: Sequence[bytes] = ()
    """Every fill this refresh publishes, `trades` being only its newest `trade_history`: what
    the bot's webhooks hear (SPEC 6.1 rule 2, every TRADE)."""


def stage_refresh_commit(
    tx: Pipeline,
    *,
    bot: str,
    seq: int,
    refresh_text: bytes,
    status: Mapping[str, JSONValue],
    symbols: Sequence[SymbolCommit],
    display: Display,
    refresh_log_len: int,
    accounting_fields: Mapping[FieldT, EncodableT],
) -> None:
    """Queue, on a MULTI pipeline, everything refresh `seq` changes: it lands whole or not at all.

    The PUBLISH is inside the transaction too, so no gateway can see refresh `seq` before the
    snapshot that `init` would read at `seq`.
    """
    tx.hset(keys.status(bot), mapping=encode_fields(status))
    for symbol in symbols:
        tx.hset(keys.symbol(bot, symbol.product_id), mapping=encode_fields(symbol.scalars))
        klines_key = keys.klines(bot, symbol.product_id)
        for _ in range(symbol.replaced_klines):
            tx.rpop(klines_key)
        if symbol.klines:
            tx.rpush(klines_key, *symbol.klines)
            tx.ltrim(klines_key, -display.kline_history, -1)
        if symbol.trades:
            trades_key = keys.trades(bot, symbol.product_id)
            tx.rpush(trades_key, *symbol.trades)
            tx.ltrim(trades_key, -display.trade_history, -1)
    tx.hset(keys.meta(bot), mapping={"seq": str(seq)})
    tx.xadd(
        keys.refresh_log(bot),
        {"msg": refresh_text},
        id=f"{seq}-0",
        maxlen=refresh_log_len,
        approximate=True,
    )
    tx.hset(keys.accounting_state(bot), mapping=dict(accounting_fields))
    tx.publish(keys.refresh_channel(bot), refresh_text)


def stage_first_refresh(
    tx: Pipeline, *, bot: str, epoch: str, refresh_text: bytes, meta: Mapping[FieldT, EncodableT]
) -> None:
    """Queue, on a MULTI pipeline, the start of a history: epoch `epoch` at seq 1, its refresh
    1 as the only log entry (the old epoch's log goes, so no client resumes across it, SPEC 2.1
    rules 5 and 15) and published, with `meta`'s other fields (the server record...)."""
    tx.delete(keys.refresh_log(bot))
    tx.hset(keys.meta(bot), mapping={"epoch": epoch, "seq": "1", **meta})
    tx.xadd(keys.refresh_log(bot), {"msg": refresh_text}, id="1-0")
    tx.publish(keys.refresh_channel(bot), refresh_text)


def stage_state_creation(
    tx: Pipeline,
    *,
    bot: str,
    epoch: str,
    refresh_text: bytes,
    status: Mapping[str, JSONValue],
    symbols: Sequence[Mapping[str, JSONValue]],
    meta: Mapping[FieldT, EncodableT],
) -> None:
    """Queue a new state (SPEC 4.1 rule 11, or anew after `bandwagon reset`): STATUS and every
    SYMBOL's scalars as refresh 1 shows them, no klines, trades or accounting checkpoint left
    from before, and the history started (`stage_first_refresh`)."""
    product_ids = [str(scalars["product_id"]) for scalars in symbols]
    tx.delete(
        keys.accounting_state(bot),
        *(keys.klines(bot, product_id) for product_id in product_ids),
        *(keys.trades(bot, product_id) for product_id in product_ids),
    )
    tx.hset(keys.status(bot), mapping=encode_fields(status))
    for product_id, scalars in zip(product_ids, symbols, strict=True):
        tx.hset(keys.symbol(bot, product_id), mapping=encode_fields(scalars))
    stage_first_refresh(tx, bot=bot, epoch=epoch, refresh_text=refresh_text, meta=meta)


async def write_display(redis: Redis, bot: str, display: Display) -> None:
    """What `init` shows besides the hashes, as this start's config says (it may change)."""
    await redis.hset(keys.meta(bot), "display", display.to_json())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent read of everything `init` shows, at refresh `seq` (SPEC 2.1 rule 6)."""

    seq: int
    epoch: str
    display: Display
    status: dict[str, JSONValue]
    symbols: list[dict[str, JSONValue]]


async def read_snapshot(redis: Redis, bot: str) -> Snapshot:
    """Read meta first (for the symbol list), then every hash and list in one MULTI. Raises
    StateMissing before the bot's state is created."""
    display_json = await redis.hget(keys.meta(bot), "display")
    if display_json is None:
        raise StateMissing(bot)
    display = Display.from_json(display_json)
    async with redis.pipeline(transaction=True) as tx:
        tx.hmget(keys.meta(bot), ["seq", "epoch", "display"])
        tx.hgetall(keys.status(bot))
        for product_id in display.product_ids:
            tx.hgetall(keys.symbol(bot, product_id))
            tx.lrange(keys.klines(bot, product_id), -display.kline_history, -1)
            tx.lrange(keys.trades(bot, product_id), -display.trade_history, -1)
        replies = await tx.execute()
    seq_text, epoch, display_now = replies[0]
    if seq_text is None or epoch is None:
        raise StateMissing(bot)
    if display_now != display_json:  # reset or restart between the two reads: use the new one
        return await read_snapshot(redis, bot)
    status_raw: dict[str, str] = replies[1]
    status = {name: orjson.loads(status_raw[name]) for name in STATUS_FIELDS}
    symbols: list[dict[str, JSONValue]] = []
    for index in range(len(display.product_ids)):
        scalars_raw, klines_raw, trades_raw = replies[2 + 3 * index : 5 + 3 * index]
        scalars = {name: orjson.loads(scalars_raw[name]) for name in SYMBOL_SCALAR_FIELDS}
        trades = [orjson.loads(item) for item in trades_raw]
        klines = [orjson.loads(item) for item in klines_raw]
        symbols.append(with_lists(scalars, trades=trades, klines=klines))
    return Snapshot(seq=int(seq_text), epoch=epoch, display=display, status=status, symbols=symbols)


def init_message(snapshot: Snapshot) -> bytes:
    """The `init` frame (`libs.wire.frames.init_frame`) of a snapshot."""
    return init_frame(
        seq=snapshot.seq,
        epoch=snapshot.epoch,
        maker_fee=snapshot.display.maker_fee,
        taker_fee=snapshot.display.taker_fee,
        symbols=snapshot.symbols,
        status=snapshot.status,
    )


def stage_server_record(tx: Pipeline, *, bot: str, server: ServerRecord) -> None:
    """Queue: the bot's history continues on `server` (SPEC 2.1 rule 19)."""
    tx.hset(keys.meta(bot), mapping=server.fields())


async def read_server_record(redis: Redis, bot: str) -> ServerRecord | None:
    """The server the bot's meta names; None for state written before the record existed."""
    run_id, appendfsync, replid = await redis.hmget(keys.meta(bot), list(SERVER_FIELDS))
    if run_id is None:
        return None
    return ServerRecord(text_of(run_id), text_of(appendfsync or "unknown"), text_of(replid or ""))
