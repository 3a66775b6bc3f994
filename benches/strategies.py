"""The strategies of SPEC section 3 and 3.2 as Bandwagon's peers run them, for the speed
benchmarks (`benches.backtest_speed`, `benches.sweep_speed`) and their check
(`tests/unit/test_bench_strategies.py`).

Implementations beside Bandwagon's exact live core, each on the same prices (the updates a
klines file gives the core: one per kline, at its close):

- `numpy_floor`: the Bollinger rules as whole-array numpy operations, no per-update logic. Only
  what the benchmark's bot uses: taker fills, mode `both`, no liquidation, no min_size check. The
  floor of what the arithmetic costs.
- `run_backtesting_py`: backtesting.py 0.6.6, a `Strategy` whose `next()` applies the cross rule,
  market orders filled at the next bar: to TA-Lib bands (`Rules`, BollingerBands), or to the
  per-window RSI or MACD histogram of `indicator_per_window` (`RsiRules`, `MacdRules`), given as
  a column of the frame.
- `run_vectorbt`: vectorbt 1.2.0, its own BBANDS, crosses as arrays, `Portfolio.from_signals`;
  `run_vectorbt_sweep` the same over a grid of periods and deviations, one column per
  combination.

The peers are imported inside the functions that use them: they live in the optional `bench`
extra, and the rest of this module needs numpy only. Every implementation reports its fills as
`FillMark`s, so the benchmark can show that they do comparable work and the test that they make
the same entries and exits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from libs.config import BotConfig
    from libs.core.sim_exchange import Fill

Floats = npt.NDArray[np.float64]
Floats2D = npt.NDArray[np.float64]  # one window per row
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Side = Literal["buy", "sell"]

CASH_TO_POSITION = 1000  # vectorbt's cash, in position values


@dataclass(frozen=True, slots=True)
class Terms:
    """The symbol's trading terms every strategy shares, as every implementation is given them:
    taker fills (fee and slippage), the share of capital per position, leverage, the symbol's
    start capital and its size step."""

    taker_fee_pct: float = 0.1
    slippage_pct: float = 0.05
    buy_pct: float = 20.0
    leverage: float = 10.0
    start_capital: float = 1000.0
    min_size: float = 0.00001

    @staticmethod
    def terms_of(bot: BotConfig, symbol_index: int = 0) -> dict[str, float]:
        """The terms of a bot's symbol as keyword arguments; only taker fills in mode `both` are
        compared (what every peer can do)."""
        strategy, symbol = bot.strategy, bot.symbols[symbol_index]
        if strategy.order_type != "taker" or strategy.mode != "both":
            raise ValueError("the peers implement taker fills in mode both only")
        return {
            "taker_fee_pct": bot.taker_fee,
            "slippage_pct": strategy.slippage_pct,
            "buy_pct": strategy.buy_pct,
            "leverage": symbol.leverage,
            "start_capital": bot.allocation(symbol_index),
            "min_size": float(symbol.terms.min_size),
        }


@dataclass(frozen=True, slots=True)
class Rules(Terms):
    """BollingerBands (SPEC section 3) and the symbol's terms."""

    period: int = 20
    nbdev_up: float = 2.0
    nbdev_dn: float = 2.0

    @classmethod
    def of(cls, bot: BotConfig, symbol_index: int = 0) -> Rules:
        own = bot.strategy.parameters
        if bot.strategy.name != "BollingerBands":
            raise ValueError(f"{bot.strategy.name} is not BollingerBands")
        return cls(
            period=int(own["period"]),
            nbdev_up=float(own["nbdev_up"]),
            nbdev_dn=float(own["nbdev_dn"]),
            **Terms.terms_of(bot, symbol_index),
        )


@dataclass(frozen=True, slots=True)
class RsiRules(Terms):
    """RSI (SPEC 3.2 rule 6): buy while the RSI of the window is below `oversold`, sell while it
    is above `overbought`."""

    period: int = 14
    window: int = 100
    oversold: float = 30.0
    overbought: float = 70.0

    @classmethod
    def of(cls, bot: BotConfig, symbol_index: int = 0) -> RsiRules:
        own = bot.strategy.parameters
        if bot.strategy.name != "RSI":
            raise ValueError(f"{bot.strategy.name} is not RSI")
        return cls(
            period=int(own["period"]),
            window=int(own["window"]),
            oversold=float(own["oversold"]),
            overbought=float(own["overbought"]),
            **Terms.terms_of(bot, symbol_index),
        )


