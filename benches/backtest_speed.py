"""Backtest speed: Bandwagon's exact live core beside backtesting.py, vectorbt and a numpy floor,
all measured in one run on one year of seeded 1-minute klines (issue 4, point 4; issue 16).

    python -m benches.backtest_speed [--rows N] [--no-doc] [--quick] [--parts P,...]
                                     (`make bench` runs it)

Three parts, each written to its own section of docs/benchmarks.md (between its markers):

- `bollinger`: BollingerBands, the core, `run_backtest`, the command, a numpy floor,
  backtesting.py and vectorbt (warm and first runs);
- `strategies`: RSI and MACD, the core beside backtesting.py running the same rule on the same
  per-window indicator;
- `sweep`: a 10 x 10 Bollinger grid, `bandwagon backtest --sweep`'s runner on 2 processes beside
  vectorbt's vectorized sweep (`benches.sweep_speed`).

Every figure is measured in this run, on this machine, next to the others; nothing is a timed
assertion. Each implementation also reports its fills, checked against Bandwagon's, so a reader
can see that they do the same work. The figures go to rich tables and, unless `--no-doc`, into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from benches import sweep_speed
from benches.backtest_common import (
    LASTING_OVERRIDES,
    OVERRIDES,
    SYMBOL,
    Figures,
    Row,
    bench_bot,
    command_head,
    compared,
    goal_lines,
    markdown_row,
    override_flags,
    print_goals,
    row_cells,
    run_core,
    seconds_text,
)
from benches.data import (
    ROOT,
    SEED,
    YEAR_MINUTES,
    Floats,
    Ints,
    cache_dir,
    klines_csv,
    read_columns,
)
from benches.doc_section import write_section
from benches.strategies import (
    FillMark,
    LevelRules,
    MacdRules,
    RsiRules,
    Rules,
    backtesting_frame,
    backtesting_marks,
    backtesting_price_difference,
    bandwagon_marks,
    import_backtesting_py,
    indicator_per_window,
    numpy_floor,
    run_backtesting_py,
    run_vectorbt,
    vectorbt_marks,
)
from benches.timing import machine_line, median_of, package_version, run_process
from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.core.sim_exchange import Fill
from tools.backtest.engine import run_backtest

__all__ = ["OVERRIDES", "SYMBOL", "bench_bot", "main", "run_core"]

DOC_PATH = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- backtest-speed:begin (written by python -m benches.backtest_speed) -->"
END_MARK = "<!-- backtest-speed:end -->"
STRATEGIES_BEGIN_MARK = (
    "<!-- strategies-speed:begin (written by python -m benches.backtest_speed) -->"
)
STRATEGIES_END_MARK = "<!-- strategies-speed:end -->"
PEER_PACKAGES = ("numpy", "ta-lib", "pandas", "backtesting", "vectorbt", "numba")
CORE_GOAL_X = 25.0  # Bollinger: the core at least this many times faster than backtesting.py
LEVEL_GOAL_X = 10.0  # RSI and MACD: likewise
PARTS = ("bollinger", "strategies", "sweep")
LEVEL_STRATEGIES = ("RSI", "MACD")


@dataclass(frozen=True, slots=True)
class Repeats:
    core: int = 7
    run_backtest: int = 5
    floor: int = 15
    command: int = 3
    backtesting_py: int = 3
    vectorbt_warm: int = 5
    vectorbt_fresh: int = 2
    level_core: int = 5
    level_indicator: int = 3
    level_backtesting_py: int = 3
    sweep: int = 3
    sweep_command: int = 2
    vectorbt_sweep_warm: int = 3
    vectorbt_sweep_fresh: int = 2
    sweep_marks: int = 100  # combinations whose fills are compared one by one


CORE = "Bandwagon core"
RUN_BACKTEST = "Bandwagon run_backtest"
COMMAND = "bandwagon backtest"
FLOOR = "numpy floor"
BACKTESTING_PY = "backtesting.py"
VECTORBT_WARM = "vectorbt, warm"
VECTORBT_COLD = "vectorbt, first run (JIT)"
VECTORBT_CACHED = "vectorbt, first run (numba cache)"


# --- what runs ----------------------------------------------------------------------------------


def command_argv(
    data_file: Path, json_out: Path, overrides: dict[str, str] = OVERRIDES
) -> list[str]:
    """The whole command as a user types it; the console script of this interpreter's venv."""
    return [
        *command_head(),
        "backtest",
        "--klines",
        str(data_file),
        "--symbol",
        SYMBOL,
        *override_flags(overrides),
        "--json",
        str(json_out),
        "--quiet",
    ]


