"""Sweep speed: `bandwagon backtest --sweep`'s runner over a 10 x 10 BollingerBands grid beside
vectorbt's own vectorized sweep of the same grid (issue 16), on the year of klines of
`benches.backtest_speed`, which runs it (`--parts sweep`).

The grid: `period` 10, 15, ... 55 x `nbdev` 1.0, 1.25, ... 3.25 (both deviations), 100
combinations, each on the Bollinger bench bot (taker fills, mode both, leverage 1, capital
100,000). Bandwagon's figures are `tools.backtest.sweep.run_sweep` on 2 worker processes (what
`bandwagon backtest --sweep ... --workers 2` runs, the machine having 2 cores) and the command
itself; vectorbt's are its sweep warm and in fresh processes (numba's compilation, or its cache).
Each combination's fill count is compared, and the fills themselves (update, side, opening or
closing) of `Repeats.sweep_marks` combinations, Bandwagon's from its core.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from benches.backtest_common import (
    LASTING_OVERRIDES,
    SYMBOL,
    Figures,
    Row,
    bench_bot,
    command_head,
    goal_lines,
    markdown_row,
    override_flags,
    print_goals,
    row_cells,
    run_core,
    seconds_text,
)
from benches.data import ROOT, cache_dir
from benches.strategies import (
    FillMark,
    Rules,
    Terms,
    VectorbtSweep,
    bandwagon_marks,
    first_difference,
    run_vectorbt_sweep,
)
from benches.timing import machine_line, median_of, run_process
from libs.exchange.market_files import FileKind
from tools.backtest.inputs import MarketFile, TimeRange, apply_overrides
from tools.backtest.sweep import Grid, SweepRow, as_overrides, run_sweep

if TYPE_CHECKING:
    from benches.backtest_speed import Repeats
    from libs.core.batch import UpdateColumns

BEGIN_MARK = "<!-- sweep-speed:begin (written by python -m benches.backtest_speed) -->"
END_MARK = "<!-- sweep-speed:end -->"
PERIODS = tuple(range(10, 60, 5))
NBDEVS = tuple(1.0 + 0.25 * step for step in range(10))
WORKERS = 2
PEER_PACKAGES = ("numpy", "ta-lib", "pandas", "vectorbt", "numba")
# Combinations whose fills are compared one by one when not all are (`Repeats.sweep_marks`):
# the grid's corners and the default bot's.
SPOT_CHECKS = ((20, 2.0), (10, 1.0), (55, 3.25), (10, 3.25), (55, 1.0))

SWEEP = "Bandwagon sweep"
SWEEP_COMMAND = "bandwagon backtest --sweep"
VECTORBT_WARM = "vectorbt sweep, warm"
VECTORBT_COLD = "vectorbt sweep, first run (JIT)"
VECTORBT_CACHED = "vectorbt sweep, first run (numba cache)"


@dataclass(frozen=True, slots=True)
class SweepFigures(Figures):
    combinations: int


def grid() -> Grid:
    """The grid as `--sweep period=... nbdev=...` gives it to `run_sweep`."""
    return [
        ("period", [str(period) for period in PERIODS]),
        ("nbdev", [f"{nbdev:g}" for nbdev in NBDEVS]),
    ]


def combination_key(period: int | str, nbdev: float | str) -> tuple[int, float]:
    return int(period), float(nbdev)


def counts_by_combination(rows: Sequence[SweepRow]) -> dict[tuple[int, float], int]:
    return {
        combination_key(row.parameters["period"], row.parameters["nbdev"]): row.fill_count
        for row in rows
    }


def sweep_argv(data_file: Path, json_out: Path) -> list[str]:
    """`bandwagon backtest --sweep` of the grid, as a user types it."""
    return [
        *command_head(),
        "backtest",
        "--klines",
        str(data_file),
        "--symbol",
        SYMBOL,
        *override_flags(LASTING_OVERRIDES),
        "--sweep",
        *(f"{name}={','.join(values)}" for name, values in grid()),
        "--workers",
        str(WORKERS),
        "--json",
        str(json_out),
        "--quiet",
    ]


def count_difference(
    counts: Sequence[int],
    combinations: Sequence[tuple[int, float]],
    reference: dict[tuple[int, float], int],
) -> str | None:
    """Where per-combination fill counts part from Bandwagon's: None when all agree."""
    differing = [
        (combination, count, reference.get(combination))
        for combination, count in zip(combinations, counts, strict=True)
        if reference.get(combination) != count
    ]
    if len(counts) != len(reference):
        return f"{len(counts)} combinations, Bandwagon's {len(reference)}"
    if not differing:
        return None
    (period, nbdev), count, own = differing[0]
    return (
        f"{len(differing)} of {len(counts)} combinations differ, first period {period} nbdev"
        f" {nbdev:g}: {count} fills, Bandwagon's {own}"
    )


