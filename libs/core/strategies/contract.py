"""What a strategy is (SPEC 3.2 rule 2): a pure function of a symbol's last `window` klines that
decides the update's two conditions and names its indicator values.

Everything after the conditions (crosses, orders, fills, sizing, liquidation, risk exits, order
ids) is the one shared machine in `libs.core.strategy`, so a strategy cannot make the live
pipeline and the backtest disagree: both call the same `evaluate` on the same windows. The
optional vectorized `conditions` lets a strategy decide a whole batch at numpy speed; it must give
exactly what `evaluate` gives on every window (`libs.core.strategies.harness` proves it).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from libs.errors import BandwagonError

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Column = npt.NDArray[Any]

KLINE_FIELDS = ("time", "open", "high", "low", "close", "volume")
DISPLAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}$")  # SPEC 3.2 rule 3
INDICATOR_NAME = re.compile(r"^[a-z][A-Za-z0-9]{0,31}$")


class Evaluation(NamedTuple):
    """A strategy's answer for one update: the two conditions, then its indicator values in the
    order it declares them (a number, or None where undefined)."""

    buy: bool
    sell: bool
    values: tuple[float | None, ...]


class StrategyFailed(BandwagonError):
    """A strategy raised, or answered outside the contract (SPEC 3.2 rule 9): its (bot, symbol)
    halts before the update. `index` is the update's place in the batch."""

    def __init__(self, index: int, time_ms: int, reason: str) -> None:
        super().__init__(f"strategy failed at the update of time {time_ms}: {reason}")
        self.index, self.time_ms, self.reason = index, time_ms, reason


class KlineWindow:
    """The last `window` klines of a symbol, oldest first, the forming kline (as this update left
    it) last: one numpy column per kline field, built only when a strategy reads it.

    Columns may be views into the machine's own buffers: read them, never write them.
    """

    __slots__ = ("_load", "_loaded")

    def __init__(self, load: Callable[[str], Column]) -> None:
        self._load = load
        self._loaded: dict[str, Column] = {}

    def _column(self, name: str) -> Column:
        column = self._loaded.get(name)
        if column is None:
            column = self._loaded[name] = self._load(name)
        return column

    @property
    def time(self) -> Ints:
        """Open times of the klines, ms."""
        return self._column("time")

    @property
    def open(self) -> Floats:
        return self._column("open")

    @property
    def high(self) -> Floats:
        return self._column("high")

    @property
    def low(self) -> Floats:
        return self._column("low")

    @property
    def close(self) -> Floats:
        return self._column("close")

    @property
    def volume(self) -> Floats:
        return self._column("volume")

    def __len__(self) -> int:
        return len(self.close)


class WindowBatch:
    """The windows of a run of consecutive updates that all have `window` klines: row r is the
    window `evaluate` would get at the batch's r-th such update.

    `column(name, start, stop)` is a (stop - start) x window array, oldest kline first. When each
    update closes one kline (a klines file) it is a strided view of one series, no copy; otherwise
    the rows are gathered. Ask for rows in blocks (`blocks`): all of a year's windows at once would
    not fit in memory.
    """

    def __init__(
        self,
        window: int,
        price: Floats,
        row: Callable[[str, int, int], Column],
    ) -> None:
        self.window = window
        self.price = price  # each update's price, one per row
        self._row = row

    def __len__(self) -> int:
        return len(self.price)

    def column(self, name: str, start: int = 0, stop: int | None = None) -> Column:
        if name not in KLINE_FIELDS:
            raise KeyError(f"no kline field {name!r}; fields: {', '.join(KLINE_FIELDS)}")
        return self._row(name, start, len(self) if stop is None else stop)

    def blocks(self, rows: int = 16_384) -> Iterator[tuple[int, int]]:
        """(start, stop) of consecutive blocks of at most `rows` rows."""
        for start in range(0, len(self), rows):
            yield start, min(len(self), start + rows)


class Strategy(ABC):
    """A strategy of SPEC 3.2: built in (`BollingerBands`, `RSI`, `MACD`) or a plug-in.

    A plug-in subclasses this, declares `name` (the display name of trade actions and kline
    fields), `indicators` (its value names, in kline order) and a pydantic `Params` model of its
    own parameters, and takes a validated `Params` in `__init__`, where it sets `window`.
    `evaluate` must be a pure function of the window: no clock, no IO, no randomness, no memory of
    earlier calls; the machine relies on that to replay, backtest and resume exactly.
    """

    name: ClassVar[str]
    indicators: ClassVar[tuple[str, ...]] = ()
    window: int

    @abstractmethod
    def evaluate(self, klines: KlineWindow) -> Evaluation:
        """The conditions and indicator values of the update whose window is `klines`."""

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools] | None:
        """Optionally, (buy, sell) of every window of a batch at once, exactly as `evaluate`
        decides them; None (the default) means the batch path calls `evaluate` per update.

        Return arrays of `len(windows)` booleans. A strategy whose `evaluate` can raise or
        answer outside the contract on some window should raise here too, or return None: the
        machine then finds the exact failing update one by one.
        """
        return None


def checked(strategy: Strategy, evaluation: object) -> Evaluation:
    """The evaluation of a strategy the machine does not trust (a plug-in), refused unless it is
    two booleans and the declared indicators as finite numbers or None (SPEC 3.2 rule 9)."""
    if not isinstance(evaluation, tuple) or len(evaluation) != 3:
        raise ValueError(f"evaluate returned {evaluation!r}, not (buy, sell, values)")
    buy, sell, values = evaluation
    for side, condition in (("buy", buy), ("sell", sell)):
        if not isinstance(condition, bool | np.bool_):
            raise ValueError(f"{side} is {condition!r}, not a boolean")
    if not isinstance(values, tuple | list) or len(values) != len(strategy.indicators):
        raise ValueError(
            f"values {values!r} are not the {len(strategy.indicators)} declared indicators "
            f"{', '.join(strategy.indicators) or '(none)'}"
        )
    numbers: list[float | None] = []
    for name, value in zip(strategy.indicators, values, strict=True):
        if value is None:
            numbers.append(None)
            continue
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise ValueError(f"indicator {name} is {value!r}, not a number or None")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"indicator {name} is {number!r}, not a finite number")
        numbers.append(number)
    return Evaluation(bool(buy), bool(sell), tuple(numbers))


def check_declaration(strategy_class: type[Strategy]) -> None:
    """A strategy's names as SPEC 3.2 rule 3 requires them; ValueError naming the bad one."""
    name = getattr(strategy_class, "name", None)
    if not isinstance(name, str) or DISPLAY_NAME.fullmatch(name) is None:
        raise ValueError(f"display name {name!r} must match {DISPLAY_NAME.pattern}")
    indicators = getattr(strategy_class, "indicators", None)
    if not isinstance(indicators, tuple):
        raise ValueError(f"indicators {indicators!r} must be a tuple of names")
    for indicator in indicators:
        if not isinstance(indicator, str) or INDICATOR_NAME.fullmatch(indicator) is None:
            raise ValueError(f"indicator name {indicator!r} must match {INDICATOR_NAME.pattern}")
    if len(set(indicators)) != len(indicators):
        raise ValueError(f"indicators {indicators!r} name one twice")