@dataclass(frozen=True, slots=True)
class MacdRules(Terms):
    """MACD (SPEC 3.2 rule 7): buy while the histogram is above zero, sell while it is below."""

    fast: int = 12
    slow: int = 26
    signal: int = 9
    window: int = 200

    @classmethod
    def of(cls, bot: BotConfig, symbol_index: int = 0) -> MacdRules:
        own = bot.strategy.parameters
        if bot.strategy.name != "MACD":
            raise ValueError(f"{bot.strategy.name} is not MACD")
        return cls(
            fast=int(own["fast"]),
            slow=int(own["slow"]),
            signal=int(own["signal"]),
            window=int(own["window"]),
            **Terms.terms_of(bot, symbol_index),
        )


LevelRules = RsiRules | MacdRules  # strategies that compare one per-window indicator to levels


@dataclass(frozen=True, slots=True, order=True)
class FillMark:
    """One fill as any implementation can tell it: the update it happened at, a closing leg
    before an opening one (a flip, SPEC 3.1 rule 13), its side."""

    index: int
    opens: bool
    side: Side


# --- Bandwagon ----------------------------------------------------------------------------------


def bandwagon_marks(fills: Sequence[Fill], time_ms: Ints) -> list[FillMark]:
    """Bandwagon's fills of one symbol, located among its updates by event time."""
    fill_time = np.array([fill.time_ms for fill in fills], dtype=np.int64)
    indexes = np.searchsorted(time_ms, fill_time).tolist()
    return [
        FillMark(index, fill.round_trip is None, fill.side)
        for index, fill in zip(indexes, fills, strict=True)
    ]


# --- the numpy floor ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloorRun:
    fill_index: Ints
    fill_buys: Bools  # True: a buy
    fill_opens: Bools  # True: opens a position
    realized_pnl: float  # with unrounded sizes (no min_size step)

    def marks(self) -> list[FillMark]:
        return [
            FillMark(int(index), bool(opens), "buy" if buys else "sell")
            for index, buys, opens in zip(
                self.fill_index, self.fill_buys, self.fill_opens, strict=True
            )
        ]


BLOCK_ROWS = 16_384  # windows per pass: the columns of a block stay in the CPU cache


def band_conditions(
    close: Floats, period: int, nbdev_up: float, nbdev_dn: float
) -> tuple[Bools, Bools]:
    """(price < lower, price > upper) of every update; neither before `period` closes exist
    (SPEC 3.1 rule 2). Each window's mean and population deviation are summed column by column,
    oldest close first, a block of windows at a time.

    A window of equal closes meets neither condition, as rule 2 wants, without a check of its
    own: its deviation is at least the distance of its closes to its rounded mean, so with
    multipliers of 1 or more the close is never outside the bands.
    """
    if nbdev_up < 1 or nbdev_dn < 1:
        raise ValueError("the floor needs nbdev_up and nbdev_dn >= 1")
    count = len(close)
    buy = np.zeros(count, dtype=np.bool_)
    sell = np.zeros(count, dtype=np.bool_)
    for first in range(period - 1, count, BLOCK_ROWS):
        last = min(count, first + BLOCK_ROWS)
        rows = last - first
        columns = [close[first - period + 1 + k : last - period + 1 + k] for k in range(period)]
        total = columns[0].copy()
        for column in columns[1:]:
            total += column
        middle = total / period
        squares = np.zeros(rows)
        buffer = np.empty(rows)
        for column in columns:
            np.subtract(column, middle, out=buffer)
            np.multiply(buffer, buffer, out=buffer)
            squares += buffer
        deviation = np.sqrt(squares / period)
        price = columns[-1]
        buy[first:last] = price < middle - deviation * nbdev_dn
        sell[first:last] = price > middle + deviation * nbdev_up
    return buy, sell


