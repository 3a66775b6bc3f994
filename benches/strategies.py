"""The Bollinger cross strategy of SPEC section 3, as Bandwagon's peers run it, for the speed
benchmark (`benches.backtest_speed`) and its check (`tests/unit/test_bench_strategies.py`).

Three implementations beside Bandwagon's exact live core, each on the same prices (the updates a
klines file gives the core: one per kline, at its close):

- `numpy_floor`: the rules as whole-array numpy operations, no per-update logic. Only what the
  benchmark's bot uses: taker fills, mode `both`, no liquidation, no min_size check. The floor of
  what the arithmetic costs.
- `run_backtesting_py`: backtesting.py 0.6.6, a `Strategy` whose `next()` applies the cross rule
  to TA-Lib bands, market orders filled at the next bar.
- `run_vectorbt`: vectorbt 1.2.0, its own BBANDS, crosses as arrays, `Portfolio.from_signals`.

The peers are imported inside the functions that use them: they live in the optional `bench`
extra, and the rest of this module needs numpy only. Every implementation reports its fills as
`FillMark`s, so the benchmark can show that they do comparable work and the test that they make
the same entries and exits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from libs.config import BotConfig
    from libs.core.sim_exchange import Fill

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Side = Literal["buy", "sell"]

CASH_TO_POSITION = 1000  # vectorbt's cash, in position values


@dataclass(frozen=True, slots=True)
class Rules:
    """The strategy and the symbol's terms, as every implementation is given them."""

    period: int = 20
    nbdev_up: float = 2.0
    nbdev_dn: float = 2.0
    taker_fee_pct: float = 0.1
    slippage_pct: float = 0.05
    buy_pct: float = 20.0
    leverage: float = 10.0
    start_capital: float = 1000.0
    min_size: float = 0.00001

    @classmethod
    def of(cls, bot: BotConfig, symbol_index: int = 0) -> Rules:
        """The rules a bot trades its symbol by; only taker fills in mode `both` are compared."""
        strategy, symbol = bot.strategy, bot.symbols[symbol_index]
        if strategy.order_type != "taker" or strategy.mode != "both":
            raise ValueError("the peers implement taker fills in mode both only")
        return cls(
            period=strategy.period,
            nbdev_up=strategy.nbdev_up,
            nbdev_dn=strategy.nbdev_dn,
            taker_fee_pct=bot.taker_fee,
            slippage_pct=strategy.slippage_pct,
            buy_pct=strategy.buy_pct,
            leverage=symbol.leverage,
            start_capital=bot.allocation(symbol_index),
            min_size=float(symbol.terms.min_size),
        )


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


# --- backtesting.py -----------------------------------------------------------------------------


@cache
def _bollinger_cross_strategy() -> Any:
    """The backtesting.py `Strategy`, made on first use so that importing this module does not
    need the bench extra."""
    import talib
    from backtesting import Strategy

    class BollingerCross(Strategy):  # type: ignore[misc]
        """SPEC 3.1 rules 3 and 5 in `next()`: a buy cross closes a short and opens a long, a sell
        cross mirrors it. Orders are market orders: filled at the next bar's open."""

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
            position = self.position
            if buy_cross and not position.is_long:
                if position.is_short:
                    position.close()
                self.buy(size=self.size)
            elif sell_cross and not position.is_short:
                if position.is_long:
                    position.close()
                self.sell(size=self.size)

    return BollingerCross


def backtesting_frame(time_ms: Ints, close: Floats) -> Any:
    """The updates as backtesting.py bars: open, high, low and close all at the update's price,
    since the price is all the strategy sees (SPEC 3.1 rule 1). So a market order placed on a
    bar fills at the next update's price, as a taker order does in Bandwagon."""
    import pandas as pd

    index = pd.to_datetime(time_ms, unit="ms")
    columns = {"Open": close, "High": close, "Low": close, "Close": close, "Volume": 1.0}
    return pd.DataFrame(columns, index=index)


def run_backtesting_py(frame: Any, rules: Rules) -> Any:
    """backtesting.py's statistics of one run. `FractionalBacktest` trades whole units of
    min_size, as Bandwagon's sizes are multiples of it; `spread` applies the slippage and
    `commission` the fee; `margin` is 1 / leverage."""
    from backtesting.lib import FractionalBacktest

    backtest = FractionalBacktest(
        frame,
        _bollinger_cross_strategy(),
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
        return backtest.run(
            period=rules.period,
            nbdev_up=rules.nbdev_up,
            nbdev_dn=rules.nbdev_dn,
            size=rules.buy_pct / 100,
        )


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
    records = portfolio.trades.records
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


def first_difference(left: Sequence[FillMark], right: Sequence[FillMark]) -> str | None:
    """Where two fill lists part, for a readable failure; None when equal."""
    for number, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return f"fill {number}: {a} != {b}"
    if len(left) != len(right):
        return f"{len(left)} fills != {len(right)} fills"
    return None