def measure_sweep(
    columns: UpdateColumns,
    data_file: Path,
    repeats: Repeats,
    say: Callable[[str], None],
) -> SweepFigures:
    bot = bench_bot(overrides=LASTING_OVERRIDES)
    files = (MarketFile(SYMBOL, data_file, FileKind.KLINES),)
    the_grid = grid()
    combinations = [combination_key(period, nbdev) for period in PERIODS for nbdev in NBDEVS]
    rows: list[Row] = []

    say(f"{SWEEP}: run_sweep on {WORKERS} processes, median of {repeats.sweep}")
    sweep = median_of(
        lambda: run_sweep(bot, the_grid, files, TimeRange(), workers=WORKERS), repeats.sweep
    )
    reference = counts_by_combination(sweep.result)
    rows.append(
        Row(
            SWEEP,
            f"`tools.backtest.sweep.run_sweep` on {WORKERS} processes: pool start, the CSV read"
            " once per process, a `run_backtest` and its statistics per combination, ranked",
            sweep.median,
            repeats.sweep,
            sum(reference.values()),
            "reference",
            [f"{len(reference)} combinations"],
        )
    )

    json_out = cache_dir() / "sweep-speed.json"
    argv = sweep_argv(data_file, json_out)
    say(f"{SWEEP_COMMAND}: a fresh process each, median of {repeats.sweep_command}")
    command_seconds = [
        run_process(argv, cwd=ROOT, timeout_s=1800).seconds for _ in range(repeats.sweep_command)
    ]
    document = orjson.loads(json_out.read_bytes())
    command_counts = {
        combination_key(row["parameters"]["period"], row["parameters"]["nbdev"]): row["fill_count"]
        for row in document
    }
    difference = count_difference(list(command_counts.values()), list(command_counts), reference)
    rows.append(
        Row(
            SWEEP_COMMAND,
            "the command, process start to JSON written: imports, the same run_sweep",
            float(np.median(command_seconds)),
            repeats.sweep_command,
            sum(command_counts.values()),
            "yes" if difference is None else f"no: {difference}",
        )
    )

    rows += _vectorbt_rows(columns, bot_terms(), combinations, reference, repeats, say)
    return SweepFigures(
        rows=tuple(rows),
        combinations=len(combinations),
        update_count=len(columns),
        data_file=data_file,
        command=" ".join(["bandwagon", *argv[1:]]).replace(str(ROOT) + os.sep, ""),
        machine=machine_line(PEER_PACKAGES),
        date=datetime.now(UTC).date().isoformat(),
    )


def bot_terms() -> Terms:
    """The bench bot's terms (a sweep changes only the strategy's parameters)."""
    rules = Rules.of(bench_bot(overrides=LASTING_OVERRIDES))
    return Terms(**{name: getattr(rules, name) for name in Terms.__dataclass_fields__})


def _vectorbt_rows(
    columns: UpdateColumns,
    terms: Terms,
    combinations: Sequence[tuple[int, float]],
    reference: dict[tuple[int, float], int],
    repeats: Repeats,
    say: Callable[[str], None],
) -> list[Row]:
    """First runs in fresh processes (numba's cache emptied before each cold one), then warm
    runs in this process; then fills compared one by one for some combinations."""
    cache = cache_dir()
    time_ms, price = columns.time_ms, columns.price
    prices_file = cache / "sweep-speed-prices.npz"
    np.savez(
        prices_file,
        time_ms=time_ms,
        price=price,
        kind="sweep",
        terms=json.dumps(asdict(terms)),
        periods=np.array(PERIODS),
        nbdevs=np.array(NBDEVS),
    )
    numba_cache = cache / "numba-cache"
    argv = [sys.executable, "-m", "benches.vectorbt_first_run", str(prices_file)]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), "PYTHONPATH": str(ROOT)}
    rows: list[Row] = []
    for name, empty_cache in ((VECTORBT_COLD, True), (VECTORBT_CACHED, False)):
        say(f"{name}: a fresh process each, median of {repeats.vectorbt_sweep_fresh}")
        runs = []
        for _ in range(repeats.vectorbt_sweep_fresh):
            if empty_cache:
                shutil.rmtree(numba_cache, ignore_errors=True)
            fresh = run_process(argv, env=env, cwd=ROOT, timeout_s=1800)
            runs.append((fresh.seconds, json.loads(fresh.stdout.strip().splitlines()[-1])))
        import_s = float(np.median([figures["import_s"] for _, figures in runs]))
        first_s = float(np.median([figures["first_run_s"] for _, figures in runs]))
        counts = runs[-1][1]["fill_counts"]
        difference = count_difference(counts, combinations, reference)
        rows.append(
            Row(
                name,
                "a fresh process, start to result: import vectorbt, then the first sweep",
                float(np.median([wall for wall, _ in runs])),
                repeats.vectorbt_sweep_fresh,
                sum(counts),
                "yes" if difference is None else f"no: {difference}",
                [f"import {import_s:.2f} s", f"first sweep {first_s:.2f} s"],
                first_s,
            )
        )

    say(f"{VECTORBT_WARM}: median of {repeats.vectorbt_sweep_warm}, after a first run")

    def warm_sweep() -> VectorbtSweep:
        return run_vectorbt_sweep(time_ms, price, terms, PERIODS, NBDEVS)

    warm_sweep()
    warm = median_of(warm_sweep, repeats.vectorbt_sweep_warm)
    counts = warm.result.fill_counts()
    difference = count_difference(counts, combinations, reference)
    checked = _checked_one_by_one(warm.result, columns, repeats.sweep_marks, say)
    rows.insert(
        0,
        Row(
            VECTORBT_WARM,
            "per period: `vbt.BBANDS.run` over the 10 nbdevs + crosses + `Portfolio.from_signals`"
            " + `total_profit()`, compiled",
            warm.median,
            repeats.vectorbt_sweep_warm,
            sum(counts),
            "yes" if difference is None else f"no: {difference}",
            [checked],
        ),
    )
    return rows