def crosses(condition: Bools) -> Bools:
    """Updates where the condition holds and did not on the previous one (SPEC 3.1 rule 3)."""
    before = np.zeros_like(condition)
    before[1:] = condition[:-1]
    return condition & ~before


def numpy_floor(close: Floats, rules: Rules) -> FloorRun:
    """Bands, crosses, positions, fills and realized PnL, each for all updates at once.

    In mode `both` with taker fills, the position after update i is the side of the last cross
    up to i - 1 (an order fills at the next update, SPEC 3.1 rule 8), so positions are a forward
    fill of the crosses. Each round trip multiplies the symbol's capital by a factor that
    depends on its prices only, since the size is a fixed share of that capital (rule 6), so
    the realized PnL is a cumulative product.
    """
    buy, sell = band_conditions(close, rules.period, rules.nbdev_up, rules.nbdev_dn)
    signal = crosses(buy).astype(np.int8) - crosses(sell).astype(np.int8)  # +1 buy, -1 sell
    last_cross = np.where(signal != 0, np.arange(len(close)), 0)
    np.maximum.accumulate(last_cross, out=last_cross)
    wanted = signal[last_cross]  # 0 before the first cross
    held = np.zeros(len(close), dtype=np.int8)
    held[1:] = wanted[:-1]
    change = np.flatnonzero(held[1:] != held[:-1]) + 1
    before, after = held[change - 1], held[change]

    closing, opening = before != 0, after != 0
    fill_index = np.concatenate([change[closing], change[opening]])
    fill_buys = np.concatenate([before[closing] < 0, after[opening] > 0])
    fill_opens = np.concatenate(
        [np.zeros(int(closing.sum()), np.bool_), np.ones(int(opening.sum()), np.bool_)]
    )
    order = np.lexsort((fill_opens, fill_index))

    slippage, fee = rules.slippage_pct / 100, rules.taker_fee_pct / 100
    exposure = rules.buy_pct / 100 * rules.leverage  # notional / capital at each opening
    opened = change[opening]  # each position's opening update, side `after[opening]`
    direction = after[opening].astype(np.float64)
    entry = close[opened] * (1 + direction * slippage)
    closed_at = change[np.searchsorted(change, opened, side="right").clip(max=len(change) - 1)]
    has_exit = closed_at > opened
    exit_ = close[closed_at] * (1 - direction * slippage)
    trip = (direction * (exit_ - entry) - fee * (entry + exit_)) / entry * exposure
    factor = np.prod(1 + np.where(has_exit, trip, 0.0))
    capital = rules.start_capital * factor
    if len(opened) and not has_exit[-1]:
        capital -= capital * exposure * fee  # the open position's opening fee is realized
    return FloorRun(
        fill_index[order],
        fill_buys[order],
        fill_opens[order],
        float(capital - rules.start_capital),
    )


# --- per-window indicators (RSI, MACD) ----------------------------------------------------------

INDICATOR_BLOCK_ROWS = 65_536  # windows per call of the replica (it blocks them again inside)


def per_window(close: Floats, window: int, last_value: Callable[[Floats2D], Floats]) -> Floats:
    """`last_value` of every update's window (the last `window` closes, oldest first): NaN while
    fewer than `window` closes exist, and NaN where the window's closes are all equal, since no
    built-in has a condition there (SPEC 3.2 rules 2 and 5); a NaN compares false, so the peers
    see no condition either.

    This is the indicator as SPEC 3.2 rule 5 defines it: TA-Lib on exactly the update's window,
    not TA-Lib's running indicator over the whole series, which RSI and MACD seed from the
    series' first closes, and so differs from it.
    """
    values = np.full(len(close), np.nan)
    if len(close) < window:
        return values
    windows = sliding_window_view(close, window)
    for start in range(0, len(windows), INDICATOR_BLOCK_ROWS):
        rows = windows[start : start + INDICATOR_BLOCK_ROWS]
        moving = rows.max(axis=1) != rows.min(axis=1)
        found = last_value(rows)
        values[window - 1 + start : window - 1 + start + len(rows)] = np.where(
            moving, found, np.nan
        )
    return values


