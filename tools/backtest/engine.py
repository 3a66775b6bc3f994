"""The backtest: the live strategy core run over history, and what its run adds up to.

No IO, no clock, no Redis. Each symbol gets the very `SymbolStrategy` the strategy worker builds
(`libs.trading.new_symbol_strategy`), fed its updates in file order through the batch path the
worker runs (`on_batch`, proven equal to one update at a time), so a backtest makes
the trades the live pipeline makes on the same updates (SPEC section 1, determinism; the parity
tests in `tests/e2e/test_backtest_parity.py` prove it field by field). SYMBOL and STATUS come from
the functions accounting uses (`libs.core.portfolio`, `libs.wire.convert`): one formula each.

Symbols of a bot are independent state machines, and order_ids do not depend on how their updates
interleave (SPEC 3.1 rule 13), so each symbol is run to its end before the next one starts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libs.config import BotConfig
from libs.core.batch import UpdateColumns
from libs.core.decimals import format_decimal
from libs.core.market import MarketUpdate
from libs.core.portfolio import StatusFigures, status_figures, symbol_figures
from libs.core.sim_exchange import Fill
from libs.core.strategies.contract import Ints
from libs.core.strategy import SymbolStrategy
from libs.trading import new_symbol_strategy
from libs.wire.convert import status_wire, symbol_scalars, trade_wire
from libs.wire.frames import with_lists

Progress = Callable[[int], None]
"""Called with the number of updates processed since its previous call."""

BATCH_UPDATES = 65_536


# --- the run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class KlineSeries:
    """One row per kline, as its last update left it (SPEC 2.1 rule 14: a kline's strategy values
    are those of its last update): what the plot draws and the drawdown is measured on.

    Columnar lists, so a faster batch runner can fill them with whole arrays.
    """

    time_ms: list[int] = field(default_factory=list)  # the kline's open time
    close: list[float] = field(default_factory=list)
    indicators: dict[str, list[float | None]] = field(default_factory=dict)
    """The strategy's values by name, in the order it declares them."""
    realized_pnl: list[float] = field(default_factory=list)  # the symbol's, at the kline's close
    unrealized_pnl: list[float] = field(default_factory=list)


@dataclass(slots=True)
class SymbolRun:
    """One symbol's run: its final strategy (ledger, price, signal), every fill, and its klines."""

    product_id: str
    price_decimals: int
    strategy: SymbolStrategy
    fills: list[Fill] = field(default_factory=list)
    series: KlineSeries = field(default_factory=KlineSeries)
    update_count: int = 0
    first_price: float = 0.0  # 0 when the symbol had no update, like SYMBOL.price (2.1 rule 14)

    @property
    def first_time_ms(self) -> int:
        return self.strategy.first_time_ms

    @property
    def last_time_ms(self) -> int:
        return self.strategy.last_time_ms


@dataclass(frozen=True, slots=True)
class BacktestResult:
    bot: BotConfig
    symbols: tuple[SymbolRun, ...]  # config order
    time_zone_offset_min: int


def run_symbol(
    run: SymbolRun,
    updates: Iterable[MarketUpdate] | UpdateColumns,
    progress: Progress | None,
    *,
    with_bands: bool = True,
) -> None:
    """Every update through the live core's batch path (`SymbolStrategy.on_batch`, the code the
    strategy worker runs), in order; then the per-kline series from the fills.

    `with_bands` False skips the strategy's indicator values of every kline, which only plots
    need. A strategy that fails (SPEC 3.2 rule 9) stops the run at that update: `StrategyFailed`
    is raised once the updates before it are applied.
    """
    columns = updates if isinstance(updates, UpdateColumns) else UpdateColumns.of(list(updates))
    count = len(columns)
    if count == 0:
        return
    run.first_price = float(columns.price[0])
    strategy = run.strategy
    values: dict[int, tuple[float | None, ...]] = {}
    kline_limit = None if with_bands else 1
    applied, failure = count, None
    for start in range(0, count, BATCH_UPDATES):
        stop = min(count, start + BATCH_UPDATES)
        step = strategy.on_batch(columns.between(start, stop), kline_limit=kline_limit)
        run.fills.extend(step.fills)
        values.update((k.kline.time_ms, k.annotation.values) for k in step.klines)
        if step.failure is not None:
            applied, failure = start + step.failure.index, step.failure
            break
        if progress is not None:
            progress(stop - start)
    run.update_count += applied
    indicators = strategy.params.strategy.indicators
    _record_series(
        run.series, columns.between(0, applied), run.fills, values if with_bands else {}, indicators
    )
    if failure is not None:
        raise failure