def shown_command(argv: Sequence[str]) -> str:
    """The command as the document shows it: `bandwagon ...`, paths relative to the repo."""
    return " ".join(["bandwagon", *argv[1:]]).replace(str(ROOT) + os.sep, "")


def command_marks(document: dict[str, Any], time_ms: Ints) -> list[FillMark]:
    """The command's TRADEs as fill marks (`BollingerBands_buy_long` opens, `..._sell_long`
    closes a long, SPEC TRADE.action)."""
    trades = document["trades"]
    times = np.array([trade["time"] for trade in trades], dtype=np.int64)
    indexes = np.searchsorted(time_ms, times).tolist()
    return [
        FillMark(
            index,
            (trade["type"] == "buy") == (trade["position_side"] == "long"),
            trade["type"],
        )
        for index, trade in zip(indexes, trades, strict=True)
    ]


# --- measuring: BollingerBands ------------------------------------------------------------------


def measure(
    columns: UpdateColumns,
    data_file: Path,
    repeats: Repeats,
    say: Callable[[str], None],
) -> Figures:
    cache = cache_dir()
    time_ms, price = columns.time_ms, columns.price
    bot = bench_bot()
    rules = Rules.of(bot)
    measured: list[Row] = []

    say(f"{CORE}: SymbolStrategy.on_batch, median of {repeats.core}")
    core = median_of(lambda: run_core(bot, columns), repeats.core)
    reference = bandwagon_marks(core.result, time_ms)
    liquidations = sum(fill.action.startswith("liquidation_") for fill in core.result)
    measured.append(
        Row(
            CORE,
            "`SymbolStrategy.on_batch` over the updates as columns",
            core.median,
            repeats.core,
            len(reference),
            "reference",
            [f"{liquidations} liquidations"],
        )
    )

    say(f"{RUN_BACKTEST}: median of {repeats.run_backtest}")
    whole = median_of(lambda: _run_backtest(bot, columns), repeats.run_backtest)
    measured.append(
        Row(
            RUN_BACKTEST,
            "`tools.backtest.engine.run_backtest` on the file's updates as columns: core,"
            " kline series",
            whole.median,
            repeats.run_backtest,
            len(whole.result),
            compared(bandwagon_marks(whole.result, time_ms), reference),
        )
    )

    json_out = cache / "backtest-speed.json"
    argv = command_argv(data_file, json_out)
    say(f"{COMMAND}: a fresh process each, median of {repeats.command}")
    command_seconds = [
        run_process(argv, cwd=ROOT, timeout_s=300).seconds for _ in range(repeats.command)
    ]
    document = orjson.loads(json_out.read_bytes())
    measured.append(
        Row(
            COMMAND,
            "the command, process start to JSON written, CSV parsing included",
            float(np.median(command_seconds)),
            repeats.command,
            len(document["trades"]),
            compared(command_marks(document, time_ms), reference),
        )
    )

    say(f"{FLOOR}: median of {repeats.floor}")
    floor = median_of(lambda: numpy_floor(price, rules), repeats.floor)
    measured.append(
        Row(
            FLOOR,
            "bands, crosses, positions, fills and PnL as whole-array numpy operations",
            floor.median,
            repeats.floor,
            len(floor.result.fill_index),
            compared(floor.result.marks(), reference),
        )
    )

    say(f"{BACKTESTING_PY}: median of {repeats.backtesting_py}")
    frame = backtesting_frame(time_ms, price)
    backtesting = median_of(lambda: run_backtesting_py(frame, rules), repeats.backtesting_py)
    backtesting_fills = backtesting_marks(backtesting.result)
    prices = backtesting_price_difference(
        backtesting.result, core.result, time_ms, rules.slippage_pct
    )
    measured.append(
        Row(
            BACKTESTING_PY,
            "`FractionalBacktest(...).run()` on a prepared DataFrame, statistics included",
            backtesting.median,
            repeats.backtesting_py,
            len(backtesting_fills),
            compared(backtesting_fills, reference, prices),
        )
    )

    measured += _vectorbt_rows(cache, time_ms, price, rules, repeats, reference, say)
    return Figures(
        rows=tuple(measured),
        update_count=len(columns),
        data_file=data_file,
        command=shown_command(argv),
        machine=machine_line(PEER_PACKAGES),
        date=datetime.now(UTC).date().isoformat(),
    )


