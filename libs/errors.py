"""Errors named for what the caller does about them, each carrying the offending value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class BandwagonError(Exception):
    """Root of every error Bandwagon raises on purpose."""


class ConfigError(BandwagonError):
    """Start-up must stop: the service exits 78 with one line naming path, value and reason.

    SPEC 4.1 rule 7: `config error: <path>: <value>: <reason>`; a supervisor does not restart it.
    """

    exit_code = 78

    def __init__(self, path: str, value: object, reason: str, *, secret: bool = False) -> None:
        shown = "***" if secret else repr(value) if not isinstance(value, str) else value
        super().__init__(f"config error: {path}: {shown}: {reason}")
        self.path, self.reason = path, reason


class MarketTermsPending(BandwagonError):
    """A bot's state cannot be created yet: the bots file leaves a symbol's `min_size` or
    `price_decimals` to the source, and the source has not reported them. Try again later."""

    def __init__(self, bot_id: str, product_ids: list[str]) -> None:
        super().__init__(
            f"bot {bot_id}: no min_size or price_decimals yet for {', '.join(product_ids)}: the "
            "bots file leaves them to the source, and only the ccxt source reports them "
            "(from the exchange's markets)"
        )
        self.bot_id, self.product_ids = bot_id, product_ids


class BadMarketData(BandwagonError):
    """Skip the row, report it, leave state unchanged (SPEC 5.1 rule 11)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}={value!r}: {reason}")
        self.field, self.value, self.reason = field, value, reason


class ClientError(BandwagonError):
    """The gateway answers with an error frame and maybe closes (SPEC 2.1 rules 2-4)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.close_code = code, message, close_code


class StateMissing(BandwagonError, LookupError):
    """The bot's state has not been created yet (SPEC 4.1 rule 11): `init` gets `unavailable`.

    The message is the bot's id."""


class _Partition(Protocol):
    """A partition as leases name it (`libs.store.partitions.PartitionId`): hashable, ordered."""

    def __hash__(self) -> int: ...
    def __lt__(self, other: Any, /) -> bool: ...


class LeaseLost(BandwagonError):
    """A commit's partitions are no longer all this worker's: nothing was written; drop them
    and reload from Redis (`libs.store.leases`, SPEC 4.1 rule 9)."""

    def __init__(self, partitions: Iterable[_Partition]) -> None:
        self.partitions = sorted(set(partitions))
        super().__init__("lease lost: " + ", ".join(str(p) for p in self.partitions))