def _record_series(
    series: KlineSeries,
    columns: UpdateColumns,
    fills: Sequence[Fill],
    values: Mapping[int, tuple[float | None, ...]],
    names: Sequence[str],
) -> None:
    """One row per kline at its last update: close, the strategy's values, and the symbol's
    realized and unrealized PnL right then, rebuilt from the fills (positions change only at
    fills)."""
    if len(columns) == 0:
        return
    kline_time = columns.kline_time_ms
    last = np.flatnonzero(np.append(kline_time[1:] != kline_time[:-1], True))
    close = columns.close[last]
    at_time = columns.time_ms[last]
    fill_time = np.array([fill.time_ms for fill in fills], dtype=np.int64)
    realized = np.cumsum([0.0] + [fill.usdt_profit for fill in fills])  # in order_id order
    done = np.searchsorted(fill_time, at_time, side="right")  # fills at or before each row
    side = np.zeros(len(fills) + 1, dtype=np.int8)  # the position after each fill: +1/-1/0
    entry = np.zeros(len(fills) + 1, dtype=np.float64)
    size = np.zeros(len(fills) + 1, dtype=np.float64)
    for number, fill in enumerate(fills, start=1):
        opens = fill.round_trip is None
        side[number] = (1 if fill.position_side == "long" else -1) if opens else 0
        entry[number] = fill.price if opens else 0.0
        size[number] = float(fill.size) if opens else 0.0
    position_side, position_entry, position_size = side[done], entry[done], size[done]
    unrealized = np.where(
        position_side > 0,
        (close - position_entry) * position_size,  # as `Position.unrealized_pnl` computes it
        np.where(position_side < 0, (position_entry - close) * position_size, 0.0),
    )
    series.time_ms.extend(kline_time[last].tolist())
    series.close.extend(close.tolist())
    for position, name in enumerate(names):
        column = series.indicators.setdefault(name, [])
        if not values:  # a run without a plot: no values to look up, kline by kline
            column.extend([None] * len(last))
            continue
        for time_ms in kline_time[last].tolist():
            row = values.get(time_ms)
            column.append(row[position] if row else None)
    series.realized_pnl.extend(realized[done].tolist())
    series.unrealized_pnl.extend(unrealized.tolist())


def run_backtest(
    bot: BotConfig,
    updates: Mapping[str, Iterable[MarketUpdate] | UpdateColumns],
    *,
    time_zone_offset_min: int,
    progress: Progress | None = None,
    with_bands: bool = True,
) -> BacktestResult:
    """Run each symbol's updates (keyed by product_id) through a fresh core built from `bot`.

    A symbol without updates stays as a new bot's symbol is before any market data.
    """
    known = {symbol.product_id for symbol in bot.symbols}
    for product_id in updates:
        if product_id not in known:
            raise ValueError(f"bot {bot.id} has no symbol {product_id!r}")
    runs = []
    for index, symbol in enumerate(bot.symbols):
        run = SymbolRun(
            symbol.product_id, symbol.terms.price_decimals, new_symbol_strategy(bot, index)
        )
        run_symbol(run, updates.get(symbol.product_id, ()), progress, with_bands=with_bands)
        runs.append(run)
    return BacktestResult(bot, tuple(runs), time_zone_offset_min)