def _run_backtest(bot: BotConfig, columns: UpdateColumns) -> list[Fill]:
    result = run_backtest(bot, {SYMBOL: columns}, time_zone_offset_min=0, with_bands=False)
    return result.symbols[0].fills


def _vectorbt_rows(
    cache: Path,
    time_ms: Ints,
    price: Floats,
    rules: Rules,
    repeats: Repeats,
    reference: Sequence[FillMark],
    say: Callable[[str], None],
) -> list[Row]:
    """First runs in fresh processes (numba's cache emptied before each cold one, then left
    filled), then warm runs in this process, whose numba uses that same filled cache."""
    prices_file = cache / "backtest-speed-prices.npz"
    np.savez(prices_file, time_ms=time_ms, price=price, rules=json.dumps(asdict(rules)))
    numba_cache = cache / "numba-cache"
    argv = [sys.executable, "-m", "benches.vectorbt_first_run", str(prices_file)]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), "PYTHONPATH": str(ROOT)}
    rows: list[Row] = []
    for name, empty_cache in ((VECTORBT_COLD, True), (VECTORBT_CACHED, False)):
        say(f"{name}: a fresh process each, median of {repeats.vectorbt_fresh}")
        runs = []
        for _ in range(repeats.vectorbt_fresh):
            if empty_cache:
                shutil.rmtree(numba_cache, ignore_errors=True)
            run = run_process(argv, env=env, cwd=ROOT, timeout_s=600)
            runs.append((run.seconds, json.loads(run.stdout.strip().splitlines()[-1])))
        seconds = float(np.median([wall for wall, _ in runs]))
        import_s = float(np.median([figures["import_s"] for _, figures in runs]))
        first_s = float(np.median([figures["first_run_s"] for _, figures in runs]))
        marks = [FillMark(index, opens, side) for index, opens, side in runs[-1][1]["fills"]]
        rows.append(
            Row(
                name,
                "a fresh process, start to result: import vectorbt, then the first run",
                seconds,
                repeats.vectorbt_fresh,
                len(marks),
                compared(marks, reference),
                [f"import {import_s:.2f} s", f"first run {first_s:.2f} s"],
                first_s,
            )
        )

    say(f"{VECTORBT_WARM}: median of {repeats.vectorbt_warm}, after a first run")
    run_vectorbt(time_ms, price, rules)
    warm = median_of(lambda: run_vectorbt(time_ms, price, rules), repeats.vectorbt_warm)
    warm_fills = vectorbt_marks(warm.result)
    rows.insert(
        0,
        Row(
            VECTORBT_WARM,
            "`vbt.BBANDS.run` + crosses + `Portfolio.from_signals`, compiled",
            warm.median,
            repeats.vectorbt_warm,
            len(warm_fills),
            compared(warm_fills, reference),
        ),
    )
    return rows


# --- measuring: RSI and MACD --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LevelFigures:
    """One strategy's core beside backtesting.py, and what its indicator costs on its own."""

    strategy: str
    parameters: str
    core: Row
    backtesting_py: Row
    indicator_seconds: float

    @property
    def ratio(self) -> float:
        return self.backtesting_py.seconds / self.core.seconds


def level_rules(bot: BotConfig) -> LevelRules:
    return RsiRules.of(bot) if bot.strategy.name == "RSI" else MacdRules.of(bot)


