"""What the backtest benches share (`benches.backtest_speed`, `benches.sweep_speed`): the bot they
run, the core as `run_backtest` drives it, one measured row, how a time is written, and how a
row's fills are compared with its reference's."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from benches.strategies import FillMark, first_difference
from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.core.sim_exchange import Fill
from libs.trading import new_symbol_strategy
from tools.backtest.engine import BATCH_UPDATES
from tools.backtest.inputs import apply_overrides, choose_bot

SYMBOL = "ETH-USDT"
# Taker fills (what every peer can do); leverage 1 and a large capital keep the symbol trading
# all year: no liquidation (which no peer models per position), no order below min_size.
OVERRIDES = {"order-type": "taker", "leverage": "1", "start-capital": "100000"}
# Bots that trade much more often than the Bollinger bench bot (MACD, the sweep's busiest
# combinations: up to 45,000 round trips a year) would see fees and slippage take their
# capital down to orders below min_size, after which they stop trading while the peers, which
# size otherwise, go on. Each round trip costs ~0.06 % of the capital (0.3 % of a position worth
# 20 % of it): 45,000 leave ~e^-27 of it, so 1e13 still buys a few hundred min_size steps.
LASTING_OVERRIDES = {**OVERRIDES, "start-capital": "1e13"}


def bench_bot(strategy: str | None = None, overrides: dict[str, str] = OVERRIDES) -> BotConfig:
    """The demo bot narrowed to ETH-USDT, as `bandwagon backtest` builds it, with `overrides`;
    `strategy` another built-in (`--strategy`) with its default parameters."""
    if strategy is not None:
        overrides = {**overrides, "strategy": strategy}
    return apply_overrides(choose_bot(None, None, SYMBOL), overrides, [SYMBOL])


def command_head() -> list[str]:
    """`bandwagon` as a user runs it: the console script of this interpreter's venv."""
    script = Path(sys.executable).with_name("bandwagon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tools.cli"]


def override_flags(overrides: dict[str, str] = OVERRIDES) -> list[str]:
    return [item for name, value in overrides.items() for item in (f"--{name}", value)]


def run_core(bot: BotConfig, columns: UpdateColumns) -> list[Fill]:
    """What `tools.backtest.engine.run_symbol` runs of the core: `on_batch` over batches of the
    updates, without per-kline indicator values (a backtest without a plot)."""
    strategy = new_symbol_strategy(bot, 0)
    fills: list[Fill] = []
    for start in range(0, len(columns), BATCH_UPDATES):
        chunk = columns.between(start, min(len(columns), start + BATCH_UPDATES))
        fills.extend(strategy.on_batch(chunk, kline_limit=1).fills)
    return fills


@dataclass(slots=True)
class Row:
    """One line of a table: what ran, what its time covers, its median and its fills."""

    name: str
    covers: str
    seconds: float
    runs: int
    fills: int
    same_fills: str  # "yes", or where the fills part from the reference's
    notes: list[str] = field(default_factory=list)
    first_run_seconds: float | None = None  # a fresh vectorbt process: its first run alone


@dataclass(frozen=True, slots=True)
class Figures:
    """One bench's measured rows and where and how they were measured."""

    rows: tuple[Row, ...]
    update_count: int
    data_file: Path
    command: str
    machine: str
    date: str

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def row_cells(row: Row, reference_seconds: float, ratio_digits: int = 1) -> list[str]:
    """A row's figures after its name, as every table shows them: median, its ratio to the
    reference's, runs, fills, same fills, notes."""
    return [
        seconds_text(row.seconds),
        f"{row.seconds / reference_seconds:.{ratio_digits}f}x",
        str(row.runs),
        f"{row.fills:,}",
        row.same_fills,
        ", ".join(row.notes),
    ]


def markdown_row(row: Row, reference_seconds: float, ratio_digits: int = 1) -> str:
    """`| name | covers | median | ratio | runs | fills | same fills | notes |`."""
    cells = [row.name, row.covers, *row_cells(row, reference_seconds, ratio_digits)]
    return "| " + " | ".join(cells) + " |"


Goal = tuple[str, str, bool]  # the goal, what was measured, met


def print_goals(console: Console, rows: Sequence[Goal]) -> None:
    for goal, value, met in rows:
        mark = "[green]met[/green]" if met else "[red]not met[/red]"
        console.print(f"goal: {goal}: {value}: {mark}")


def goal_lines(rows: Sequence[Goal]) -> list[str]:
    lines = ["| goal | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {goal} | {value} | {'yes' if met else 'no'} |" for goal, value, met in rows]
    return lines


def compared(
    marks: Sequence[FillMark], reference: Sequence[FillMark], prices: str | None = None
) -> str:
    """ "yes" when the fills are the reference's (and `prices`, a price check's first
    difference, is None), else where they part."""
    difference = first_difference(marks, reference) or prices
    return "yes" if difference is None else f"no: {difference}"