# --- the Status API document ---------------------------------------------------------------------


def start_time_ms(result: BacktestResult) -> int:
    """The earliest event time among the symbols' first updates; 0 before any (2.1 rule 14)."""
    started = [run.first_time_ms for run in result.symbols if run.first_time_ms]
    return min(started) if started else 0


def final_status_figures(result: BacktestResult) -> StatusFigures:
    figures = [symbol_figures(run.strategy.ledger, run.strategy.price) for run in result.symbols]
    return status_figures(result.bot.start_capital, figures)


def backtest_document(result: BacktestResult, notes: Sequence[str] = ()) -> dict[str, Any]:
    """`{"trades": [TRADE...], "status": STATUS, "symbols": [SYMBOL without klines], "notes":
    [text...]}`.

    Built by the functions accounting builds its hashes with, so every field equals what the live
    pipeline shows at the end of the same data. `trades` holds every symbol's fills by time, then
    order_id; each SYMBOL lists all its own. STATUS is that of a working bot (SPEC 3.1 rule 15).
    `notes` is no Status API field: what the run assumed that no config gave (the backtest's
    inferred price decimals, say), so that a reader of the file alone knows it.
    """
    bot = result.bot
    trades: list[dict[str, Any]] = []
    symbols: list[dict[str, Any]] = []
    for run, config in zip(result.symbols, bot.symbols, strict=True):
        wired = [trade_wire(fill, run.price_decimals) for fill in run.fills]
        trades.extend(wired)
        scalars = symbol_scalars(
            product_id=config.product_id,
            exchange=bot.exchange,
            min_size=config.terms.min_size,
            leverage=config.leverage,
            isolated=config.isolated,
            figures=symbol_figures(run.strategy.ledger, run.strategy.price),
            signal=run.strategy.signal,
        )
        symbol = with_lists(scalars, trades=wired, klines=[])
        del symbol["klines"]
        symbols.append(symbol)
    trades.sort(key=lambda trade: (trade["time"], trade["order_id"]))
    status = status_wire(
        final_status_figures(result),
        exchange=bot.exchange,
        start_time_ms=start_time_ms(result),
        time_zone_offset_min=result.time_zone_offset_min,
        enabled=True,
    )
    return {"trades": trades, "status": status, "symbols": symbols, "notes": list(notes)}


def fill_written_as_zero(result: BacktestResult) -> tuple[SymbolRun, Fill, str] | None:
    """The first fill (config order, then order_id) whose price its symbol's `price_decimals`
    would write as zero, with that text; None when every price shows. A fill's price is > 0
    (SPEC 5.1 rule 11 prices, slippage below 100 %), so zero means too few decimals."""
    for run in result.symbols:
        for fill in run.fills:
            text = format_decimal(fill.price, run.price_decimals)
            if not text.strip("0."):
                return run, fill, text
    return None


# --- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drawdown:
    """The largest fall of equity from its running peak, in quote currency and in % of that peak.
    The two maxima may come from different falls: each is the worst by its own measure."""

    absolute: float
    pct: float


@dataclass(frozen=True, slots=True)
class SymbolStats:
    product_id: str
    update_count: int
    kline_count: int
    fill_count: int
    round_trip_count: int
    liquidation_count: int
    win: int
    lost: int
    win_lost_rate: float  # win / (win + lost), 0 when none, as SYMBOL.winLostRate
    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float
    exposure_pct: float
    buy_and_hold_pct: float  # 0 when the symbol had no update
    first_time_ms: int
    last_time_ms: int


@dataclass(frozen=True, slots=True)
class BacktestStats:
    start_capital: float
    final_capital: float  # STATUS.totalCapital
    return_pct: float
    fill_count: int
    round_trip_count: int
    liquidation_count: int
    win: int
    lost: int
    win_lost_rate: float
    realized_pnl: float
    unrealized_pnl: float
    total_pnl: float
    fees_paid: float
    max_drawdown: Drawdown
    exposure_pct: float
    first_time_ms: int
    last_time_ms: int
    symbols: tuple[SymbolStats, ...]


