"""How long to wait after a failed exchange call, and which failures a wait can fix.

Shared by ingest's followers (which back off and backfill the gap) and `bandwagon download`
(which retries the page): both wait the same way, and longest after a rate limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """Waits after failed calls; the defaults suit real exchanges, tests shorten them."""

    backoff_first_s: float = 1.0
    backoff_cap_s: float = 60.0
    rate_limit_factor: float = 4.0  # HTTP 429 / 418: wait this much longer


class SocketReplaced(Exception):
    """A websocket of the exchange closed while no call was waiting on it: CCXT opens a new one
    silently on the next `watch_*`, so the trades in between are a gap to backfill."""


def error_kind(error: BaseException) -> str:
    """How to wait after a failed call: rate limits get the longest waits."""
    import ccxt

    if isinstance(error, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return "rate_limited"
    if isinstance(error, ccxt.NetworkError | OSError | TimeoutError | SocketReplaced):
        return "network"
    if isinstance(error, ccxt.BaseError):
        return "exchange"
    return "unexpected"


class ExchangeBackoff:
    """Capped exponential backoff with jitter, each wait drawn in [d/2, d]; a rate limit
    multiplies d (and its cap) by `rate_limit_factor`."""

    def __init__(self, settings: BackoffSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.attempt = 0
        self.rng = rng or random.Random()

    def next_delay_s(self, kind: str) -> float:
        settings = self.settings
        ceiling = min(settings.backoff_cap_s, settings.backoff_first_s * 2**self.attempt)
        if kind == "rate_limited":
            ceiling *= settings.rate_limit_factor
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
