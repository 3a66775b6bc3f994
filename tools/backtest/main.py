"""`bandwagon backtest`: the live trading core over a klines or trades file, with a report, the
Status API JSON and a plot. No Redis: the very `SymbolStrategy` the strategy worker runs is fed
the file's updates here (`tools.backtest.engine`), the way ingest's replay would feed it.

  --klines [PRODUCT_ID=]FILE   a klines CSV (repeat for other symbols of the bot)
  --trades [PRODUCT_ID=]FILE   a trades CSV, aggregated into forming klines
  --config FILE --bot ID       the bot (default: the demo bot, narrowed to one symbol)
  --symbol PRODUCT_ID          the symbol a file without PRODUCT_ID= feeds (default: the first)
  --period ... --price-decimals  override the bot's trading config (see docs/backtest.md);
                               price decimals nothing gives are read off the file
  --from T --to T              only updates with from <= event time < to (Unix ms or ISO date)
  --json OUT  --plot OUT.html|OUT.png  --quiet
  --sweep NAME=V1,V2 ...       run the grid on a process pool and rank it by total PnL

Wiring only: the runner and its statistics are `tools.backtest.engine`, the rest `tools.backtest.*`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.core.strategies.contract import StrategyFailed
from libs.errors import ConfigError
from libs.exchange.market_files import price_decimals_of
from libs.ops.timezone import local_time_zone_offset_min
from libs.trading import load_strategy
from tools.backtest.engine import (
    BacktestResult,
    backtest_document,
    backtest_stats,
    fill_written_as_zero,
    run_backtest,
)
from tools.backtest.inputs import (
    OVERRIDE_OPTIONS,
    PARAM_PREFIX,
    MarketFile,
    TimeRange,
    apply_overrides,
    check_market_files,
    choose_bot,
    demo_stands_in,
    infer_price_decimals,
    load_updates,
    parse_market_file,
    parse_time_ms,
    stand_in_min_size_note,
    with_default_terms,
)
from tools.backtest.plot import check_plot_path, write_plot
from tools.backtest.report import currency_of, print_report
from tools.backtest.sweep import Grid, parse_grid, print_sweep, rows_document, run_sweep

LONG_RUN_UPDATES = 20_000  # a progress bar below this would only flicker
OVERRIDE_HELP = {
    "leverage": "default: the bot's (the demo's ETH-USDT: 10, SPEC's default)",
    "min-size": "default: the bot's (the demo's ETH-USDT: 0.00001)",
    "price-decimals": "default: the bot's, else the most decimals among the file's prices",
}
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
        overrides.add_argument(f"--{option}", metavar="VALUE", help=OVERRIDE_HELP.get(option))
    overrides.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the strategy's own (a plug-in's), repeatable",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, metavar="OUT", help="trades, status, symbols, notes")
    output.add_argument("--plot", type=Path, metavar="OUT.html|OUT.png")
    output.add_argument("--quiet", action="store_true", help="no report, no progress bar")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--sweep", nargs="+", metavar="NAME=V1,V2")
    sweep.add_argument("--workers", type=int, metavar="N", help="processes (default: CPUs)")
    return parser


def override_values(args: argparse.Namespace) -> dict[str, str]:
    values = {option: getattr(args, option.replace("-", "_")) for option in OVERRIDE_OPTIONS}
    chosen = {option: value for option, value in values.items() if value is not None}
    for text in args.param:
        name, separator, value = text.partition("=")
        if not separator or not name.strip():
            raise ConfigError("--param", text, "must be NAME=VALUE")
        chosen[f"{PARAM_PREFIX}{name.strip()}"] = value.strip()
    return chosen


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


def resolve_bot(
    args: argparse.Namespace, grid: Grid
) -> tuple[BotConfig, tuple[MarketFile, ...], list[str]]:
    """The bot with its flags applied and its missing price decimals read off its files; its
    files; and the notes saying what the run assumed (docs/backtest.md, "The bot")."""
    bot = choose_bot(args.config, args.bot, args.symbol)
    files = market_files(args, bot)
    overrides = override_values(args)
    bot = apply_overrides(bot, overrides, [f.product_id for f in files])
    flagged = set(overrides) | {name for name, _ in grid}
    notes: list[str] = []
    if args.config is not None:
        bot, notes = with_default_terms(bot, flagged)
    bot, inferred = infer_price_decimals(bot, files)
    notes += inferred
    load_strategy(bot)  # a plug-in that does not import, or a bad parameter: a config error now
    if demo_stands_in(args.config, args.symbol) and "min-size" not in flagged:
        notes.append(stand_in_min_size_note(bot))
    return bot, files, notes


def check_fill_prices(result: BacktestResult, files: Sequence[MarketFile]) -> None:
    """Never write a positive fill's price as 0 (SPEC 2.1 rule 13 formats it to price_decimals):
    decimals too few for the market are a config error, before anything is written."""
    found = fill_written_as_zero(result)
    if found is None:
        return
    run, fill, text = found
    path = next(f.path for f in files if f.product_id == run.product_id)
    most = price_decimals_of(path)
    raise ConfigError(
        "--price-decimals",
        run.price_decimals,
        f"{run.product_id}'s fill at {fill.price!r} (order_id {fill.order_id}) would be written"
        f" as {text}; the prices of {path} have up to {most} decimals",
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    grid = parse_grid(args.sweep) if args.sweep else []
    bot, files, notes = resolve_bot(args, grid)
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
    try:
        result = run_with_progress(bot, updates, show_progress, with_bands=args.plot is not None)
    except StrategyFailed as failed:
        # SPEC 3.2 rule 9: the run stops at the update the live symbol would halt before
        print(f"bandwagon backtest: {failed}", file=sys.stderr)
        return 1
    check_fill_prices(result, files)

    written: list[Path] = []
    if args.json is not None:
        document = backtest_document(result, notes=notes)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        written.append(args.json)
    if args.plot is not None:
        write_plot(result, args.plot)
        written.append(args.plot)
    print_report(console, bot, backtest_stats(result), written, notes)
    return 0
