"""`bandwagon ingest`: market data -> one Redis stream per (exchange, product, kline size) that an
enabled bot watches (SPEC section 1, 4.1 rules 8 and 12). Wiring only: sources, pacing and writing
live in `sources.py` and `writer.py`, parsing and aggregation in `libs.core.market`.

Options (a flag wins over its variable; the variables are `libs.config.IngestSettings`):
  --source synthetic|replay|ccxt  BANDWAGON_SOURCE  (default synthetic; replay when files are given;
                              ccxt: live exchange data, docs/live-data.md)
  --replay [PRODUCT_ID=]FILE  BANDWAGON_REPLAY  (comma-separated; repeatable flag)
  --speed X|max               BANDWAGON_SPEED   (event time per wall time; default 60; max or 0)
  --seed N                    BANDWAGON_SEED    (synthetic random walk; default 1)
  --batch-size N              (entries per XADD transaction; default 500)
  --stale-periods N           BANDWAGON_STALE_PERIODS  (ccxt: no word from the exchange for N kline
                              periods = stale, /readyz 503; default 3)
  --no-websocket              BANDWAGON_CCXT_WEBSOCKET=0  (ccxt: poll REST even where CCXT has
                              websockets)
                              BANDWAGON_CCXT_URLS  (ccxt: JSON {exchange: {endpoint: url}} merged
                              into the client's API URLs: a proxy or a local stand-in)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from libs.config import (
    DEFAULT_TERMS,
    MARKET_SOURCES,
    BotsFile,
    MarketTerms,
    Settings,
    load_bots,
    load_ingest_settings,
    load_settings,
)
from libs.errors import ConfigError
from libs.exchange.market_files import Reject, file_kind
from libs.exchange.markets import parse_urls
from libs.ops.health import Health, SidePort, ping_redis_forever
from libs.ops.logs import setup_logging
from libs.store.client import RedisNodes, worker_nodes
from libs.store.market_terms import store_terms_until_stored
from services.ingest.ccxt_source import CcxtIngest, CcxtSettings, Stopped
from services.ingest.sources import ReplaySource, Source, SyntheticSource
from services.ingest.writer import (
    SEPARATOR,
    UPDATES,
    Pacer,
    StreamSpec,
    StreamWriter,
    report_reject,
    run_stream,
)

log = logging.getLogger(__name__)

DEFAULT_HEALTH_PORT = 9101
DEFAULT_BATCH_SIZE = 500
_PRODUCT_PREFIX = re.compile(r"^([A-Z0-9]{1,20}-[A-Z0-9]{1,20})=(.+)$")


@dataclass(frozen=True, slots=True)
class Options:
    source: str
    replays: tuple[tuple[str | None, Path], ...]
    speed: float  # 0 = as fast as possible
    seed: int
    batch_size: int
    ccxt: CcxtSettings = field(default_factory=CcxtSettings)


def _parse_replay(text: str) -> tuple[str | None, Path]:
    match = _PRODUCT_PREFIX.fullmatch(text.strip())
    if match is None:
        return None, Path(text.strip())
    return match.group(1), Path(match.group(2))


def parse_options(argv: list[str], environ: Mapping[str, str] | None = None) -> Options:
    """The flags, over `IngestSettings` read from `environ` (None: the process's environment)."""
    parser = argparse.ArgumentParser(prog="bandwagon ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=MARKET_SOURCES)
    parser.add_argument("--replay", action="append", metavar="[PRODUCT_ID=]FILE")
    parser.add_argument("--speed", metavar="X|max")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--stale-periods", metavar="N")
    parser.add_argument("--no-websocket", action="store_true")
    args = parser.parse_args(argv)
    # A flag's destination is its setting's field name, so a given flag overrides its variable.
    flags = {
        name: getattr(args, name)
        for name in ("source", "replay", "speed", "seed", "stale_periods")
        if getattr(args, name) is not None
    }
    settings = load_ingest_settings(environ, flags)

    replays = tuple(_parse_replay(text) for text in settings.replay)
    source = settings.source or ("replay" if replays else "synthetic")
    if source == "replay" and not replays:
        raise ConfigError("--replay", "", "the replay source needs at least one file")
    if source == "synthetic" and settings.speed == 0:
        raise ConfigError("--speed", "max", "the synthetic source never ends: give it a speed")
    if args.batch_size < 1:
        raise ConfigError("--batch-size", args.batch_size, "must be >= 1")
    ccxt = CcxtSettings(
        stale_periods=settings.stale_periods,
        websocket=settings.ccxt_websocket and not args.no_websocket,
        urls=parse_urls(settings.ccxt_urls),
    )
    return Options(source, replays, settings.speed, settings.seed, args.batch_size, ccxt)


def watched_streams(bots: BotsFile) -> list[StreamSpec]:
    """One stream per (exchange, product, kline size) of an enabled bot, in config order."""
    streams: dict[StreamSpec, None] = {}
    for bot in bots.enabled_bots:
        for symbol in bot.symbols:
            streams[StreamSpec(bot.exchange, symbol.product_id, bot.kline_size)] = None
    if not streams:
        raise ConfigError("bots[].enabled", False, "no enabled bot: nothing to ingest")
    return list(streams)


def default_market_terms(bots: BotsFile, source: str) -> dict[str, dict[str, MarketTerms]]:
    """The terms this source supplies, by exchange and product, for the symbols whose bots
    file leaves them out: none from ccxt here (it reads the exchange's markets once open), SPEC
    4.1 rule 10's defaults from every other source. A disabled bot's too: its state is created
    like any bot's, and would wait for them forever."""
    if source == "ccxt":
        return {}
    supplied: dict[str, dict[str, MarketTerms]] = {}
    for bot in bots.bots:
        for symbol in bot.symbols:
            if not symbol.has_market_terms:
                supplied.setdefault(bot.exchange, {})[symbol.product_id] = DEFAULT_TERMS
    return supplied


def build_sources(
    streams: list[StreamSpec], options: Options, start_time_ms: int
) -> list[tuple[StreamSpec, Source]]:
    """A source per stream; replay files are opened here, so a wrong one stops the start. The
    ccxt source is not built here: it is asynchronous (`CcxtIngest`)."""
    if options.source == "ccxt":
        return []
    if options.source == "synthetic":
        return [
            (
                stream,
                SyntheticSource(options.seed, stream.product_id, stream.period_ms, start_time_ms),
            )
            for stream in streams
        ]
    products = {stream.product_id for stream in streams}
    for product_id, path in options.replays:
        if product_id is not None and product_id not in products:
            raise ConfigError("--replay", f"{product_id}={path}", "no enabled bot watches it")
        file_kind(path)
    plans: list[tuple[StreamSpec, Source]] = []
    for stream in streams:
        files = [path for product, path in options.replays if product in (None, stream.product_id)]
        names = [path.name for path in files]
        for name in names:  # a restart finds its place by the file name in `src`
            if names.count(name) > 1:
                raise ConfigError("--replay", name, f"file names of {stream.key} must be unique")
            if SEPARATOR in name:
                raise ConfigError("--replay", name, "a file name may not hold a control character")
        if not files:
            log.info("no replay file for this stream", extra={"stream": stream.key})
            continue

        def on_reject(source: str, line: int, reject: Reject, stream: StreamSpec = stream) -> None:
            report_reject(stream, source, line, reject)

        def on_mismatch(source: str, line: int, stream: StreamSpec = stream) -> None:
            log.warning(
                "the stream's last entry differs from this row: was the file changed?",
                extra={"source": source, "line": line, "stream": stream.key},
            )

        plans.append((stream, ReplaySource(files, stream.period_ms, on_reject, on_mismatch)))
    return plans


async def run_streams(
    redis: Redis | RedisNodes,
    plans: list[tuple[StreamSpec, Source]],
    maxlen: int,
    options: Options,
    stop: asyncio.Event,
    default_terms: Mapping[str, Mapping[str, MarketTerms]] | None = None,
) -> None:
    """The default terms this source supplies first (the bots waiting for them can then be
    created), then every stream at once, each with its own batches; returns when every source
    has ended or, after stop, when every batch is flushed."""
    await store_terms_until_stored(redis, default_terms or {}, stop)
    async with asyncio.TaskGroup() as group:
        for stream, source in plans:
            UPDATES.labels(stream=stream.name)  # exported as 0 from the start
            writer = StreamWriter(redis, stream, maxlen, options.batch_size, stop)
            group.create_task(run_stream(source, writer, Pacer(options.speed)))


def redis_client(settings: Settings) -> RedisNodes:
    """No retries inside redis-py: a blindly retried batch could be applied twice. The writer
    retries itself, after reading back what is already in the stream."""
    return worker_nodes(settings)


async def serve(settings: Settings, bots: BotsFile, options: Options) -> int:
    streams = watched_streams(bots)
    default_terms = default_market_terms(bots, options.source)
    plans = build_sources(streams, options, start_time_ms=int(time.time() * 1000))
    health = Health("ingest")
    # Files were opened by build_sources, synthetic is always open; ccxt once markets are loaded.
    health.set_check("source", options.source != "ccxt")
    wanted_port = DEFAULT_HEALTH_PORT if settings.health_port is None else settings.health_port
    side_port = SidePort(health, settings.health_host, wanted_port)
    port = await side_port.start()
    log.info("health, readiness and metrics on port %d", port)
    redis = redis_client(settings)
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("signal %s: flushing and stopping", signal.Signals(signum).name)
        health.draining = True  # SPEC 4.1 rule 4: /readyz turns 503 at once
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    pinger = asyncio.create_task(ping_redis_forever(redis.ping, health))
    live: CcxtIngest | None = None
    if options.source == "ccxt":
        live = CcxtIngest(bots, streams, options.ccxt, health)
        try:
            await live.open(stop)  # an unknown symbol: ConfigError, exit 78
        except BaseException as error:
            pinger.cancel()
            await side_port.stop()
            await redis.aclose()
            if isinstance(error, Stopped):  # SIGTERM while the exchange was unreachable
                return 0
            raise
    log.info(
        "ingesting %s into %d streams",
        options.source,
        len(plans) if live is None else len(streams),
        extra={"source": options.source},
    )
    streams_task = asyncio.create_task(
        run_streams(redis, plans, bots.market_stream_len, options, stop, default_terms)
        if live is None
        else live.run(redis, bots.market_stream_len, options.batch_size, stop)
    )
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({streams_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if streams_task.done() and streams_task.exception() is not None:
        log.error("ingest failed", exc_info=streams_task.exception())
        code = 1
        stop.set()
    elif streams_task.done():
        log.info("every source finished; staying ready until SIGTERM (SPEC 4.1 rule 2)")
    await stopping
    if not streams_task.done():
        await streams_task
    pinger.cancel()
    await side_port.stop()
    await redis.aclose()
    log.info("stopped")
    return code


def main(argv: list[str]) -> int:
    settings = load_settings()
    setup_logging("ingest", settings.log_level)
    options = parse_options(argv)
    bots = load_bots(settings.config_path)
    return asyncio.run(serve(settings, bots, options))
