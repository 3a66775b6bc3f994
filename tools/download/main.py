"""`bandwagon download`: an exchange's closed klines, through CCXT, into the klines CSV that
`replay` and `backtest` read (`time,open,high,low,close,volume`, time = open time in Unix ms).

  --exchange ID        a CCXT exchange id (binance, mexc, okx, bybit...)
  --symbol SYMBOL      ETH/USDT or ETH-USDT
  --size SIZE          kline size: 1m, 5m, 1h, 1d...
  --from T --to T      open times from <= time < to (Unix ms or ISO date, UTC); --to: now
  --out FILE.csv       resumed when it exists: rows after its last one are appended
  --quiet              no progress bar

Every row passes SPEC 5.1 rule 11 before it is written (a bad one is reported and skipped), and
a kline without volume is left out, as the ccxt source leaves it out: a period without trades has
no kline (SPEC 4.1 rule 8), so a replay of the file gives the updates live ingest gave. Rows are
flushed page by page; an interrupted download leaves whole rows, and at worst a torn last line
that the next run cuts off before it continues.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from libs.config import load_exchange_settings
from libs.core.market import KlineRowReader
from libs.core.periods import kline_open_time, kline_period_ms
from libs.errors import BadMarketData, ConfigError
from libs.exchange.backoff import BackoffSettings, ExchangeBackoff, error_kind
from libs.exchange.candles import candle_pages, parse_candle
from libs.exchange.market_files import KLINES_COLUMNS
from libs.exchange.markets import (
    ccxt_symbol,
    check_exchange_id,
    check_symbol,
    check_timeframe,
    exchange_ids,
    new_exchange,
    parse_urls,
    product_id,
)
from tools.backtest.inputs import parse_time_ms

log = logging.getLogger(__name__)

HEADER = ",".join(KLINES_COLUMNS)
ATTEMPTS = 8  # failed requests in a row before giving up (a rerun resumes)


@dataclass(frozen=True, slots=True)
class Request:
    exchange_id: str
    symbol: str  # CCXT's, ETH/USDT
    size: str
    from_ms: int
    to_ms: int | None
    out: Path


def parse_args(argv: list[str]) -> tuple[Request, bool]:
    parser = argparse.ArgumentParser(prog="bandwagon download", description=__doc__.split("\n")[0])
    parser.add_argument("--exchange", required=True, metavar="ID")
    parser.add_argument("--symbol", required=True, metavar="BASE/QUOTE")
    parser.add_argument("--size", default="1m", metavar="SIZE")
    parser.add_argument("--from", dest="from_time", required=True, metavar="MS|ISO")
    parser.add_argument("--to", dest="to_time", metavar="MS|ISO")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.csv")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        kline_period_ms(args.size)
    except ValueError as error:
        raise ConfigError("--size", args.size, str(error)) from None
    from_ms = parse_time_ms("--from", args.from_time)
    to_ms = None if args.to_time is None else parse_time_ms("--to", args.to_time)
    if to_ms is not None and to_ms <= from_ms:
        raise ConfigError("--to", args.to_time, f"must be after --from {args.from_time}")
    symbol = args.symbol.strip().upper()
    symbol = symbol if "/" in symbol else ccxt_symbol(symbol)
    request = Request(args.exchange.strip().lower(), symbol, args.size, from_ms, to_ms, args.out)
    return request, args.quiet


def resume_point(path: Path) -> int | None:
    """The open time of the file's last whole row (None: no row yet). A torn last line (an
    interrupted write) is cut off; a file of another format is a config error."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    header, _, _ = data.partition(b"\n")
    if header.decode("utf-8", "replace").strip() != HEADER:
        raise ConfigError("--out", str(path), f"exists and is not a klines CSV ({HEADER})")
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as file:
            file.truncate(len(whole))
        log.warning("cut off a torn last line of %s", path)
    rows = whole.rstrip(b"\n").split(b"\n")[1:]
    if not rows:
        return None
    try:
        return int(rows[-1].split(b",", 1)[0])
    except ValueError:
        raise ConfigError("--out", str(path), "its last row has no integer time") from None


