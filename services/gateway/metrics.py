"""The gateway's Prometheus metrics, named exactly as SPEC 4.1 rule 5 lists them.

Labels are close codes, error codes and init modes only: never a key, a bot's key hash or a
client address (SPEC 4.1 rule 5, 2.1 rule 16).
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

CONNECTIONS = Gauge("bandwagon_ws_connections", "Open websocket connections")
INITS = Counter("bandwagon_ws_inits", "Successful init or resume replies", ["mode"])
ERRORS = Counter("bandwagon_ws_errors", "Error frames sent", ["code"])
REFRESHES_RECEIVED = Counter(
    "bandwagon_ws_refreshes_received",
    "Refreshes this gateway received from Redis: `served` for a bot it had a client of; "
    "`unserved` only while a bot's last client leaves (SPEC 4.1 rule 13)",
    ["bot_served"],
)
REFRESHES_SERVED = REFRESHES_RECEIVED.labels(bot_served="true")
REFRESHES_UNSERVED = REFRESHES_RECEIVED.labels(bot_served="false")
CLOSES = Counter("bandwagon_ws_closes", "Closed connections, by close code", ["code"])
PUBLISH_TO_SEND_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class SendFigures:
    """`bandwagon_ws_messages_sent_total` and `bandwagon_ws_publish_to_send_seconds`, counted in
    plain ints on the fan-out's hot path (once per message and client) and turned into a counter
    and a histogram only when `/metrics` is read: prometheus_client's `inc` and `observe` take a
    lock and several calls each, a fifth of a delivery's cost (benches/fanout.py --profile)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.sent = 0
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total_s = 0.0

    def sent_one(self, publish_to_send_s: float | None) -> None:
        self.sent += 1
        if publish_to_send_s is not None:
            self.counts[bisect_left(self.buckets, publish_to_send_s)] += 1
            self.total_s += publish_to_send_s

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "bandwagon_ws_messages_sent", "Websocket messages sent to clients", value=self.sent
        )
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily(
            "bandwagon_ws_publish_to_send_seconds",
            "From the refresh reaching this gateway to its send to one client",
            buckets=cumulative,
            sum_value=self.total_s,
        )


SENDS = SendFigures(PUBLISH_TO_SEND_BUCKETS)
REGISTRY.register(SENDS)

INIT_FULL = INITS.labels(mode="full")
INIT_RESUME = INITS.labels(mode="resume")


def _running_tasks() -> float:
    """Tasks alive in the event loop that serves `/metrics` (NaN when read outside it)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return math.nan


# Not in SPEC 4.1 rule 5's list: a leak check. Each connection costs a fixed number of tasks, so
# with no client connected this returns to the same figure however many came and went.
TASKS = Gauge("bandwagon_gateway_asyncio_tasks", "asyncio tasks alive in the gateway process")
TASKS.set_function(_running_tasks)