def rsi_per_window(close: Floats, rules: RsiRules) -> Floats:
    """`talib.RSI(window, period)[-1]` of every update's window, bit for bit
    (`libs.core.talib_replica.rsi_last`, the replica the core's batch path uses)."""
    from libs.core.talib_replica import rsi_last

    return per_window(close, rules.window, lambda rows: rsi_last(rows, rules.period))


def macd_hist_per_window(close: Floats, rules: MacdRules) -> Floats:
    """The last `macdhist` of `talib.MACD(window, fast, slow, signal)` of every update's window,
    bit for bit (`libs.core.talib_replica.macd_last`)."""
    from libs.core.talib_replica import macd_last

    return per_window(
        close,
        rules.window,
        lambda rows: macd_last(rows, rules.fast, rules.slow, rules.signal)[2],
    )


def indicator_per_window(close: Floats, rules: LevelRules) -> Floats:
    """The one indicator a level strategy compares: RSI's `rsi`, MACD's `macdhist`."""
    if isinstance(rules, RsiRules):
        return rsi_per_window(close, rules)
    return macd_hist_per_window(close, rules)


def _act_on_crosses(strategy: Any, buy_cross: bool, sell_cross: bool) -> None:
    """SPEC 3.1 rule 5 in a backtesting.py `next()`, called on a cross only: a buy cross closes
    a short and opens a long, a sell cross mirrors it; a cross towards the position already held
    does nothing. Orders are market orders: filled at the next bar's open."""
    position = strategy.position
    if buy_cross and not position.is_long:
        if position.is_short:
            position.close()
        strategy.buy(size=strategy.size)
    elif sell_cross and not position.is_short:
        if position.is_long:
            position.close()
        strategy.sell(size=strategy.size)


@cache
def _bollinger_cross_strategy() -> Any:
    """The backtesting.py `Strategy`, made on first use so that importing this module does not
    need the bench extra."""
    import talib
    from backtesting import Strategy

    class BollingerCross(Strategy):  # type: ignore[misc]
        """SPEC 3.1 rules 3 and 5 in `next()`, on TA-Lib bands."""

        period = 20
        nbdev_up = 2.0
        nbdev_dn = 2.0
        size = 0.2  # of the margin available, times the leverage (`Backtest(margin=...)`)

        def init(self) -> None:
            self.bands = self.I(
                talib.BBANDS, self.data.Close, self.period, self.nbdev_up, self.nbdev_dn
            )

        def next(self) -> None:
            upper, lower, close = self.bands[0], self.bands[2], self.data.Close
            wide, was_wide = upper[-1] > lower[-1], upper[-2] > lower[-2]
            buy_cross = wide and close[-1] < lower[-1] and not (was_wide and close[-2] < lower[-2])
            sell_cross = wide and close[-1] > upper[-1] and not (was_wide and close[-2] > upper[-2])
            if buy_cross or sell_cross:
                _act_on_crosses(self, buy_cross, sell_cross)

    return BollingerCross


@cache
def _level_cross_strategies() -> tuple[Any, Any]:
    """The backtesting.py strategies of RSI and MACD: the cross rule of SPEC 3.1 rules 3 and 5
    in `next()`, on the per-window indicator the frame carries as its `Indicator` column
    (`backtesting_frame`), backtesting.py's way to take a precomputed indicator.

    It is read as a data column rather than declared with `self.I`, because backtesting.py
    starts `next()` one bar after an `I` indicator's first value, and so misses a cross at the
    very first window (MACD's histogram has a sign from its first value on). As a column, `next()`
    starts at the second bar; the NaNs before the first window compare false: no condition, as
    in Bandwagon (SPEC 3.2 rule 2).
    """
    from backtesting import Strategy

    class RsiCross(Strategy):  # type: ignore[misc]
        oversold = 30.0
        overbought = 70.0
        size = 0.2

        def init(self) -> None:
            pass

        def next(self) -> None:
            rsi = self.data.Indicator
            now, before = rsi[-1], rsi[-2]
            low, high = self.oversold, self.overbought
            buy_cross = now < low and not before < low
            sell_cross = now > high and not before > high
            if buy_cross or sell_cross:
                _act_on_crosses(self, buy_cross, sell_cross)

    class MacdCross(Strategy):  # type: ignore[misc]
        size = 0.2

        def init(self) -> None:
            pass

        def next(self) -> None:
            hist = self.data.Indicator
            now, before = hist[-1], hist[-2]
            buy_cross = now > 0 and not before > 0
            sell_cross = now < 0 and not before < 0
            if buy_cross or sell_cross:
                _act_on_crosses(self, buy_cross, sell_cross)

    return RsiCross, MacdCross