def csv_row(time_ms: int, values: Sequence[float]) -> str:
    """`repr` of each double: it reads back to the same bits (libs.wire.market does the same)."""
    return ",".join([str(time_ms), *(repr(value) for value in values)]) + "\n"


async def fetch_page(
    exchange: Any, request: Request, since: int, backoff: ExchangeBackoff
) -> list[list[Any]]:
    """One `fetch_ohlcv` page, retried with backoff on network errors and rate limits."""
    while True:
        try:
            page: list[list[Any]] = await exchange.fetch_ohlcv(
                request.symbol, request.size, since=since
            )
            backoff.reset()
            return page
        except Exception as error:
            kind = error_kind(error)
            if kind not in ("rate_limited", "network") or backoff.attempt >= ATTEMPTS:
                raise
            delay_s = backoff.next_delay_s(kind)
            log.warning("%s; retrying in %.1f s", str(error)[:200], delay_s)
            await asyncio.sleep(delay_s)


async def download(
    request: Request,
    urls: dict[str, Any] | None = None,
    quiet: bool = True,
    settings: BackoffSettings | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> int:
    """Append the closed klines of [from, to) after the file's last row; returns rows written."""
    check_exchange_id(request.exchange_id, "--exchange", exchange_ids())
    period_ms = kline_period_ms(request.size)
    exchange = new_exchange(request.exchange_id, urls)
    written = 0
    try:
        markets = await exchange.load_markets()
        check_symbol(request.exchange_id, product_id(request.symbol), "--symbol", markets)
        check_timeframe(request.exchange_id, request.size, "--size", exchange.timeframes or {})
        last_ms = resume_point(request.out)
        first_ms = request.from_ms - request.from_ms % period_ms
        if request.from_ms % period_ms:
            first_ms += period_ms
        since = first_ms if last_ms is None else max(first_ms, last_ms + period_ms)
        current = kline_open_time(clock_ms(), period_ms)  # closed klines only
        end = current if request.to_ms is None else min(request.to_ms, current)
        reader = KlineRowReader(period_ms)
        reader.last_time_ms = last_ms
        backoff = ExchangeBackoff(settings or BackoffSettings())
        request.out.parent.mkdir(parents=True, exist_ok=True)
        total = max(0, (end - first_ms + period_ms - 1) // period_ms)
        with (
            request.out.open("a", encoding="utf-8", newline="") as file,
            Progress(
                TextColumn(f"{request.exchange_id} {request.symbol} {request.size}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                disable=quiet,
                transient=False,
            ) as progress,
        ):
            if last_ms is None and file.tell() == 0:
                file.write(HEADER + "\n")
            task = progress.add_task(
                "klines", total=total, completed=(since - first_ms) // period_ms
            )

            async def fetch(since_ms: int) -> list[list[Any]]:
                return await fetch_page(exchange, request, since_ms, backoff)

            pages = candle_pages(fetch, since, end, period_ms)
            async with aclosing(pages):
                async for page in pages:
                    rows = []
                    for candle in page.rows:
                        try:
                            k = reader.accept(parse_candle(candle)).kline
                        except BadMarketData as error:
                            print(f"{request.out}: skipped a candle: {error}", file=sys.stderr)
                            continue
                        if k.volume > 0:
                            values = (k.open, k.high, k.low, k.close, k.volume)
                            rows.append(csv_row(k.time_ms, values))
                    file.write("".join(rows))
                    file.flush()
                    written += len(rows)
                    if page.next_since_ms is not None:  # None: nothing more from the exchange
                        done_ms = min(page.next_since_ms, end)
                        progress.update(task, completed=(done_ms - first_ms) // period_ms)
            progress.update(task, completed=total)
    finally:
        await exchange.close()
    return written


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    request, quiet = parse_args(argv)
    urls = parse_urls(load_exchange_settings().ccxt_urls).get(request.exchange_id)
    try:
        written = asyncio.run(download(request, urls, quiet=quiet))
    except ConfigError:
        raise  # tools.cli prints it and exits 78
    except Exception as error:
        print(
            f"download stopped: {type(error).__name__}: {str(error)[:300]}; run it again to "
            f"continue after the last row of {request.out}",
            file=sys.stderr,
        )
        return 1
    if not quiet:
        print(f"{written} klines written to {request.out}", file=sys.stderr)
    return 0
