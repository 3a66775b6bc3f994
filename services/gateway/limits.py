"""Per-connection and per-address limits of SPEC 5.1 rules 3 and 4, with time passed in.

Callers pass the monotonic clock reading, so the arithmetic is tested without sleeping.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable

FAILED_KEYS_WINDOW_S = 60.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBucket:
    """Every data frame takes a token, valid or not (SPEC 5.1 rule 3); an empty bucket means
    `rate_limited` and close 1008."""

    __slots__ = ("_capacity", "_rate_per_s", "_tokens", "_updated_s")

    def __init__(self, capacity: int, rate_per_s: float, now_s: float) -> None:
        self._capacity = float(capacity)
        self._rate_per_s = rate_per_s
        self._tokens = float(capacity)
        self._updated_s = now_s

    def take(self, now_s: float) -> bool:
        elapsed_s = max(0.0, now_s - self._updated_s)
        self._tokens = min(self._capacity, self._tokens + elapsed_s * self._rate_per_s)
        self._updated_s = now_s
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class FailedKeys:
    """`unauthorized` answers per client address in the last 60 s (SPEC 5.1 rule 4).

    Only the newest `limit + 1` times of an address matter (is the oldest of them inside the
    window?), so memory per address is bounded whatever a client sends.
    """

    def __init__(self, limit: int, window_s: float = FAILED_KEYS_WINDOW_S) -> None:
        self._limit = limit
        self._window_s = window_s
        self._times_s: dict[str, deque[float]] = {}

    def record(self, address: str, now_s: float) -> None:
        times = self._times_s.get(address)
        if times is None:
            times = self._times_s[address] = deque(maxlen=self._limit + 1)
        times.append(now_s)

    def blocked(self, address: str, now_s: float) -> bool:
        """More than `limit` answers within the window: every `init` gets `rate_limited`."""
        times = self._times_s.get(address)
        return times is not None and len(times) > self._limit and now_s - times[0] <= self._window_s

    def prune(self, now_s: float) -> None:
        """Forget addresses whose newest failure left the window, so the table cannot grow."""
        stale = [a for a, t in self._times_s.items() if now_s - t[-1] > self._window_s]
        for address in stale:
            del self._times_s[address]


class TrustedProxies:
    """`GATEWAY_TRUSTED_PROXIES`: addresses or CIDR networks whose `X-Forwarded-For` is believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks: list[IPNetwork] = [
            ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()
        ]

    def __contains__(self, address: object) -> bool:
        if not self._networks or not isinstance(address, str):
            return False
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(parsed in network for network in self._networks)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str:
    """The TCP peer, or, when the peer is a trusted proxy, the right-most `X-Forwarded-For`
    entry that is not itself trusted (SPEC 5.1 rule 4): entries left of it are client-supplied
    and could be forged to dodge the failed-keys limit."""
    address = peer or "unknown"
    if address not in trusted:
        return address
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else address
