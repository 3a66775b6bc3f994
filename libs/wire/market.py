"""Market stream entries: the one encoding of a `MarketUpdate` in Redis (plain fields, exact
floats).

Floats are written with `repr`, which round-trips every double exactly, so the strategy sees the
very bits ingest parsed.
"""

from __future__ import annotations

from collections.abc import Mapping

from libs.core.market import Kline, MarketUpdate

FIELDS = ("time", "price", "kline_time", "open", "high", "low", "close", "volume", "src")


def encode_update(update: MarketUpdate, source_position: str) -> dict[str, str]:
    """`source_position` says where the update came from (e.g. `replay:ETH.csv:1234`), so a
    restarted ingest can tell what it already wrote and a log line can point at the row."""
    kline = update.kline
    return {
        "time": str(update.time_ms),
        "price": repr(update.price),
        "kline_time": str(kline.time_ms),
        "open": repr(kline.open),
        "high": repr(kline.high),
        "low": repr(kline.low),
        "close": repr(kline.close),
        "volume": repr(kline.volume),
        "src": source_position,
    }


def decode_update(fields: Mapping[str, str]) -> MarketUpdate:
    """Inverse of `encode_update`; clients use `decode_responses=True`, so fields are `str`."""
    return MarketUpdate(
        time_ms=int(fields["time"]),
        price=float(fields["price"]),
        kline=Kline(
            time_ms=int(fields["kline_time"]),
            open=float(fields["open"]),
            high=float(fields["high"]),
            low=float(fields["low"]),
            close=float(fields["close"]),
            volume=float(fields["volume"]),
        ),
    )


def entry_key(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id (`<ms>-<seq>`, or a bare `<ms>`) as the pair it sorts by: ids
    compare as numbers, never as text (`"10-0" < "9-0"` as strings)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
