"""The server's time zone as the Status API reports it."""

from __future__ import annotations

import time


def local_time_zone_offset_min() -> int:
    """UTC minus local time in minutes, JavaScript's convention (UTC+8 -> -480), in the process's
    `TZ`: what accounting and the backtest report as `timeZoneOffset` (SPEC 2.1 rule 14)."""
    return -(time.localtime().tm_gmtoff // 60)
