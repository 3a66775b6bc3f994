"""Backtest speed: Bandwagon's exact live core beside backtesting.py, vectorbt and a numpy floor,
all measured in one run on one year of seeded 1-minute klines (issue 4, point 4).

    python -m benches.backtest_speed [--rows N] [--no-doc]     (`make bench` runs it)

Every figure is measured in this run, on this machine, next to the others; nothing is a timed
assertion. Each implementation also reports its fills, checked against Bandwagon's, so a reader
can see that they do the same work. The figures go to a rich table and, unless `--no-doc`, into
the "Backtest speed" section of docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

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
    Rules,
    backtesting_frame,
    backtesting_marks,
    bandwagon_marks,
    first_difference,
    numpy_floor,
    run_backtesting_py,
    run_vectorbt,
    vectorbt_marks,
)
from benches.timing import machine_line, median_of, package_version, run_process
from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.core.sim_exchange import Fill
from libs.trading import new_symbol_strategy
from tools.backtest.engine import BATCH_UPDATES, run_backtest
from tools.backtest.inputs import apply_overrides, choose_bot

SYMBOL = "ETH-USDT"
# Taker fills (what every peer can do); leverage 1 and a large capital keep the symbol trading
# all year: no liquidation (which no peer models per position), no order below min_size.
OVERRIDES = {"order-type": "taker", "leverage": "1", "start-capital": "100000"}
DOC_PATH = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- backtest-speed:begin (written by python -m benches.backtest_speed) -->"
END_MARK = "<!-- backtest-speed:end -->"
PEER_PACKAGES = ("numpy", "ta-lib", "pandas", "backtesting", "vectorbt", "numba")
CORE_GOAL_X = 20.0  # the core at least this many times faster than backtesting.py


@dataclass(frozen=True, slots=True)
class Repeats:
    core: int = 7
    run_backtest: int = 5
    floor: int = 15
    command: int = 3
    backtesting_py: int = 3
    vectorbt_warm: int = 5
    vectorbt_fresh: int = 2


@dataclass(slots=True)
class Row:
    """One line of the table: what ran, what its time covers, its median and its fills."""

    name: str
    covers: str
    seconds: float
    runs: int
    fills: int
    same_fills: str  # "yes", or where the fills part from Bandwagon's core
    notes: list[str] = field(default_factory=list)
    first_run_seconds: float | None = None  # a fresh vectorbt process: its first run alone


@dataclass(frozen=True, slots=True)
class Figures:
    rows: tuple[Row, ...]
    update_count: int
    data_file: Path
    command: str
    machine: str
    date: str

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)


CORE = "Bandwagon core"
RUN_BACKTEST = "Bandwagon run_backtest"
COMMAND = "bandwagon backtest"
FLOOR = "numpy floor"
BACKTESTING_PY = "backtesting.py"
VECTORBT_WARM = "vectorbt, warm"
VECTORBT_COLD = "vectorbt, first run (JIT)"
VECTORBT_CACHED = "vectorbt, first run (numba cache)"


# --- what runs ----------------------------------------------------------------------------------


def bench_bot() -> BotConfig:
    """The demo bot narrowed to ETH-USDT, as `bandwagon backtest` builds it, with `OVERRIDES`."""
    return apply_overrides(choose_bot(None, None, SYMBOL), OVERRIDES, [SYMBOL])


def command_argv(data_file: Path, json_out: Path) -> list[str]:
    """The whole command as a user types it; the console script of this interpreter's venv."""
    script = Path(sys.executable).with_name("bandwagon")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "tools.cli"]
    flags = [item for name, value in OVERRIDES.items() for item in (f"--{name}", value)]
    return [
        *head,
        "backtest",
        "--klines",
        str(data_file),
        "--symbol",
        SYMBOL,
        *flags,
        "--json",
        str(json_out),
        "--quiet",
    ]


