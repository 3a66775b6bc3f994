"""The notify feed and the pending deliveries in Redis (SPEC 6.1 rules 2, 4 and 5).

Deliveries are created exactly once per (id, webhook) from committed fills only, whatever
crashes in between, by two commits that each land whole or not at all:

1. accounting, in the MULTI that publishes a refresh, appends the refresh's fills to the bot's
   notify feed (and the MULTI that starts an epoch appends the epoch): a fill is in the feed
   if and only if a refresh published it;
2. the notify worker, in one fenced MULTI, appends each feed entry's deliveries to each webhook's
   queue and moves its feed checkpoint past the entry: a crash before EXEC creates nothing and
   the entries are read again, a crash after it finds the checkpoint moved.

A queue entry leaves only after its 2xx (or 24 h of failures), so everything pending survives
a restart of any service or of Redis, as durably as Redis keeps writes (4.1 rule 12).
Writer and reader share this module, so the layout has one definition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from libs.store import keys
from libs.wire.notify_events import NotifyEvent

FEED_LEN = 100_000
"""The feed's cap, for a notify worker that is not running: entries it has not turned into
deliveries when the cap trims them are lost, and reported when it comes back (a trimmed
checkpoint). Bots without webhooks get no feed at all."""

EPOCH = "epoch"
FILL = "fill"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One feed entry, decoded: a published fill (`trade` is the TRADE's exact JSON bytes as
    the refresh carried it) or a new epoch (`time_ms`, wall clock of its creation)."""

    entry_id: str
    kind: str
    epoch: str
    product_id: str = ""
    trade: bytes = b""
    time_ms: int = 0

    @classmethod
    def from_fields(cls, entry_id: str, fields: Mapping[str, str]) -> FeedEntry:
        kind = fields["kind"]
        if kind == EPOCH:
            return cls(entry_id, kind, fields["epoch"], time_ms=int(fields["time"]))
        return cls(
            entry_id,
            kind,
            fields["epoch"],
            product_id=fields["product_id"],
            trade=fields["trade"].encode(),
        )


def stage_fills(tx: Pipeline, *, bot: str, epoch: str, fills: Iterable[tuple[str, bytes]]) -> None:
    """Queue, in the commit that publishes them, the feed entries of a refresh's fills:
    (product id, TRADE JSON) pairs, in the order their deliveries go out."""
    for product_id, trade in fills:
        tx.xadd(
            keys.notify_feed(bot),
            {"kind": FILL, "epoch": epoch, "product_id": product_id, "trade": trade},
            maxlen=FEED_LEN,
            approximate=True,
        )


def stage_epoch(tx: Pipeline, *, bot: str, epoch: str, time_ms: int) -> None:
    """Queue, in the commit that starts it, the feed entry of a new epoch (SPEC 6.1 rule 2:
    created, reset or state lost)."""
    tx.xadd(
        keys.notify_feed(bot),
        {"kind": EPOCH, "epoch": epoch, "time": time_ms},
        maxlen=FEED_LEN,
        approximate=True,
    )


def fills_in_id_order(symbols: Sequence[tuple[str, Sequence[bytes]]]) -> list[tuple[str, bytes]]:
    """A refresh's fills across its symbols, by `order_id` (unique within the bot): deliveries
    go out in id order per bot and webhook (SPEC 6.1 rule 4)."""
    fills = [(product_id, trade) for product_id, trades in symbols for trade in trades]
    return sorted(fills, key=lambda fill: int(orjson.loads(fill[1])["order_id"]))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending delivery of one webhook, as its queue holds it."""

    entry_id: str
    """The queue entry, which XDEL removes once delivered."""
    delivery_id: str
    """SPEC 6.1 rule 3's `id`."""
    event: NotifyEvent
    body: bytes
    created_ms: int

    def fields(self) -> dict[FieldT, EncodableT]:
        return {
            "id": self.delivery_id,
            "event": self.event,
            "body": self.body,
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> Delivery:
        return cls(
            entry_id=entry_id,
            delivery_id=fields["id"],
            event=fields["event"],  # type: ignore[arg-type]  # written from a NotifyEvent
            body=fields["body"].encode(),
            created_ms=int(fields["created_ms"]),
        )


@dataclass(frozen=True, slots=True)
class NotifyState:
    checkpoint: str
    """The last feed entry the bot's deliveries were created from (`0-0`: none yet)."""
    hooks: tuple[str, ...]
    """The hook ids whose queues the bot has had: a receiver no longer configured may have
    left deliveries behind."""


async def read_state(redis: Redis, bot: str) -> NotifyState:
    checkpoint, hooks = await redis.hmget(keys.notify_state(bot), ["checkpoint", "hooks"])
    return NotifyState(
        "0-0" if checkpoint is None else str(checkpoint),
        tuple(orjson.loads(hooks)) if hooks else (),
    )


async def first_feed_id(redis: Redis, bot: str) -> str | None:
    """The oldest entry still in the feed: past the checkpoint, the cap trimmed unread ones."""
    first = await redis.xrange(keys.notify_feed(bot), count=1)
    return None if not first else str(first[0][0])


def stage_deliveries(
    tx: Pipeline,
    *,
    bot: str,
    created: Mapping[str, Sequence[Delivery]],
    checkpoint: str,
    hooks: Sequence[str],
) -> None:
    """Queue, on a fenced MULTI, new deliveries by hook id and the feed checkpoint they reach
    (and the hook ids with queues); the feed is trimmed to the checkpoint (kept: it tells a
    trimmed checkpoint from a kept one)."""
    for hook_id, items in created.items():
        for item in items:
            tx.xadd(keys.deliveries(bot, hook_id), item.fields())
    tx.hset(
        keys.notify_state(bot),
        mapping={"checkpoint": checkpoint, "hooks": orjson.dumps(sorted(hooks))},
    )
    tx.xtrim(keys.notify_feed(bot), minid=checkpoint, approximate=True)


async def read_pending(
    redis: Redis, bot: str, hook_id: str, after: str, count: int
) -> list[Delivery]:
    """The next `count` pending deliveries of one webhook after queue entry `after` (`0-0`:
    from the start), oldest first."""
    start = "-" if after == "0-0" else f"({after}"
    entries = cast(
        list[tuple[str, dict[str, str]]],
        await redis.xrange(keys.deliveries(bot, hook_id), min=start, count=count),
    )  # decode_responses=True
    return [Delivery.from_entry(entry_id, fields) for entry_id, fields in entries]


async def pending_count(redis: Redis, bot: str, hook_id: str) -> int:
    return int(await redis.xlen(keys.deliveries(bot, hook_id)))


async def mark_done(redis: Redis, bot: str, hook_id: str, entry_id: str) -> int:
    """A delivered (or dropped) delivery leaves its queue. Not fenced: it went out, whoever
    owns the bot now; deleting it twice deletes nothing. Returns how many left (0 or 1)."""
    return int(await redis.xdel(keys.deliveries(bot, hook_id), entry_id))
