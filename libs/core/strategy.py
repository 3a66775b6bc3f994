"""The per-(bot, symbol) state machine of SPEC section 3, 3.1, 3.2 and 3.3, for every strategy.

Sans-IO: market updates go in, a `Step` comes out, and every time it uses is the update's event
time. The strategy worker, a replay and the backtest all drive this very class, so they make the
same trades. A strategy (`libs.core.strategies`) only decides each update's two conditions; the
crosses, orders, fills, sizing, liquidation and risk exits are this one shared code. Rule 4 of
3.1 fixes the order of work inside one update, and `_trade` is that rule.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from libs.core.batch import CrossIndex, UpdateColumns, Windows, crosses, windows_of
from libs.core.history import KlineHistory
from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger, Side
from libs.core.risk_exits import RiskExits, running_extreme
from libs.core.sim_exchange import (
    Fill,
    Order,
    OrderType,
    Signal,
    SymbolTerms,
    can_open,
    execute,
    liquidate,
    liquidation_due,
    match,
)
from libs.core.strategies.contract import (
    Bools,
    Evaluation,
    Floats,
    KlineWindow,
    Strategy,
    StrategyFailed,
    WindowBatch,
    checked,
)
from libs.errors import BadMarketData

Mode = Literal["both", "long", "short"]
Values = tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """A bot's trading rules for each of its symbols: the strategy that decides the conditions,
    and the parameters every strategy shares (SPEC 3.2 rule 8)."""

    strategy: Strategy
    mode: Mode
    order_type: OrderType
    exits: RiskExits = field(default_factory=RiskExits)

    @property
    def trusted(self) -> bool:
        """A built-in strategy: its answers need no checking (a plug-in's do, SPEC 3.2 rule 9)."""
        return type(self.strategy).__module__.startswith("libs.core.strategies.")

    @property
    def no_values(self) -> Values:
        return (None,) * len(self.strategy.indicators)


@dataclass(frozen=True, slots=True)
class KlineAnnotation:
    """A kline's `strategy`: cross counts and flags of its period, and the strategy's indicator
    values at its last update (in the order it declares them; empty until the first update)."""

    buy_cross_count: int = 0
    sell_cross_count: int = 0
    buy_ordered: bool = False
    sell_ordered: bool = False
    values: Values = ()


@dataclass(frozen=True, slots=True)
class AnnotatedKline:
    kline: Kline
    annotation: KlineAnnotation


def annotate(
    previous: KlineAnnotation,
    values: Values,
    buy_crosses: int,
    sell_crosses: int,
    ordered: Side | None,
) -> KlineAnnotation:
    """A kline's annotation after more updates of its period: counts add up, flags stick, values
    are those of the last update (SPEC 2.1 rule 14)."""
    return KlineAnnotation(
        buy_cross_count=previous.buy_cross_count + buy_crosses,
        sell_cross_count=previous.sell_cross_count + sell_crosses,
        buy_ordered=previous.buy_ordered or ordered == "buy",
        sell_ordered=previous.sell_ordered or ordered == "sell",
        values=values,
    )


@dataclass(frozen=True, slots=True)
class Step:
    """What one update produced: the kline as it now stands and the fills, in order_id order."""

    kline: AnnotatedKline
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class BatchStep:
    """What a batch produced: fills in order, the klines it touched (each as its last update
    left it, ascending), the indexes of updates skipped for an out-of-order kline, and the
    strategy's failure (SPEC 3.2 rule 9) if one stopped the batch at `failure.index`: nothing
    of that update or any later one was applied."""

    fills: tuple[Fill, ...]
    klines: tuple[AnnotatedKline, ...]
    rejected: tuple[int, ...]
    failure: StrategyFailed | None = None


@dataclass
class SymbolStrategy:
    """State of one symbol of one bot; `libs.wire.checkpoint` turns it into the worker's
    checkpoint and back."""

    terms: SymbolTerms
    params: StrategyParams
    ledger: Ledger
    history: KlineHistory | None = field(default=None, compare=False)  # None: a new one
    kline: AnnotatedKline | None = None
    price: float = 0.0
    last_time_ms: int = 0
    first_time_ms: int = 0
    signal: Signal | None = None
    order: Order | None = None
    buy_condition: bool = False
    sell_condition: bool = False
    extreme: float | None = None
    """Highest (long) or lowest (short) update price since the open position's opening fill;
    kept only for a trailing stop, the one exit that reads it (None otherwise)."""
    small_batch: ClassVar[int] = 16  # `on_batch` takes batches up to this size one by one
    _klines: KlineHistory = field(init=False, repr=False, compare=False)
    _exits: bool = field(init=False, repr=False, compare=False)
    _trailing: bool = field(init=False, repr=False, compare=False)
    _trusted: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = KlineHistory(self.params.strategy.window)
        self._klines = self.history
        # read at every event: a bot without risk exits must not pay for them
        self._exits = self.params.exits.any
        self._trailing = self.params.exits.trailing_stop_pct is not None
        self._trusted = self.params.trusted

    def closed_klines(self) -> list[Kline]:
        """The closed klines the next window needs, oldest first (a checkpoint keeps them)."""
        return self._klines.closed()

    # --- the update ----------------------------------------------------------------------------

    def on_update(self, update: MarketUpdate) -> Step:
        """Evaluate the strategy on the update's window, then trade on its crosses (SPEC 3.1
        rule 4). A strategy that fails raises `StrategyFailed` with nothing changed."""
        current = self.kline
        if current is not None and update.kline.time_ms < current.kline.time_ms:
            raise BadMarketData("kline_time", update.kline.time_ms, "earlier than the last kline")
        new_kline = current is None or update.kline.time_ms > current.kline.time_ms
        klines = self._klines
        if self._trusted:  # a built-in does not fail: nothing to undo
            klines.advance(update.kline, new_kline=new_kline)
            evaluation = self._evaluate(klines.window_view() if klines.full() else None)
        else:
            mark = klines.mark()
            klines.advance(update.kline, new_kline=new_kline)
            try:
                evaluation = self._evaluate(klines.window_view() if klines.full() else None)
            except StrategyFailed as failed:
                klines.restore(mark)
                raise StrategyFailed(0, update.time_ms, failed.reason) from failed
        if current is None:
            self.first_time_ms = update.time_ms
        annotation = KlineAnnotation() if new_kline or current is None else current.annotation
        self.price, self.last_time_ms = update.price, update.time_ms
        buy_now, sell_now = evaluation.buy, evaluation.sell
        buy_cross = buy_now and not self.buy_condition
        sell_cross = sell_now and not self.sell_condition
        self.buy_condition, self.sell_condition = buy_now, sell_now
        fills, ordered = self._trade(update.time_ms, update.price, buy_cross, sell_cross)
        self.kline = AnnotatedKline(
            update.kline, annotate(annotation, evaluation.values, buy_cross, sell_cross, ordered)
        )
        return Step(kline=self.kline, fills=tuple(fills))

    def _evaluate(self, window: KlineWindow | None) -> Evaluation:
        """The strategy's answer on a window (None: fewer than `window` klines yet, so no
        condition and no value, SPEC 3.2 rule 2). Both conditions at once mean neither."""
        params = self.params
        if window is None:
            return Evaluation(False, False, params.no_values)
        if self._trusted:
            evaluation = params.strategy.evaluate(window)
        else:
            try:
                evaluation = checked(params.strategy, params.strategy.evaluate(window))
            except Exception as error:  # a plug-in's failure, whatever it is (3.2 rule 9)
                raise StrategyFailed(0, 0, f"{type(error).__name__}: {error}") from error
        if evaluation.buy and evaluation.sell:
            return Evaluation(False, False, evaluation.values)
        return evaluation

    def _trade(
        self, time_ms: int, price: float, buy_cross: bool, sell_cross: bool
    ) -> tuple[list[Fill], Side | None]:
        """SPEC 3.1 rule 4, given the update's crosses: settle the open order, then liquidate,
        then a risk exit (3.3), then let a cross place an order. Returns the fills and the side
        of an order a cross placed."""
        fills = self._settle_open_order(time_ms, price)
        if self.ledger.position is not None and liquidation_due(
            self.ledger, price, self.terms.isolated
        ):
            fills.append(self._liquidate(time_ms, price))
        if self._exits:
            self._risk_exit(time_ms, price, fills)
        ordered: Side | None = None
        if buy_cross and self._place_order("buy", time_ms, price):
            ordered = "buy"
        elif sell_cross and self._place_order("sell", time_ms, price):
            ordered = "sell"
        return fills, ordered

    def _risk_exit(self, time_ms: int, price: float, fills: list[Fill]) -> None:
        """SPEC 3.3 for the position still open after the first two steps: move the trailing
        extreme through this update, then place the first exit that triggers, if no order is
        open."""
        position = self.ledger.position
        if position is None:
            self.extreme = None
            return
        if self._trailing:
            opened_now = any(fill.round_trip is None for fill in fills)
            self._extend_extreme(price, opened_now)
        if self.order is None:
            exit = self.params.exits.triggered(position, price, self.extreme)
            if exit is not None:
                self._place_exit(exit, time_ms, price)

    def _extend_extreme(self, price: float, restart: bool) -> None:
        """h (long) or l (short) of SPEC 3.3 rule 2, through this update's price; `restart` at
        the update whose fill opened the position."""
        position = self.ledger.position
        assert position is not None
        extreme = self.extreme
        if restart or extreme is None:
            self.extreme = price
        elif position.side == "long":
            self.extreme = price if price > extreme else extreme
        else:
            self.extreme = price if price < extreme else extreme

    def _settle_open_order(self, time_ms: int, price: float) -> list[Fill]:
        order = self.order
        if order is None:
            return []
        matched = match(order, time_ms, price, self.terms)
        if matched is None:
            return []
        fill_price, order_type = matched
        self.ledger, fills = execute(
            order,
            self.ledger,
            time_ms=time_ms,
            fill_price=fill_price,
            order_type=order_type,
            terms=self.terms,
        )
        self.order = None
        if fills:
            self.signal = "bought" if order.side == "buy" else "sold"
        else:
            self.signal = order.previous_signal  # SPEC 3.1 rule 14: ended without a fill
        return fills

    def _liquidate(self, time_ms: int, price: float) -> Fill:
        """The open position's margin is gone (rule 10): close it, cancel any open order."""
        position = self.ledger.position
        assert position is not None
        self.ledger, fill = liquidate(self.ledger, time_ms=time_ms, price=price, terms=self.terms)
        self.order = None
        self.signal = "sold" if position.side == "long" else "bought"
        return fill

    def _place_exit(self, exit: str, time_ms: int, price: float) -> None:
        """SPEC 3.3 rule 3: a closing-only taker order at this update, named after the exit."""
        position = self.ledger.position
        assert position is not None
        side: Side = "sell" if position.side == "long" else "buy"
        self.order = Order(side, True, False, "taker", time_ms, price, self.signal, exit)
        self.signal = "selling" if side == "sell" else "buying"

    def _place_order(self, side: Side, time_ms: int, price: float) -> bool:
        """SPEC 3.1 rule 5: close the opposite position in every mode, open where mode allows."""
        if self.order is not None:
            return False
        position = self.ledger.position
        opening_side = "long" if side == "buy" else "short"
        if position is not None and position.side == opening_side:
            return False
        closes = position is not None
        opens = self.params.mode in ("both", opening_side)
        if not closes and not opens:
            return False
        if not closes and not can_open(self.ledger, price, self.terms):
            return False  # an opening-only order below min_size is not placed (rule 6)
        self.order = Order(
            side=side,
            closes=closes,
            opens=opens,
            order_type=self.params.order_type,
            signal_time_ms=time_ms,
            signal_price=price,
            previous_signal=self.signal,
        )
        self.signal = "buying" if side == "buy" else "selling"
        return True

    # --- a batch of updates ---------------------------------------------------------------------

    def on_batch(
        self, updates: Sequence[MarketUpdate] | UpdateColumns, *, kline_limit: int | None = None
    ) -> BatchStep:
        """Exactly what `on_update` does for each update in turn, at batch speed.

        The strategy decides the conditions of all updates at once (its `conditions`, or
        `evaluate` per window); the state machine then jumps from event to event (a cross that
        can act, an open order's fill or timeout, a position's liquidation or risk exit) and
        runs `_trade`, the code `on_update` runs, on those updates only: between events nothing
        can change but the risk exits' running extreme. `kline_limit` annotates only the
        batch's last so many klines (a backtest needs 1, the live worker the bot's
        `kline_history`), skipping an evaluation for each kline nobody will see.

        A batch of at most `small_batch` updates goes through `on_update` one by one instead:
        the vector path costs ~100 us of numpy set-up per call, ten times one update's work,
        and a live market at a modest pace comes a few updates per read. So does a batch on
        which a plug-in fails: one by one finds the exact update it fails at.
        """
        if not isinstance(updates, UpdateColumns) and len(updates) <= self.small_batch:
            return self._one_by_one(updates, kline_limit)
        all_columns = updates if isinstance(updates, UpdateColumns) else UpdateColumns.of(updates)
        columns, rejected = self._drop_out_of_order(all_columns)
        count = len(columns)
        if count == 0:
            return BatchStep((), (), rejected)
        klines = self._klines
        windows, starts = windows_of(
            klines.closed_columns(), self._current_kline(), columns, klines.window
        )
        segments = self._kline_segments(starts, kline_limit)
        try:
            buy, sell = self._conditions(windows, columns)
            values = [self._values_at(windows, columns, stop - 1) for _, stop in segments]
        except StrategyFailed:
            return self._one_by_one(
                [all_columns.update(index) for index in range(len(all_columns))], kline_limit
            )
        buy_crosses = CrossIndex.of(crosses(buy, self.buy_condition))
        sell_crosses = CrossIndex.of(crosses(sell, self.sell_condition))
        price, time_ms = columns.price, columns.time_ms
        extremes = (float(price.min()), float(price.max()))
        if self.kline is None:
            self.first_time_ms = int(time_ms[0])

        buy_at, sell_at = buy_crosses.members, sell_crosses.members
        fills: list[Fill] = []
        ordered_at: dict[int, Side] = {}
        index = 0
        while index < count:
            order = self.order
            if order is not None and order.order_type == "taker":
                event = index  # a taker order fills at the next update (SPEC 3.1 rule 8)
            else:
                event = self._next_event(index, columns, buy_crosses, sell_crosses, extremes)
            if self._trailing and event > index and self.ledger.position is not None:
                self._skip_to(price[index : min(event, count)])
            if event >= count:
                break
            new_fills, ordered = self._trade(
                time_ms.item(event), price.item(event), event in buy_at, event in sell_at
            )
            if new_fills:
                fills += new_fills
            if ordered is not None:
                ordered_at[event] = ordered
            index = event + 1

        annotated = self._close_batch(
            columns, segments, values, buy_crosses, sell_crosses, ordered_at, starts
        )
        klines.replace(windows.closed_tail(klines.keep), columns.kline(count - 1))
        self.buy_condition, self.sell_condition = bool(buy[-1]), bool(sell[-1])
        return BatchStep(tuple(fills), annotated, rejected)

    def _one_by_one(self, updates: Sequence[MarketUpdate], kline_limit: int | None) -> BatchStep:
        """`on_batch`'s answer, from `on_update` per update (what the vector path is proven
        equal to); a strategy failure stops it before the failing update."""
        fills: list[Fill] = []
        klines: dict[int, AnnotatedKline] = {}  # by open time: ascending, each as last left
        rejected: list[int] = []
        failure: StrategyFailed | None = None
        for index, update in enumerate(updates):
            try:
                step = self.on_update(update)
            except BadMarketData:
                rejected.append(index)
                continue
            except StrategyFailed as failed:
                failure = StrategyFailed(index, failed.time_ms, failed.reason)
                break
            fills += step.fills
            klines[step.kline.kline.time_ms] = step.kline
        touched = tuple(klines.values())
        if kline_limit is not None:
            touched = touched[-kline_limit:]
        return BatchStep(tuple(fills), touched, tuple(rejected), failure)

    def _conditions(self, windows: Windows, columns: UpdateColumns) -> tuple[Bools, Bools]:
        """(buy, sell) of every update: false without a window, neither where both hold."""
        count = len(columns)
        buy = np.zeros(count, dtype=np.bool_)
        sell = np.zeros(count, dtype=np.bool_)
        first = windows.first
        if first >= count:
            return buy, sell
        batch = windows.batch(columns)
        decided = self._vector_conditions(batch)
        if decided is None:  # the strategy decides one window at a time
            for row in range(len(batch)):
                evaluation = self._evaluate(_row_window(batch, row))
                buy[first + row], sell[first + row] = evaluation.buy, evaluation.sell
            return buy, sell
        buy[first:], sell[first:] = decided
        if not self._trusted:
            both = buy & sell
            buy &= ~both
            sell &= ~both
        return buy, sell

    def _vector_conditions(self, batch: WindowBatch) -> tuple[Bools, Bools] | None:
        """The strategy's own vectorized answer, if it offers one; a plug-in's that raises or
        answers in the wrong shape fails the batch (then found one by one)."""
        strategy = self.params.strategy
        if self._trusted:
            return strategy.conditions(batch)
        try:
            decided = strategy.conditions(batch)
            if decided is None:
                return None
            buy, sell = (np.asarray(side) for side in decided)
        except Exception as error:
            raise StrategyFailed(0, 0, f"{type(error).__name__}: {error}") from error
        rows = len(batch)
        if any(side.shape != (rows,) or side.dtype != np.bool_ for side in (buy, sell)):
            raise StrategyFailed(0, 0, "conditions did not return two arrays of booleans")
        return buy, sell

    def _values_at(self, windows: Windows, columns: UpdateColumns, index: int) -> Values:
        """The strategy's indicator values at one update (a kline's last)."""
        if not windows.valid[index]:
            return self.params.no_values
        return self._evaluate(windows.kline_window(index, columns)).values

    def _current_kline(self) -> Kline | None:
        return None if self.kline is None else self.kline.kline

    def _drop_out_of_order(self, columns: UpdateColumns) -> tuple[UpdateColumns, tuple[int, ...]]:
        """Updates whose kline is older than one already seen; `on_update` raises for these."""
        kline_time = columns.kline_time_ms
        floor = -(2**62) if self.kline is None else self.kline.kline.time_ms
        if len(kline_time) == 0 or (
            kline_time[0] >= floor and bool(np.all(kline_time[1:] >= kline_time[:-1]))
        ):
            return columns, ()  # in order, as a stream nearly always is
        seen = np.maximum.accumulate(np.concatenate([[floor], kline_time]))[:-1]
        bad = kline_time < seen
        if not bad.any():
            return columns, ()
        return columns.take(~bad), tuple(int(i) for i in np.flatnonzero(bad))

    def _skip_to(self, prices: Floats) -> None:
        """Updates between events: only the open position's running extreme moves."""
        position = self.ledger.position
        if position is None or len(prices) == 0:
            return
        extreme = self.extreme
        if position.side == "long":
            highest = float(prices.max())
            self.extreme = highest if extreme is None or highest > extreme else extreme
        else:
            lowest = float(prices.min())
            self.extreme = lowest if extreme is None or lowest < extreme else extreme

    def _next_event(
        self,
        start: int,
        columns: UpdateColumns,
        buy_crosses: CrossIndex,
        sell_crosses: CrossIndex,
        extremes: tuple[float, float],
    ) -> int:
        """The first update at or after `start` where `_trade` can change something, with no
        taker order open (the loop fills one at the very next update)."""
        order, ledger, terms = self.order, self.ledger, self.terms
        position = ledger.position
        price, time_ms = columns.price, columns.time_ms
        if order is None and position is not None:
            # The common state: a position waits for the cross that closes it (rule 5), unless a
            # liquidation or a risk exit comes first. The loss grows monotonically as the price
            # moves against the position, so a range's worst price tells whether any update in
            # it liquidates: first the batch's (one comparison), then, only if that one would,
            # the range's.
            long = position.side == "long"
            event = sell_crosses.next_at(start) if long else buy_crosses.next_at(start)
            if event > start and liquidation_due(
                ledger, extremes[0 if long else 1], terms.isolated
            ):
                window = price[start:event]
                worst = float(window.min() if long else window.max())
                if liquidation_due(ledger, worst, terms.isolated):
                    event = start + self._first_liquidation(window)
            if event > start and self._exits:
                event = self._first_exit(start, event, price)
            return event
        mode = self.params.mode
        count = len(columns)
        margin_x_leverage = ledger.available_capital * terms.buy_pct / 100 * terms.leverage
        step = float(terms.min_size)
        size = 64
        while start < count:
            stop = min(count, start + size)
            prices = price[start:stop]
            mask = np.zeros(stop - start, dtype=np.bool_)
            if order is not None:  # a maker limit reached, or timed out (rule 9)
                if order.side == "buy":
                    mask |= prices <= order.signal_price
                else:
                    mask |= prices >= order.signal_price
                mask |= time_ms[start:stop] - order.signal_time_ms >= terms.order_timeout_ms
            elif position is None:  # a cross that may open one, if the size reaches min_size
                openable = margin_x_leverage / prices / step >= 1.0  # floor(...) >= 1 (rule 6)
                if mode != "short":
                    mask |= buy_crosses.mask[start:stop] & openable
                if mode != "long":
                    mask |= sell_crosses.mask[start:stop] & openable
            if position is not None:
                mask |= self._liquidation_mask(prices)
            found = np.flatnonzero(mask)
            if len(found):
                return start + int(found[0])
            start = stop
            size *= 4
        return count

    def _first_exit(self, start: int, stop: int, price: Floats) -> int:
        """The first update in start..stop-1 at which the open position triggers a risk exit
        (SPEC 3.3 rule 2), else `stop`; searched in growing chunks, as exits are often near."""
        position = self.ledger.position
        assert position is not None
        exits, extreme = self.params.exits, self.extreme
        size = 64
        while start < stop:
            end = min(stop, start + size)
            prices = price[start:end]
            running = running_extreme(position, extreme, prices) if self._trailing else prices
            found = np.flatnonzero(exits.mask(position, prices, running))
            if len(found):
                return start + int(found[0])
            extreme = float(running[-1])
            start = end
            size *= 4
        return stop

    def _liquidation_mask(self, prices: Floats) -> Bools:
        """Where the open position is liquidated (rule 10), computed as `liquidation_due` does."""
        ledger = self.ledger
        position = ledger.position
        assert position is not None
        size_value = position.size_value
        if position.side == "long":
            loss = -((prices - position.entry_price) * size_value)
        else:
            loss = -((position.entry_price - prices) * size_value)
        if self.terms.isolated:
            limit = position.margin
        else:
            limit = ledger.available_capital + position.margin
        mask: Bools = loss >= limit
        return mask

    def _first_liquidation(self, prices: Floats) -> int:
        return int(np.flatnonzero(self._liquidation_mask(prices))[0])

    def _kline_segments(self, starts: Bools, kline_limit: int | None) -> list[tuple[int, int]]:
        """(first, stop) updates of each kline the batch touched that will be annotated (all,
        or the last `kline_limit`), ascending."""
        count = len(starts)
        opened = np.flatnonzero(starts)  # where each kline of the batch but a continued one starts
        if kline_limit is not None:
            opened = opened[-kline_limit:]
        segment_starts = opened.tolist()
        if not segment_starts or segment_starts[0] != 0:  # the batch continues the current kline
            segment_starts.insert(0, 0)
        if kline_limit is not None and len(segment_starts) > kline_limit:
            del segment_starts[0]  # that kline is older than the last `kline_limit`
        return list(zip(segment_starts, [*segment_starts[1:], count], strict=True))

    def _close_batch(
        self,
        columns: UpdateColumns,
        segments: list[tuple[int, int]],
        values: list[Values],
        buy_crosses: CrossIndex,
        sell_crosses: CrossIndex,
        ordered_at: dict[int, Side],
        starts: Bools,
    ) -> tuple[AnnotatedKline, ...]:
        """Bring the kline state to the batch's last update; annotate the klines of `segments`,
        each as its last update left it."""
        current = self.kline
        order_indexes = list(ordered_at)  # ascending: events come in order
        klines: list[AnnotatedKline] = []
        for (first, stop), kline_values in zip(segments, values, strict=True):
            continues = first == 0 and current is not None and not starts[0]
            previous = (
                current.annotation if continues and current is not None else KlineAnnotation()
            )
            orders = order_indexes[
                bisect_left(order_indexes, first) : bisect_left(order_indexes, stop)
            ]
            sides = {ordered_at[i] for i in orders}
            annotation = KlineAnnotation(
                buy_cross_count=previous.buy_cross_count + buy_crosses.count_in(first, stop),
                sell_cross_count=previous.sell_cross_count + sell_crosses.count_in(first, stop),
                buy_ordered=previous.buy_ordered or "buy" in sides,
                sell_ordered=previous.sell_ordered or "sell" in sides,
                values=kline_values,
            )
            klines.append(AnnotatedKline(columns.kline(stop - 1), annotation))
        self.kline = klines[-1]
        self.price = float(columns.price[-1])
        self.last_time_ms = int(columns.time_ms[-1])
        return tuple(klines)


def _row_window(batch: WindowBatch, row: int) -> KlineWindow:
    """Row `row` of a batch as the window `evaluate` takes."""
    return KlineWindow(lambda name: batch.column(name, row, row + 1)[0])
