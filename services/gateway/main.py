"""`bandwagon gateway`: the websocket Status API (SPEC section 2) on GATEWAY_PORT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from typing import Any

from libs.config import Settings, load_settings
from libs.ops.logs import setup_logging
from services.gateway.server import GatewayServer

log = logging.getLogger(__name__)

GC_FULL_AFTER_MIDDLE = 1000  # middle-generation collections before a full one (default 10)
GC_FULL_EVERY_S = 60.0  # ...and a full one on a clock, so churn's garbage cycles stay bounded


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain (SPEC 4.1 rule 4) and exit 0."""
    server = GatewayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    collector = asyncio.create_task(collect_garbage_periodically())
    serving = server.serving
    stopping = asyncio.create_task(stop.wait())
    waiting: list[asyncio.Task[Any]] = [stopping]
    if serving is not None:
        waiting.append(serving)  # the HTTP server died on its own: stop too
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    server.health.draining = True  # /readyz 503 at once, before anything else
    stopping.cancel()
    collector.cancel()
    await server.drain_and_stop()
    log.info("stopped")
    return 0


async def collect_garbage_periodically() -> None:
    """With full collections rare (`_tune_gc`), the reference cycles that connections leave
    when they close would pile up: the 30-minute soak grew by 170 MiB before one ran. A full
    collection once a minute bounds that to a minute of churn, and its pause (~0.5 s at 10,000
    clients) delays at most one refresh a minute, under the p99 of a refresh a second."""
    while True:
        await asyncio.sleep(GC_FULL_EVERY_S)
        gc.collect()


def _tune_gc() -> None:
    """A full (generation 2) collection walks every tracked object, about 110 per connection:
    at 10,000 clients it stops the loop for ~0.5 s, and it ran every ~5 s at 1 refresh/s, since
    the writers' in-flight coroutines caught by young collections keep promoting (the p99 of
    benches/fanout.py). Young collections stay as they are; full ones are considered 100 times
    less often, and what the imports made is frozen out of every walk."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_AFTER_MIDDLE)


def _run(settings: Settings) -> int:
    """uvloop when installed (it is with uvicorn[standard]): the fan-out is syscall-bound."""
    _tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(serve(settings))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bandwagon gateway", description=__doc__)
    parser.parse_args(argv)
    settings = load_settings()
    setup_logging("gateway", settings.log_level)
    return _run(settings)
