"""`bandwagon backtest --sweep period=14,20,30 nbdev=1.5,2,2.5`: every combination of the given
values, each a full backtest of the same core, spread over a process pool, ranked by total PnL.

Runs are independent and CPU-bound, so processes, not threads. Every combination is validated in
the parent first: a bad value stops the sweep before any work, naming the option (exit 78).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from libs.config import BotConfig
from libs.errors import ConfigError
from libs.trading import load_strategy
from tools.backtest.engine import backtest_stats, run_backtest
from tools.backtest.inputs import (
    OVERRIDE_OPTIONS,
    PARAM_PREFIX,
    PARAMETER_NAME,
    MarketFile,
    TimeRange,
    apply_overrides,
    load_updates,
)

Grid = list[tuple[str, list[str]]]


@dataclass(frozen=True, slots=True)
class SweepRow:
    parameters: dict[str, str]
    total_pnl: float
    return_pct: float
    win_lost_rate: float
    max_drawdown: float
    max_drawdown_pct: float
    fill_count: int
    round_trip_count: int
    exposure_pct: float


@dataclass(frozen=True, slots=True)
class SweepJob:
    bot: BotConfig  # the flags of this combination already applied
    parameters: dict[str, str]
    files: tuple[MarketFile, ...]
    time_range: TimeRange


def parse_grid(texts: Sequence[str]) -> Grid:
    """`NAME=V1,V2,...` each; NAME is an override option (`nbdev_up` or `nbdev-up`), or any
    other identifier for a parameter of the strategy's own (a plug-in's, as `--param`)."""
    grid: Grid = []
    for text in texts:
        name, separator, values_text = text.partition("=")
        name = name.strip().lstrip("-")
        if name.replace("_", "-") in OVERRIDE_OPTIONS:
            name = name.replace("_", "-")
        values = [value.strip() for value in values_text.split(",") if value.strip()]
        if not separator or PARAMETER_NAME.fullmatch(name.replace("-", "_")) is None:
            raise ConfigError(
                "--sweep",
                text,
                f"must be NAME=V1,V2,... with NAME one of {', '.join(OVERRIDE_OPTIONS)}"
                " or a parameter of the strategy's own",
            )
        if not values:
            raise ConfigError("--sweep", text, "lists no value")
        if name in (existing for existing, _ in grid):
            raise ConfigError("--sweep", text, f"{name} is swept twice")
        grid.append((name, values))
    return grid


def combinations(grid: Grid) -> list[dict[str, str]]:
    names = [name for name, _ in grid]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(values for _, values in grid))
    ]


def _swept_bot(
    bot: BotConfig, parameters: Mapping[str, str], product_ids: Sequence[str]
) -> BotConfig:
    """The bot of one combination, its strategy loaded (a plug-in imported, its parameters
    validated): a bad value stops the sweep before any work, named as `--sweep` gave it."""
    try:
        swept = apply_overrides(bot, as_overrides(parameters), product_ids)
        load_strategy(swept)
    except ConfigError as error:
        if error.path.startswith("--") and error.path != "--param":
            raise  # it names the option already (`--period: 1`)
        given = " ".join(f"{name}={value}" for name, value in parameters.items())
        raise ConfigError("--sweep", given, error.reason) from None
    return swept


def as_overrides(parameters: Mapping[str, str]) -> dict[str, str]:
    """A combination as `apply_overrides` takes it: a name no option has is the strategy's own
    parameter."""
    return {
        name if name in OVERRIDE_OPTIONS else f"{PARAM_PREFIX}{name}": value
        for name, value in parameters.items()
    }


def run_job(job: SweepJob) -> SweepRow:
    """One combination, in a worker process (the files are read once per process)."""
    updates = load_updates(job.files, job.bot.period_ms, job.time_range, quiet=True)
    result = run_backtest(job.bot, updates, time_zone_offset_min=0, with_bands=False)
    stats = backtest_stats(result)
    return SweepRow(
        parameters=job.parameters,
        total_pnl=stats.total_pnl,
        return_pct=stats.return_pct,
        win_lost_rate=stats.win_lost_rate,
        max_drawdown=stats.max_drawdown.absolute,
        max_drawdown_pct=stats.max_drawdown.pct,
        fill_count=stats.fill_count,
        round_trip_count=stats.round_trip_count,
        exposure_pct=stats.exposure_pct,
    )


def run_sweep(
    bot: BotConfig,
    grid: Grid,
    files: tuple[MarketFile, ...],
    time_range: TimeRange,
    workers: int | None = None,
) -> list[SweepRow]:
    """Every combination, best total PnL first (ties keep the grid's order)."""
    product_ids = [market_file.product_id for market_file in files]
    jobs = [
        SweepJob(_swept_bot(bot, parameters, product_ids), parameters, files, time_range)
        for parameters in combinations(grid)
    ]
    processes = workers or min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=processes) as pool:
        rows = list(pool.map(run_job, jobs))
    return sorted(rows, key=lambda row: -row.total_pnl)


def sweep_table(grid: Grid, rows: Sequence[SweepRow], currency: str) -> Table:
    table = Table(
        title=f"Sweep: {len(rows)} runs, ranked by total PnL",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("#", justify="right")
    for name, _ in grid:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    headers = (f"PnL {currency}", "win %", "drawdown %", "fills", "trips")
    for name in headers:
        table.add_column(name, justify="right", no_wrap=True)
    for rank, row in enumerate(rows, start=1):
        table.add_row(
            str(rank),
            *(row.parameters[name] for name, _ in grid),
            f"{row.total_pnl:+.6g}",
            f"{row.win_lost_rate * 100:.1f}",
            f"{row.max_drawdown_pct:.2f}",
            str(row.fill_count),
            str(row.round_trip_count),
        )
    return table


def rows_document(rows: Sequence[SweepRow]) -> list[Mapping[str, object]]:
    return [{"rank": rank, **asdict(row)} for rank, row in enumerate(rows, start=1)]


def print_sweep(console: Console, grid: Grid, rows: Sequence[SweepRow], currency: str) -> None:
    console.print(sweep_table(grid, rows, currency))
