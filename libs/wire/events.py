"""The strategy event: what the strategy worker tells accounting about one symbol after a batch,
as one entry of the bot's events stream (`libs.store.keys.events`).

One definition for the writer (`services.strategy.worker`) and the reader
(`services.accounting.book`). The entry is one field, `data`, holding a JSON object whose names
and order are those the stream already holds; entries written before `entry_id` existed lack it,
and read as "". Change the layout only with a migration: accounting reads entries a strategy
worker of the previous version wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from libs.core.pnl import Ledger
from libs.core.sim_exchange import Signal
from libs.wire.checkpoint import ledger_from_state, ledger_state
from libs.wire.frames import JSONObject

FIELD = "data"
"""The stream entry's one field."""


@dataclass(frozen=True, slots=True)
class StrategyEvent:
    """A symbol's ledger and position as they stand after a batch, the klines the batch touched
    (the newest `kline_history`, each as last left, ascending) and its fills, in order. Klines
    and trades are already Status API objects (KLINE and TRADE, `libs.wire.convert`):
    accounting passes them on as they are."""

    product_id: str
    entry_id: str
    """The last market entry the batch applied: its id's time is when the update entered the
    pipeline, which accounting's update-to-publish latency is measured from."""
    time_ms: int
    """The event time of the strategy's last update."""
    first_time_ms: int
    """The event time of the symbol's first update: STATUS `startTime` (SPEC section 2)."""
    price: float
    signal: Signal | None
    ledger: Ledger
    klines: tuple[JSONObject, ...]
    trades: tuple[JSONObject, ...]

    def to_value(self) -> JSONObject:
        """The JSON object the entry holds."""
        return {
            "symbol": self.product_id,
            "entry_id": self.entry_id,
            "time": self.time_ms,
            "first_time": self.first_time_ms,
            "price": self.price,
            "signal": self.signal,
            "ledger": ledger_state(self.ledger),
            "klines": list(self.klines),
            "trades": list(self.trades),
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> StrategyEvent:
        """Inverse of `to_value`."""
        return cls(
            product_id=value["symbol"],
            entry_id=value.get("entry_id", ""),
            time_ms=value["time"],
            first_time_ms=value["first_time"],
            price=value["price"],
            signal=value["signal"],
            ledger=ledger_from_state(value["ledger"]),
            klines=tuple(value["klines"]),
            trades=tuple(value["trades"]),
        )

    def to_fields(self) -> dict[str, bytes]:
        """The stream entry's fields, for XADD."""
        return {FIELD: orjson.dumps(self.to_value())}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str | bytes]) -> StrategyEvent:
        """Inverse of `to_fields`, from XREAD's reply (`str` under `decode_responses=True`)."""
        return cls.from_value(orjson.loads(fields[FIELD]))
