"""Market updates as the strategy sees them (SPEC 3.1 rule 1, 4.1 rule 8)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Kline:
    """A kline as it stands after some update; `time_ms` is its open time."""

    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class MarketUpdate:
    """One update: a trade (at its time and price) or a klines row (at its close_time and close).

    `kline` is the kline of the update's period after the update; the strategy sees only
    `time_ms` and `price`, the kline is what clients are shown.
    """

    time_ms: int
    price: float
    kline: Kline