def run_core(bot: BotConfig, columns: UpdateColumns) -> list[Fill]:
    """What `tools.backtest.engine.run_symbol` runs of the core: `on_batch` over batches of the
    updates, without per-kline bands (a backtest without a plot)."""
    strategy = new_symbol_strategy(bot, 0)
    fills: list[Fill] = []
    for start in range(0, len(columns), BATCH_UPDATES):
        chunk = columns.between(start, min(len(columns), start + BATCH_UPDATES))
        fills.extend(strategy.on_batch(chunk, kline_limit=1).fills)
    return fills


def compared(marks: Sequence[FillMark], reference: Sequence[FillMark]) -> str:
    difference = first_difference(marks, reference)
    return "yes" if difference is None else f"no: {difference}"


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


# --- measuring ----------------------------------------------------------------------------------


def measure(
    rows: int,
    seed: int,
    repeats: Repeats,
    say: Callable[[str], None],
) -> Figures:
    cache = cache_dir()
    say(f"data: {rows} 1-minute klines, seed {seed}")
    data_file = klines_csv(rows, seed)
    columns = read_columns(data_file)
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
            "`tools.backtest.engine.run_backtest` on the file's updates as columns: core, klines",
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
    measured.append(
        Row(
            BACKTESTING_PY,
            "`FractionalBacktest(...).run()` on a prepared DataFrame, statistics included",
            backtesting.median,
            repeats.backtesting_py,
            len(backtesting_fills),
            compared(backtesting_fills, reference),
        )
    )

    measured += _vectorbt_rows(cache, time_ms, price, rules, repeats, reference, say)
    return Figures(
        rows=tuple(measured),
        update_count=len(columns),
        data_file=data_file,
        command=" ".join(["bandwagon", *argv[1:]]).replace(str(ROOT) + os.sep, ""),
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


# --- reporting ----------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def goals(figures: Figures) -> list[tuple[str, str, bool]]:
    """(goal, what was measured, met) of issue 4 point 4."""
    core, command = figures.row(CORE), figures.row(COMMAND)
    backtesting = figures.row(BACKTESTING_PY)
    cold = figures.row(VECTORBT_COLD)
    ratio = backtesting.seconds / core.seconds
    whole_ratio = backtesting.seconds / figures.row(RUN_BACKTEST).seconds
    cold_first = cold.first_run_seconds or 0.0
    return [
        (
            f"core >= {CORE_GOAL_X:.0f}x faster than backtesting.py",
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
        table.add_row(
            row.name,
            seconds_text(row.seconds),
            f"{row.seconds / core:.1f}x",
            str(row.runs),
            f"{row.fills:,}",
            row.same_fills,
            ", ".join(row.notes),
        )
    console.print(table)
    for goal, value, met in goals(figures):
        mark = "[green]met[/green]" if met else "[red]not met[/red]"
        console.print(f"goal: {goal}: {value}: {mark}")
    console.print(f"machine: {figures.machine}")


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
    for row in figures.rows:
        lines.append(
            f"| {row.name} | {row.covers} | {seconds_text(row.seconds)}"
            f" | {row.seconds / core:.1f}x | {row.runs} | {row.fills:,} | {row.same_fills}"
            f" | {', '.join(row.notes)} |"
        )
    lines += ["", "| goal (issue 4) | measured | met |", "| --- | --- | --- |"]
    for goal, value, met in goals(figures):
        lines.append(f"| {goal} | {value} | {'yes' if met else 'no'} |")
    lines += ["", END_MARK]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.backtest_speed", description=__doc__)
    parser.add_argument("--rows", type=int, default=YEAR_MINUTES, help="klines (default a year)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--doc", type=Path, default=DOC_PATH, help="the document to update")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="one run of each, for a try")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    figures = measure(args.rows, args.seed, repeats, lambda text: console.log(text))
    print_figures(console, figures)
    if not args.no_doc:
        write_section(args.doc, markdown(figures), BEGIN_MARK, END_MARK)
        console.print(f"written: {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