def max_drawdown(equity: Iterable[float]) -> Drawdown:
    """Peak-to-trough over the curve in its order; 0 for a curve that never falls."""
    values = np.fromiter(equity, dtype=np.float64)
    if not np.isfinite(values).all():
        return _max_drawdown_stepwise(values.tolist())
    if len(values) == 0:
        return Drawdown(0.0, 0.0)
    # For finite values this is the step-by-step definition below, for the whole curve at once.
    peak = np.maximum.accumulate(values)
    fall = peak - values
    rising = peak > 0
    worst_pct = float((fall[rising] / peak[rising] * 100).max()) if rising.any() else 0.0
    return Drawdown(max(0.0, float(fall.max())), max(0.0, worst_pct))


def _max_drawdown_stepwise(equity: Iterable[float]) -> Drawdown:
    """The definition, step by step: what a curve with a nan or an infinity gets."""
    peak: float | None = None
    worst_absolute = worst_pct = 0.0
    for value in equity:
        if peak is None or value > peak:
            peak = value
            continue
        fall = peak - value
        worst_absolute = max(worst_absolute, fall)
        if peak > 0:
            worst_pct = max(worst_pct, fall / peak * 100)
    return Drawdown(worst_absolute, worst_pct)


def position_intervals(fills: Sequence[Fill], end_time_ms: int) -> list[tuple[int, int]]:
    """[open, close) event times of each position; one still open ends at `end_time_ms`.

    An opening fill has no round trip, a closing fill (liquidations included) has one; a flip is
    a close then an open at the same time (SPEC 3.1 rule 13: the closing leg first).
    """
    intervals: list[tuple[int, int]] = []
    opened_ms: int | None = None
    for fill in fills:
        if fill.round_trip is None:
            opened_ms = fill.time_ms
        elif opened_ms is not None:
            intervals.append((opened_ms, fill.time_ms))
            opened_ms = None
    if opened_ms is not None:
        intervals.append((opened_ms, max(opened_ms, end_time_ms)))
    return intervals


def exposure_pct(intervals: Iterable[tuple[int, int]], start_ms: int, end_ms: int) -> float:
    """% of [start, end] covered by the union of the intervals; 0 for an empty span."""
    span_ms = end_ms - start_ms
    if span_ms <= 0:
        return 0.0
    covered_ms = 0
    reach_ms = start_ms
    for begin, end in sorted(intervals):
        begin, end = max(begin, reach_ms), min(end, end_ms)
        if end > begin:
            covered_ms += end - begin
            reach_ms = end
    return covered_ms / span_ms * 100


def buy_and_hold_pct(first_price: float, last_price: float) -> float:
    """What holding the asset from the first update to the last returned, in %; 0 with no data."""
    if first_price <= 0:
        return 0.0
    return (last_price - first_price) / first_price * 100


def equity_curve(result: BacktestResult) -> tuple[list[int], list[float]]:
    """The bot's equity (startCapital + realized + unrealized) at each kline close, all symbols
    merged by kline time, each symbol at its latest kline so far (0 before its first); sums run
    in config order as in STATUS (SPEC 3.1 rule 16), so the last value equals
    STATUS.totalCapital exactly. Element by element, the additions are those of one sum per
    kline time, in the same order: whole arrays only change how many are done at once."""
    series = [run.series for run in result.symbols]
    own_times = [np.asarray(one.time_ms, dtype=np.int64) for one in series]
    if not any(len(times) for times in own_times):
        return [], []
    times = _merged_times([times for times in own_times if len(times)])
    realized_sum = np.zeros(len(times), dtype=np.float64)
    unrealized_sum = np.zeros(len(times), dtype=np.float64)
    for one, own in zip(series, own_times, strict=True):
        if len(own) == 0:
            realized_sum += 0.0
            unrealized_sum += 0.0
            continue
        row = np.searchsorted(own, times, side="right") - 1  # the latest row at or before
        started = row >= 0
        row = np.maximum(row, 0)
        realized_sum += np.where(started, np.asarray(one.realized_pnl, dtype=np.float64)[row], 0.0)
        unrealized_sum += np.where(
            started, np.asarray(one.unrealized_pnl, dtype=np.float64)[row], 0.0
        )
    equity = result.bot.start_capital + realized_sum + unrealized_sum
    return times.tolist(), equity.tolist()