def import_backtesting_py() -> None:
    """Import backtesting.py and build the strategies, so that no timed run pays for it."""
    import backtesting.lib  # noqa: F401

    _bollinger_cross_strategy()
    _level_cross_strategies()


def backtesting_frame(time_ms: Ints, close: Floats, indicator: Floats | None = None) -> Any:
    """The updates as backtesting.py bars: open, high, low and close all at the update's price,
    since the price is all the strategy sees (SPEC 3.1 rule 1). So a market order placed on a
    bar fills at the next update's price, as a taker order does in Bandwagon. `indicator`, a
    level strategy's per-window indicator (`indicator_per_window`), goes in as a column."""
    import pandas as pd

    index = pd.to_datetime(time_ms, unit="ms")
    columns: dict[str, Any] = {
        "Open": close,
        "High": close,
        "Low": close,
        "Close": close,
        "Volume": 1.0,
    }
    if indicator is not None:
        columns["Indicator"] = indicator
    return pd.DataFrame(columns, index=index)


def run_backtesting_py(frame: Any, rules: Rules | LevelRules) -> Any:
    """backtesting.py's statistics of one run. `FractionalBacktest` trades whole units of
    min_size, as Bandwagon's sizes are multiples of it; `spread` applies the slippage and
    `commission` the fee; `margin` is 1 / leverage."""
    from backtesting.lib import FractionalBacktest

    strategy: Any
    parameters: dict[str, float]
    if isinstance(rules, Rules):
        strategy = _bollinger_cross_strategy()
        parameters = {"period": rules.period, "nbdev_up": rules.nbdev_up}
        parameters["nbdev_dn"] = rules.nbdev_dn
    elif isinstance(rules, RsiRules):
        strategy = _level_cross_strategies()[0]
        parameters = {"oversold": rules.oversold, "overbought": rules.overbought}
    else:
        strategy, parameters = _level_cross_strategies()[1], {}
    if not isinstance(rules, Rules) and "Indicator" not in frame:
        raise ValueError("a level strategy's frame needs its Indicator column")
    backtest = FractionalBacktest(
        frame,
        strategy,
        cash=rules.start_capital,
        commission=rules.taker_fee_pct / 100,
        spread=rules.slippage_pct / 100,
        margin=1 / rules.leverage,
        trade_on_close=False,
        fractional_unit=rules.min_size,
    )
    with warnings.catch_warnings():
        # Its notes on open trades at the end and refused orders, and pandas 3 deprecations.
        warnings.filterwarnings("ignore", message="Some trades remain open")
        warnings.filterwarnings("ignore", message=".*Broker canceled")
        warnings.filterwarnings("ignore", message=".*is deprecated", module="backtesting")
        return backtest.run(size=rules.buy_pct / 100, **parameters)


def backtesting_marks(stats: Any) -> list[FillMark]:
    """Entries and exits of the closed trades, and entries of those still open at the end."""
    marks: list[FillMark] = []
    trades = stats["_trades"]
    for size, entry_bar, exit_bar in zip(
        trades["Size"], trades["EntryBar"], trades["ExitBar"], strict=True
    ):
        marks.append(FillMark(int(entry_bar), True, "buy" if size > 0 else "sell"))
        marks.append(FillMark(int(exit_bar), False, "sell" if size > 0 else "buy"))
    for trade in stats["_strategy"].trades:
        marks.append(FillMark(int(trade.entry_bar), True, "buy" if trade.is_long else "sell"))
    return sorted(marks)


