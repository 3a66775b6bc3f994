"""`bandwagon backtest`: the live trading core over a klines or trades file, with a report, the
Status API JSON and a plot. No Redis: the very `SymbolStrategy` the strategy worker runs is fed
the file's updates here (`libs.backtest`), the way ingest's replay would feed it.

  --klines [PRODUCT_ID=]FILE   a klines CSV (repeat for other symbols of the bot)
  --trades [PRODUCT_ID=]FILE   a trades CSV, aggregated into forming klines
  --config FILE --bot ID       the bot (default: the demo bot, narrowed to one symbol)
  --symbol PRODUCT_ID          the symbol a file without PRODUCT_ID= feeds (default: the first)
  --period ... --price-decimals  override the bot's trading config (see docs/backtest.md)
  --from T --to T              only updates with from <= event time < to (Unix ms or ISO date)
  --json OUT  --plot OUT.html|OUT.png  --quiet
  --sweep NAME=V1,V2 ...       run the grid on a process pool and rank it by total PnL

Wiring only: the runner and its statistics are `libs.backtest`, the rest `services.backtest.*`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from libs.backtest import BacktestResult, backtest_document, backtest_stats, run_backtest
from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.errors import ConfigError
from libs.ops.timezone import local_time_zone_offset_min
from services.backtest.inputs import (
    OVERRIDE_OPTIONS,
    MarketFile,
    TimeRange,
    apply_overrides,
    check_market_files,
    choose_bot,
    load_updates,
    parse_market_file,
    parse_time_ms,
)
from services.backtest.plot import check_plot_path, write_plot
from services.backtest.report import currency_of, print_report
from services.backtest.sweep import parse_grid, print_sweep, rows_document, run_sweep

LONG_RUN_UPDATES = 20_000  # a progress bar below this would only flicker
PIPE_WIDTH = 160


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bandwagon backtest",
        description="Run the live trading core over a klines or trades file.",
        epilog="Every option: docs/backtest.md",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--klines", action="append", default=[], metavar="[PRODUCT_ID=]FILE")
    data.add_argument("--trades", action="append", default=[], metavar="[PRODUCT_ID=]FILE")
    data.add_argument("--from", dest="from_time", metavar="MS|ISO", help="first event time")
    data.add_argument("--to", dest="to_time", metavar="MS|ISO", help="event times before this")
    bot = parser.add_argument_group("bot")
    bot.add_argument("--config", type=Path, metavar="FILE", help="a bots YAML file")
    bot.add_argument("--bot", metavar="ID", help="the bot of --config (default: its first)")
    bot.add_argument("--symbol", metavar="PRODUCT_ID", help="what a file without PID= feeds")
    overrides = parser.add_argument_group("overrides of the bot's trading config")
    for option in OVERRIDE_OPTIONS:
        overrides.add_argument(f"--{option}", metavar="VALUE")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, metavar="OUT", help="write trades, status, symbols")
    output.add_argument("--plot", type=Path, metavar="OUT.html|OUT.png")
    output.add_argument("--quiet", action="store_true", help="no report, no progress bar")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--sweep", nargs="+", metavar="NAME=V1,V2")
    sweep.add_argument("--workers", type=int, metavar="N", help="processes (default: CPUs)")
    return parser


def override_values(args: argparse.Namespace) -> dict[str, str]:
    values = {option: getattr(args, option.replace("-", "_")) for option in OVERRIDE_OPTIONS}
    return {option: value for option, value in values.items() if value is not None}


def market_files(args: argparse.Namespace, bot: BotConfig) -> tuple[MarketFile, ...]:
    files = [parse_market_file("--klines", text, bot, args.symbol) for text in args.klines]
    files += [parse_market_file("--trades", text, bot, args.symbol) for text in args.trades]
    check_market_files(files)
    return tuple(files)


def time_range(args: argparse.Namespace) -> TimeRange:
    from_ms = None if args.from_time is None else parse_time_ms("--from", args.from_time)
    to_ms = None if args.to_time is None else parse_time_ms("--to", args.to_time)
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ConfigError("--to", args.to_time, f"must be after --from {args.from_time}")
    return TimeRange(from_ms, to_ms)


def run_with_progress(
    bot: BotConfig, updates: Mapping[str, UpdateColumns], show: bool, with_bands: bool
) -> BacktestResult:
    """`with_bands`: the exact bands of every kline, which only the plot draws."""
    offset = local_time_zone_offset_min()
    total = sum(len(symbol_updates) for symbol_updates in updates.values())
    if not show or total < LONG_RUN_UPDATES:
        return run_backtest(bot, updates, time_zone_offset_min=offset, with_bands=with_bands)
    columns = (
        TextColumn("backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("backtest", total=total)
        return run_backtest(
            bot,
            updates,
            time_zone_offset_min=offset,
            progress=lambda count: bar.advance(task, count),
            with_bands=with_bands,
        )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    bot = choose_bot(args.config, args.bot, args.symbol)
    files = market_files(args, bot)
    bot = apply_overrides(bot, override_values(args), [f.product_id for f in files])
    span = time_range(args)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers", args.workers, "must be at least 1")
    if args.plot is not None:
        check_plot_path(args.plot)
    # Piped or redirected output gets room for a sweep's columns instead of rich's 80.
    console = Console(quiet=args.quiet, width=None if sys.stdout.isatty() else PIPE_WIDTH)

    if args.sweep:
        if args.plot is not None:
            raise ConfigError("--plot", str(args.plot), "a sweep draws no plot: run one backtest")
        grid = parse_grid(args.sweep)
        rows = run_sweep(bot, grid, files, span, args.workers)
        if args.json is not None:
            args.json.write_bytes(orjson.dumps(rows_document(rows), option=orjson.OPT_INDENT_2))
        print_sweep(console, grid, rows, currency_of(bot))
        return 0

    show_progress = not args.quiet and sys.stderr.isatty()
    if show_progress:
        with Console(stderr=True).status("reading market data"):
            updates = load_updates(files, bot.period_ms, span)
    else:
        updates = load_updates(files, bot.period_ms, span, quiet=args.quiet)
    for market_file in files:
        if not updates[market_file.product_id] and span != TimeRange():
            shown = f"{args.from_time or ''}..{args.to_time or ''}"
            raise ConfigError("--from/--to", shown, f"no update of {market_file.path} in range")
        if not updates[market_file.product_id]:
            raise ConfigError(str(market_file.path), "", "no valid market update to backtest")
    result = run_with_progress(bot, updates, show_progress, with_bands=args.plot is not None)

    written: list[Path] = []
    if args.json is not None:
        document = backtest_document(result)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        written.append(args.json)
    if args.plot is not None:
        write_plot(result, args.plot)
        written.append(args.plot)
    print_report(console, bot, backtest_stats(result), written)
    return 0
