"""The terminal report of a backtest: what a trader reads before deciding to run a bot live.

Rich tables; the numbers are `tools.backtest.engine.BacktestStats`, nothing is computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from libs.config import BotConfig, StrategyConfig
from tools.backtest.engine import BacktestStats


def utc_text(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration_text(span_ms: int) -> str:
    minutes = span_ms // 60_000
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"


def money(value: float, currency: str) -> str:
    return f"{value:+.8g} {currency}"


def run_lines(bot: BotConfig, stats: BacktestStats) -> list[str]:
    """What was run, over what: the lines above the tables."""
    strategy = bot.strategy
    own = " ".join(parameter_texts(strategy.parameters))
    exits = [f"{label} {value:g}%" for label, value in risk_exits_on(strategy)]
    lines = [
        f"bot {bot.id}: {strategy.name} {own}, {strategy.mode}, {strategy.order_type}"
        + "".join(f", {exit}" for exit in exits),
    ]
    if stats.first_time_ms:
        lines.append(
            f"data: {utc_text(stats.first_time_ms)} to {utc_text(stats.last_time_ms)}"
            f" ({duration_text(stats.last_time_ms - stats.first_time_ms)})"
        )
    return lines


def parameter_texts(parameters: Mapping[str, object]) -> list[str]:
    """`period 14`, `nbdev 2`...: a strategy's own parameters as the report and plot show them."""
    return [
        f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in parameters.items()
    ]


def risk_exits_on(strategy: StrategyConfig) -> list[tuple[str, float]]:
    """The risk exits a strategy has on (SPEC 3.3), named, in SPEC's order."""
    exits = (
        ("stop loss", strategy.stop_loss_pct),
        ("take profit", strategy.take_profit_pct),
        ("trailing stop", strategy.trailing_stop_pct),
    )
    return [(label, value) for label, value in exits if value is not None]


def currency_of(bot: BotConfig) -> str:
    currencies = {symbol.currency for symbol in bot.symbols}
    return currencies.pop() if len(currencies) == 1 else "quote"


def summary_table(bot: BotConfig, stats: BacktestStats) -> Table:
    currency = currency_of(bot)
    table = Table(show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row(
        "capital",
        f"{stats.start_capital:.8g} -> {stats.final_capital:.8g} {currency}"
        f" ({stats.return_pct:+.2f} %)",
    )
    table.add_row("realized PnL (fees included)", money(stats.realized_pnl, currency))
    table.add_row("unrealized PnL (open position)", money(stats.unrealized_pnl, currency))
    table.add_row("fees paid", f"{stats.fees_paid:.8g} {currency}")
    table.add_row("trades (fills)", str(stats.fill_count))
    table.add_row(
        "round trips (win / lost)",
        f"{stats.round_trip_count} ({stats.win} / {stats.lost})",
    )
    table.add_row("win rate", f"{stats.win_lost_rate * 100:.1f} %")
    table.add_row("liquidations", str(stats.liquidation_count))
    table.add_row(
        "max drawdown",
        f"{stats.max_drawdown.absolute:.8g} {currency} ({stats.max_drawdown.pct:.2f} %)",
    )
    table.add_row("exposure (time in a position)", f"{stats.exposure_pct:.1f} %")
    return table


def symbols_table(stats: BacktestStats) -> Table:
    table = Table(title="Per symbol, against buy-and-hold", title_justify="left")
    for name in ("symbol", "updates", "fills", "win/lost", "PnL", "exposure", "buy & hold"):
        table.add_column(name, justify="left" if name == "symbol" else "right")
    for symbol in stats.symbols:
        table.add_row(
            symbol.product_id,
            str(symbol.update_count),
            str(symbol.fill_count),
            f"{symbol.win}/{symbol.lost}",
            f"{symbol.realized_pnl + symbol.unrealized_pnl:+.6g}",
            f"{symbol.exposure_pct:.1f} %",
            f"{symbol.buy_and_hold_pct:+.2f} %" if symbol.update_count else "no data",
        )
    return table


def print_report(
    console: Console,
    bot: BotConfig,
    stats: BacktestStats,
    written: Sequence[Path],
    notes: Sequence[str] = (),
) -> None:
    """`notes`: what the run assumed that no config gave (inferred price decimals, say)."""
    for line in run_lines(bot, stats):
        console.print(line, highlight=False)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    console.print(summary_table(bot, stats))
    console.print(symbols_table(stats))
    for path in written:
        console.print(f"wrote {path}")
