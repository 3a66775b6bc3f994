"""The gateway's Prometheus metrics, named exactly as SPEC 4.1 rule 5 lists them.

Labels are close codes, error codes and init modes only: never a key, a bot's key hash or a
client address (SPEC 4.1 rule 5, 2.1 rule 16).
"""

from __future__ import annotations

import asyncio
import math

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("bandwagon_ws_connections", "Open websocket connections")
INITS = Counter("bandwagon_ws_inits", "Successful init or resume replies", ["mode"])
ERRORS = Counter("bandwagon_ws_errors", "Error frames sent", ["code"])
CLOSES = Counter("bandwagon_ws_closes", "Closed connections, by close code", ["code"])
MESSAGES_SENT = Counter("bandwagon_ws_messages_sent", "Websocket messages sent to clients")
PUBLISH_TO_SEND = Histogram(
    "bandwagon_ws_publish_to_send_seconds",
    "From the refresh reaching this gateway to its send to one client",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

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