def _checked_one_by_one(
    sweep: VectorbtSweep, columns: UpdateColumns, how_many: int, say: Callable[[str], None]
) -> str:
    """The fills of `how_many` combinations (all when it covers the grid, else spot checks)
    compared with the core's, update by update; what the table's note says of it."""
    chosen = list(sweep.combinations) if how_many >= len(sweep.combinations) else []
    chosen = chosen or list(SPOT_CHECKS[: max(1, how_many)])
    say(f"fills of {len(chosen)} combinations, vectorbt's against the core's, one by one")
    base = bench_bot(overrides=LASTING_OVERRIDES)
    differing: list[str] = []
    for period, nbdev in chosen:
        parameters = {"period": str(period), "nbdev": f"{nbdev:g}"}
        bot = apply_overrides(base, as_overrides(parameters), [SYMBOL])
        own = bandwagon_marks(run_core(bot, columns), columns.time_ms)
        theirs = sweep.marks(sweep.combinations.index((period, nbdev)))
        if first_difference(theirs, own) is not None:
            differing.append(f"period {period} nbdev {nbdev:g}: {where_marks_part(theirs, own)}")
    if differing:
        return (
            f"fills of {len(chosen)} combinations compared with the core's, one by one:"
            f" {len(differing)} differ: {'; '.join(differing[:3])}"
        )
    return f"fills of {len(chosen)} combinations compared with the core's, one by one: the same"


def where_marks_part(theirs: Sequence[FillMark], own: Sequence[FillMark]) -> str:
    """The first fill at which two fill lists part, briefly."""
    for number, (their, mine) in enumerate(zip(theirs, own, strict=False)):
        if their != mine:
            what = "opening" if mine.opens else "closing"
            return (
                f"fill {number:,} ({what} {mine.side}) at update {their.index:,},"
                f" the core's at {mine.index:,}"
            )
    return f"{len(theirs):,} fills, the core's {len(own):,}"


# --- reporting ----------------------------------------------------------------------------------


def goals(figures: SweepFigures) -> list[tuple[str, str, bool]]:
    sweep, command = figures.row(SWEEP), figures.row(SWEEP_COMMAND)
    warm, cold = figures.row(VECTORBT_WARM), figures.row(VECTORBT_COLD)
    return [
        (
            f"a {figures.combinations}-combination sweep faster than vectorbt's warm sweep",
            f"{seconds_text(sweep.seconds)} vs {seconds_text(warm.seconds)}"
            f" ({warm.seconds / sweep.seconds:.2f}x)",
            sweep.seconds < warm.seconds,
        ),
        (
            "the sweep command faster than vectorbt's first sweep in a fresh process (JIT)",
            f"{seconds_text(command.seconds)} vs {seconds_text(cold.seconds)}"
            f" ({cold.seconds / command.seconds:.2f}x)",
            command.seconds < cold.seconds,
        ),
    ]


def print_sweep(console: Console, figures: SweepFigures) -> None:
    reference = figures.row(SWEEP).seconds
    table = Table(
        title=f"Sweep: {figures.combinations} BollingerBands combinations,"
        f" {figures.update_count:,} updates each",
        title_justify="left",
    )
    table.add_column("implementation")
    table.add_column("median", justify="right")
    table.add_column("/ sweep", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("fills", justify="right")
    table.add_column("same fills", max_width=32)
    table.add_column("notes", max_width=40)
    for row in figures.rows:
        table.add_row(row.name, *row_cells(row, reference, ratio_digits=2))
    console.print(table)
    print_goals(console, goals(figures))


def markdown(figures: SweepFigures) -> str:
    reference = figures.row(SWEEP).seconds
    lines = [
        BEGIN_MARK,
        "",
        f"Measured {figures.date} on {figures.machine}.",
        "",
        f"Data: `{figures.data_file.relative_to(ROOT)}`, {figures.update_count:,} klines;"
        f" {figures.combinations} combinations.",
        f"Command: `{figures.command}`",
        "",
        "| implementation | what the time covers | median | / Bandwagon sweep | runs"
        " | fills, all combinations | same fill count per combination as Bandwagon | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [markdown_row(row, reference, ratio_digits=2) for row in figures.rows]
    lines += ["", *goal_lines(goals(figures)), "", END_MARK]
    return "\n".join(lines)