def backtesting_price_difference(
    stats: Any, fills: Sequence[Fill], time_ms: Ints, slippage_pct: float
) -> str | None:
    """Where backtesting.py's prices part from Bandwagon's fills (relative 1e-9), for closed
    trades: an entry is Bandwagon's opening fill price (the next update's price with the
    slippage, `spread`); an exit is the next update's price, which backtesting.py does not
    move, so it is compared with the slippage applied as Bandwagon applies it. None: the same."""
    own = {
        mark: fill.price for mark, fill in zip(bandwagon_marks(fills, time_ms), fills, strict=True)
    }
    slippage = slippage_pct / 100
    trades = stats["_trades"]
    for size, entry_bar, exit_bar, entry_price, exit_price in zip(
        trades["Size"],
        trades["EntryBar"],
        trades["ExitBar"],
        trades["EntryPrice"],
        trades["ExitPrice"],
        strict=True,
    ):
        long = size > 0
        exit_with_slippage = exit_price * (1 - slippage if long else 1 + slippage)
        for mark, price in (
            (FillMark(int(entry_bar), True, "buy" if long else "sell"), entry_price),
            (FillMark(int(exit_bar), False, "sell" if long else "buy"), exit_with_slippage),
        ):
            expected = own.get(mark)
            if expected is None or not math.isclose(price, expected, rel_tol=1e-9):
                return f"{mark}: price {price!r}, Bandwagon's {expected!r}"
    return None


# --- vectorbt -----------------------------------------------------------------------------------


def run_vectorbt(time_ms: Ints, close: Floats, rules: Rules) -> Any:
    """vectorbt's portfolio: its BBANDS (SMA and population deviation, as TA-Lib), crosses as
    arrays, signals moved one bar on so an order fills at the next update's price, and
    `from_signals` with `reverse` on an opposite entry (a flip).

    vectorbt has no leverage, and sizes in % of cash cannot reverse a position: each position is
    a fixed value, buy_pct % of the start capital times the leverage, with so much cash that no
    order is ever cut or refused for want of it.
    """
    import pandas as pd
    import vectorbt as vbt

    if rules.nbdev_up != rules.nbdev_dn:
        raise ValueError("vectorbt's BBANDS takes one deviation multiplier")
    prices = pd.Series(close, index=pd.to_datetime(time_ms, unit="ms"))
    bands = vbt.BBANDS.run(prices, window=rules.period, alpha=rules.nbdev_up)
    lower, upper = bands.lower.to_numpy(), bands.upper.to_numpy()
    wide = upper > lower
    buy_cross = crosses(wide & (close < lower))
    sell_cross = crosses(wide & (close > upper))
    long_entries = np.zeros_like(buy_cross)
    short_entries = np.zeros_like(sell_cross)
    long_entries[1:], short_entries[1:] = buy_cross[:-1], sell_cross[:-1]
    position_value = rules.start_capital * rules.buy_pct / 100 * rules.leverage
    return vbt.Portfolio.from_signals(
        prices,
        entries=long_entries,
        short_entries=short_entries,
        size=position_value,
        size_type="value",
        fees=rules.taker_fee_pct / 100,
        slippage=rules.slippage_pct / 100,
        init_cash=position_value * CASH_TO_POSITION,
        upon_opposite_entry="reverse",
        freq="1min",
    )


def vectorbt_marks(portfolio: Any) -> list[FillMark]:
    """Entries and exits of its trades (a reversal is the exit of one and the entry of the next)."""
    return trade_record_marks(portfolio.trades.records)


def trade_record_marks(records: Any) -> list[FillMark]:
    """Fill marks of vectorbt trade records (one column's)."""
    marks: list[FillMark] = []
    for entry, exit_, direction, status in zip(
        records["entry_idx"],
        records["exit_idx"],
        records["direction"],
        records["status"],
        strict=True,
    ):
        long = int(direction) == 0
        marks.append(FillMark(int(entry), True, "buy" if long else "sell"))
        if int(status) == 1:  # closed
            marks.append(FillMark(int(exit_), False, "sell" if long else "buy"))
    return sorted(marks)


