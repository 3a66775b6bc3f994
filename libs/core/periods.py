"""Kline periods and their ids, as the Status API document defines them (SPEC section 2, KLINE)."""

from __future__ import annotations

import re

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE = re.compile(r"^([1-9][0-9]{0,3})([mhd])$")


def _parse(size: str) -> tuple[int, str]:
    match = _SIZE.fullmatch(size)
    if match is None:
        raise ValueError(f"kline size {size!r} must be <n>m, <n>h or <n>d, e.g. 1m, 5m, 1h, 1d")
    return int(match.group(1)), match.group(2)


def kline_period_ms(size: str) -> int:
    multiplier, unit = _parse(size)
    return multiplier * _UNIT_MS[unit]


def period_id(time_ms: int, size: str) -> str:
    """The multiplier when it is not 1, the unit letter, then floor(time / period)."""
    multiplier, unit = _parse(size)
    prefix = f"{multiplier}{unit}" if multiplier != 1 else unit
    return f"{prefix}{time_ms // (multiplier * _UNIT_MS[unit])}"


def kline_open_time(time_ms: int, period_ms: int) -> int:
    """Open time of the kline a trade at `time_ms` belongs to."""
    return time_ms - time_ms % period_ms


def kline_close_time(open_time_ms: int, period_ms: int) -> int:
    """close_time = time + period - 1; a klines row is one update at this time (SPEC 3.1 rule 1)."""
    return open_time_ms + period_ms - 1
