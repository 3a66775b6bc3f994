"""Which replica owns which partition: the work split of SPEC section 4 ("each partition has one
writer at a time and moves to another replica when its owner dies"), as pure functions.

A strategy partition is one (bot, symbol): its state machine and market checkpoint. An accounting
partition is one bot: its book, seq and refresh log. Every replica computes the same assignment
from the same list of live members by rendezvous (highest random weight) hashing, so replicas
agree without talking to each other, and a member joining or leaving moves only the partitions
it gains or loses: about 1/N of them, not a reshuffle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from libs.config import BotConfig


@dataclass(frozen=True, order=True, slots=True)
class PartitionId:
    """`name` is `strategy:<product_id>` or `accounting`; with `bot`, it names the partition's
    lease and fence keys, which live in the bot's slot beside the state they guard."""

    bot: str
    name: str

    def __str__(self) -> str:
        return f"{self.bot}/{self.name}"


def strategy_partitions(bots: Iterable[BotConfig]) -> list[PartitionId]:
    return [
        PartitionId(bot.id, f"strategy:{symbol.product_id}")
        for bot in bots
        for symbol in bot.symbols
    ]


def accounting_partitions(bots: Iterable[BotConfig]) -> list[PartitionId]:
    return [PartitionId(bot.id, "accounting") for bot in bots]


def _weight(member: str, partition: PartitionId) -> bytes:
    text = f"{member}\0{partition.bot}\0{partition.name}".encode()
    return hashlib.blake2b(text, digest_size=8).digest()


def owner_of(partition: PartitionId, members: Iterable[str]) -> str | None:
    """The live member that should own `partition`, or None when no member is alive."""
    return max(members, key=lambda member: (_weight(member, partition), member), default=None)


def assigned_to(
    member: str, partitions: Iterable[PartitionId], members: Iterable[str]
) -> set[PartitionId]:
    """The partitions `member` should own when `members` are alive (`member` among them)."""
    alive = sorted(set(members) | {member})
    return {partition for partition in partitions if owner_of(partition, alive) == member}