def measure_level(
    strategy: str, columns: UpdateColumns, repeats: Repeats, say: Callable[[str], None]
) -> LevelFigures:
    """The core on a bot trading `strategy` (the Bollinger bot's terms, the strategy's default
    parameters), then backtesting.py on the same rule, given the per-window indicator."""
    time_ms, price = columns.time_ms, columns.price
    bot = bench_bot(strategy, LASTING_OVERRIDES)
    rules = level_rules(bot)
    say(f"{strategy}: {CORE}, median of {repeats.level_core}")
    core = median_of(lambda: run_core(bot, columns), repeats.level_core)
    reference = bandwagon_marks(core.result, time_ms)
    liquidations = sum(fill.action.startswith("liquidation_") for fill in core.result)

    say(f"{strategy}: its per-window indicator, median of {repeats.level_indicator}")
    indicator = median_of(lambda: indicator_per_window(price, rules), repeats.level_indicator)
    frame = backtesting_frame(time_ms, price, indicator.result)
    say(f"{strategy}: {BACKTESTING_PY}, median of {repeats.level_backtesting_py}")
    backtesting = median_of(lambda: run_backtesting_py(frame, rules), repeats.level_backtesting_py)
    marks = backtesting_marks(backtesting.result)
    prices = backtesting_price_difference(
        backtesting.result, core.result, time_ms, rules.slippage_pct
    )
    own = bot.strategy.parameters
    return LevelFigures(
        strategy,
        ", ".join(f"{name} {value:g}" for name, value in own.items()),
        Row(
            CORE,
            "`SymbolStrategy.on_batch` over the updates as columns: the indicator of every"
            " window, crosses, fills",
            core.median,
            repeats.level_core,
            len(reference),
            "reference",
            [f"{liquidations} liquidations"],
        ),
        Row(
            BACKTESTING_PY,
            "`FractionalBacktest(...).run()` on a prepared DataFrame carrying the per-window"
            " indicator, statistics included",
            backtesting.median,
            repeats.level_backtesting_py,
            len(marks),
            compared(marks, reference, prices),
            [f"the indicator, computed before: {seconds_text(indicator.median)}"],
        ),
        indicator.median,
    )


# --- reporting ----------------------------------------------------------------------------------


def goals(figures: Figures) -> list[tuple[str, str, bool]]:
    """(goal, what was measured, met) of issue 4 point 4 and issue 16."""
    core, command = figures.row(CORE), figures.row(COMMAND)
    backtesting = figures.row(BACKTESTING_PY)
    cold = figures.row(VECTORBT_COLD)
    ratio = backtesting.seconds / core.seconds
    whole_ratio = backtesting.seconds / figures.row(RUN_BACKTEST).seconds
    cold_first = cold.first_run_seconds or 0.0
    return [
        (
            f"core >= {CORE_GOAL_X:.0f}x faster than backtesting.py (issue 16; issue 4: 20x)",
            f"{ratio:.1f}x (run_backtest: {whole_ratio:.1f}x)",
            ratio >= CORE_GOAL_X,
        ),
        (
            "whole command faster than vectorbt's first run",
            f"{seconds_text(command.seconds)} vs {seconds_text(cold.seconds)} for the process"
            f" ({cold_first:.2f} s of it the first run itself)",
            command.seconds < cold.seconds,
        ),
    ]


def level_goals(levels: Sequence[LevelFigures]) -> list[tuple[str, str, bool]]:
    return [
        (
            f"{level.strategy}: core >= {LEVEL_GOAL_X:.0f}x faster than backtesting.py"
            " on the same rule (issue 16)",
            f"{level.ratio:.1f}x ({seconds_text(level.core.seconds)} vs"
            f" {seconds_text(level.backtesting_py.seconds)})",
            level.ratio >= LEVEL_GOAL_X,
        )
        for level in levels
    ]