def _merged_times(own_times: Sequence[Ints]) -> Ints:
    """Every kline time of the symbols (each ascending), ascending, once."""
    if len(own_times) == 1:
        return own_times[0]
    merged = np.sort(np.concatenate(own_times), kind="stable")
    distinct: Ints = merged[np.append(True, merged[1:] != merged[:-1])]
    return distinct


def symbol_stats(run: SymbolRun) -> SymbolStats:
    figures = symbol_figures(run.strategy.ledger, run.strategy.price)
    fees_paid = 0.0
    for fill in run.fills:
        fees_paid += fill.fee
    intervals = position_intervals(run.fills, run.last_time_ms)
    return SymbolStats(
        product_id=run.product_id,
        update_count=run.update_count,
        kline_count=len(run.series.time_ms),
        fill_count=len(run.fills),
        round_trip_count=figures.win + figures.lost,
        liquidation_count=sum(fill.action.startswith("liquidation_") for fill in run.fills),
        win=figures.win,
        lost=figures.lost,
        win_lost_rate=figures.win_lost_rate,
        realized_pnl=figures.realized_pnl,
        unrealized_pnl=figures.unrealized_pnl,
        fees_paid=fees_paid,
        exposure_pct=exposure_pct(intervals, run.first_time_ms, run.last_time_ms),
        buy_and_hold_pct=buy_and_hold_pct(run.first_price, run.strategy.price),
        first_time_ms=run.first_time_ms,
        last_time_ms=run.last_time_ms,
    )


def backtest_stats(result: BacktestResult) -> BacktestStats:
    """The report's figures. PnL and win/lost are STATUS's own; drawdown is measured on the
    equity at kline closes; exposure over the whole bot is the union of its symbols' positions."""
    status = final_status_figures(result)
    symbols = tuple(symbol_stats(run) for run in result.symbols)
    active = [run for run in result.symbols if run.update_count]
    first_ms = min((run.first_time_ms for run in active), default=0)
    last_ms = max((run.last_time_ms for run in active), default=0)
    intervals = [
        interval
        for run in result.symbols
        for interval in position_intervals(run.fills, run.last_time_ms)
    ]
    fees_paid = 0.0
    for stats in symbols:
        fees_paid += stats.fees_paid
    _, equity = equity_curve(result)
    return BacktestStats(
        start_capital=status.start_capital,
        final_capital=status.total_capital,
        return_pct=(status.total_capital - status.start_capital) / status.start_capital * 100,
        fill_count=status.fill_count,
        round_trip_count=status.win + status.lost,
        liquidation_count=sum(stats.liquidation_count for stats in symbols),
        win=status.win,
        lost=status.lost,
        win_lost_rate=status.win_lost_rate,
        realized_pnl=status.realized_pnl,
        unrealized_pnl=status.unrealized_pnl,
        total_pnl=status.realized_pnl + status.unrealized_pnl,
        fees_paid=fees_paid,
        max_drawdown=max_drawdown(itertools.chain([status.start_capital], equity)),
        exposure_pct=exposure_pct(intervals, first_ms, last_ms),
        first_time_ms=first_ms,
        last_time_ms=last_ms,
        symbols=symbols,
    )