@dataclass(frozen=True, slots=True)
class VectorbtSweep:
    """vectorbt's sweep of a Bollinger grid: one portfolio per chunk of combinations (columns
    in the grid's order, period-major) and each combination's total profit, the figure a sweep
    ranks by."""

    combinations: tuple[tuple[int, float], ...]  # (period, nbdev) of each column, in order
    portfolios: tuple[Any, ...]
    total_profit: tuple[float, ...]

    def fill_counts(self) -> list[int]:
        """Fills of each combination: every trade's entry, and the exit of each closed one."""
        counts: list[int] = []
        for portfolio in self.portfolios:
            records = portfolio.trades.records
            columns = len(portfolio.wrapper.columns)
            entries = np.bincount(records["col"], minlength=columns)
            exits = np.bincount(records["col"][records["status"] == 1], minlength=columns)
            counts += (entries + exits).tolist()
        return counts

    def marks(self, combination: int) -> list[FillMark]:
        """The fills of one combination, as `vectorbt_marks` tells them."""
        per_portfolio = len(self.portfolios[0].wrapper.columns)
        records = self.portfolios[combination // per_portfolio].trades.records
        return trade_record_marks(records[records["col"] == combination % per_portfolio])


def run_vectorbt_sweep(
    time_ms: Ints,
    close: Floats,
    terms: Terms,
    periods: Sequence[int],
    nbdevs: Sequence[float],
) -> VectorbtSweep:
    """vectorbt's own sweep of the grid: for each period, `vbt.BBANDS.run` with every nbdev at
    once (one column each), crosses as 2-D arrays, one `Portfolio.from_signals` over those
    columns, and their total profits; positions sized as `run_vectorbt` sizes them.

    One call per period, ten combinations each: one call for the whole grid is slower (warm,
    on the bench machine: 11.3-14.2 s against 6.1-6.4 s) and peaks at 6.0 GB instead of 1.3 GB,
    as every output is a year x 100 columns.
    """
    import pandas as pd

    prices = pd.Series(close, index=pd.to_datetime(time_ms, unit="ms"))
    position_value = terms.start_capital * terms.buy_pct / 100 * terms.leverage
    portfolios: list[Any] = []
    profits: list[float] = []
    with warnings.catch_warnings():
        # numba's notes on vectorbt's code (reflected lists) while it compiles: not ours
        warnings.filterwarnings("ignore", module=r"numba\.")
        for period in periods:
            portfolio = _vectorbt_period(prices, close, period, nbdevs, position_value, terms)
            portfolios.append(portfolio)
            profits += portfolio.total_profit().tolist()
    combinations = tuple((period, nbdev) for period in periods for nbdev in nbdevs)
    return VectorbtSweep(combinations, tuple(portfolios), tuple(profits))


def _vectorbt_period(
    prices: Any,
    close: Floats,
    period: int,
    nbdevs: Sequence[float],
    position_value: float,
    terms: Terms,
) -> Any:
    """One period of `run_vectorbt_sweep`: one column per nbdev."""
    import pandas as pd
    import vectorbt as vbt

    bands = vbt.BBANDS.run(prices, window=period, alpha=list(nbdevs))
    lower_frame, upper_frame = bands.lower, bands.upper
    if lower_frame.ndim == 1:  # one nbdev: vectorbt gives a Series
        lower_frame, upper_frame = lower_frame.to_frame(), upper_frame.to_frame()
    lower, upper = lower_frame.to_numpy(), upper_frame.to_numpy()
    price = close[:, None]
    wide = upper > lower
    buy_cross = crosses(wide & (price < lower))
    sell_cross = crosses(wide & (price > upper))
    long_entries = np.zeros_like(buy_cross)
    short_entries = np.zeros_like(sell_cross)
    long_entries[1:], short_entries[1:] = buy_cross[:-1], sell_cross[:-1]
    columns = lower_frame.columns
    return vbt.Portfolio.from_signals(
        prices,
        entries=pd.DataFrame(long_entries, index=prices.index, columns=columns),
        short_entries=pd.DataFrame(short_entries, index=prices.index, columns=columns),
        size=position_value,
        size_type="value",
        fees=terms.taker_fee_pct / 100,
        slippage=terms.slippage_pct / 100,
        init_cash=position_value * CASH_TO_POSITION,
        upon_opposite_entry="reverse",
        freq="1min",
    )


def first_difference(left: Sequence[FillMark], right: Sequence[FillMark]) -> str | None:
    """Where two fill lists part, for a readable failure; None when equal."""
    for number, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return f"fill {number}: {a} != {b}"
    if len(left) != len(right):
        return f"{len(left)} fills != {len(right)} fills"
    return None