def print_figures(console: Console, figures: Figures) -> None:
    core = figures.row(CORE).seconds
    table = Table(
        title=f"Backtest speed: {figures.update_count:,} updates of 1-minute klines, one symbol",
        title_justify="left",
    )
    table.add_column("implementation")
    table.add_column("median", justify="right")
    table.add_column("/ core", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("fills", justify="right")
    table.add_column("same fills", max_width=28)
    table.add_column("notes", max_width=36)
    for row in figures.rows:
        table.add_row(row.name, *row_cells(row, core))
    console.print(table)
    print_goals(console, goals(figures))
    console.print(f"machine: {figures.machine}")


def print_levels(console: Console, levels: Sequence[LevelFigures]) -> None:
    table = Table(title="RSI and MACD: the core beside backtesting.py", title_justify="left")
    for name in ("strategy", "implementation", "median", "/ core", "runs", "fills"):
        table.add_column(name, justify="right" if name in ("median", "/ core") else "left")
    table.add_column("same fills", max_width=28)
    table.add_column("notes", max_width=36)
    for level in levels:
        for row in (level.core, level.backtesting_py):
            table.add_row(level.strategy, row.name, *row_cells(row, level.core.seconds))
    console.print(table)
    print_goals(console, level_goals(levels))


def markdown(figures: Figures) -> str:
    """The generated part of the section: when, where, how, the table and the goals."""
    core = figures.row(CORE).seconds
    lines = [
        BEGIN_MARK,
        "",
        f"Measured {figures.date} on {figures.machine}.",
        "",
        f"Data: `{figures.data_file.relative_to(ROOT)}`, {figures.update_count:,} klines.",
        f"Command: `{figures.command}`",
        "",
        "| implementation | what the time covers | median | / core | runs | fills"
        " | same fills as the core | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [markdown_row(row, core) for row in figures.rows]
    lines += ["", *goal_lines(goals(figures)), "", END_MARK]
    return "\n".join(lines)


def levels_markdown(
    levels: Sequence[LevelFigures], data_file: Path, update_count: int, command: str
) -> str:
    lines = [
        STRATEGIES_BEGIN_MARK,
        "",
        f"Measured {datetime.now(UTC).date().isoformat()} on {machine_line(PEER_PACKAGES)}.",
        "",
        f"Data: `{data_file.relative_to(ROOT)}`, {update_count:,} klines.",
        f"The same trades as (not timed here): `{command}`",
        "",
        "| strategy | implementation | what the time covers | median | / core | runs | fills"
        " | same fills as the core | notes |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for level in levels:
        for row in (level.core, level.backtesting_py):
            strategy = f"{level.strategy} ({level.parameters})"
            lines.append(f"| {strategy} {markdown_row(row, level.core.seconds)}")
    lines += ["", *goal_lines(level_goals(levels)), "", STRATEGIES_END_MARK]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.backtest_speed", description=__doc__)
    parser.add_argument("--rows", type=int, default=YEAR_MINUTES, help="klines (default a year)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--doc", type=Path, default=DOC_PATH, help="the document to update")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="one run of each, for a try")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"which parts to measure, comma-separated (default: {','.join(PARTS)})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise SystemExit(f"--parts: {', '.join(unknown) or '(none)'}: not one of {PARTS}")
    os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar
    # This process's numba (vectorbt, warm) uses the cache its fresh processes filled.
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba-cache")
    peers = ("backtesting", "vectorbt")
    missing = [name for name in peers if package_version(name) == "not installed"]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: not installed; `make bench` installs the extra")
    console = Console(width=None if sys.stdout.isatty() else 160)  # room for the table in logs
    once = {repeat.name: 1 for repeat in fields(Repeats)}
    repeats = Repeats(**once) if args.quick else Repeats()

    def say(text: str) -> None:
        console.log(text)

    import_backtesting_py()
    say(f"data: {args.rows} 1-minute klines, seed {args.seed}")
    data_file = klines_csv(args.rows, args.seed)
    columns = read_columns(data_file)
    blocks: list[tuple[str, str, str]] = []  # (markdown, begin mark, end mark)
    if "sweep" in parts:
        # First, while this process is small: the sweep forks its workers from it.
        sweep = sweep_speed.measure_sweep(columns, data_file, repeats, say)
        sweep_speed.print_sweep(console, sweep)
        blocks.append((sweep_speed.markdown(sweep), sweep_speed.BEGIN_MARK, sweep_speed.END_MARK))
    if "bollinger" in parts:
        figures = measure(columns, data_file, repeats, say)
        print_figures(console, figures)
        blocks.append((markdown(figures), BEGIN_MARK, END_MARK))
    if "strategies" in parts:
        levels = [measure_level(name, columns, repeats, say) for name in LEVEL_STRATEGIES]
        print_levels(console, levels)
        argv = command_argv(data_file, cache_dir() / "backtest-speed.json", LASTING_OVERRIDES)
        command = shown_command([*argv[:6], "--strategy", "RSI|MACD", *argv[6:-3]])
        blocks.append(
            (
                levels_markdown(levels, data_file, len(columns), command),
                STRATEGIES_BEGIN_MARK,
                STRATEGIES_END_MARK,
            )
        )
    if not args.no_doc:
        for block, begin, end in blocks:
            write_section(args.doc, block, begin, end)
        console.print(f"written: {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
