"""The per-(bot, symbol) Bollinger Bands state machine (SPEC section 3 and 3.1).

Sans-IO: market updates go in, a `Step` comes out, and every time it uses is the update's event
time. The strategy worker, a replay and the backtest all drive this very class, so they make the
same trades. Rule 4 of 3.1 fixes the order of work inside one update, and `on_update` is that rule.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from libs.core.bands import Bands, band_conditions, band_width_pct, bollinger_bands, percent_b
from libs.core.batch import (
    Bools,
    CrossIndex,
    Floats,
    UpdateColumns,
    Windows,
    band_flags,
    crosses,
    windows_of,
)
from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger, Side
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
from libs.errors import BadMarketData

Mode = Literal["both", "long", "short"]


@dataclass(frozen=True, slots=True)
class StrategyParams:
    period: int
    nbdev_up: float
    nbdev_dn: float
    mode: Mode
    order_type: OrderType


@dataclass(frozen=True, slots=True)
class KlineAnnotation:
    """A kline's `strategy`: cross counts and flags of its period, bands of its last update."""

    buy_cross_count: int = 0
    sell_cross_count: int = 0
    buy_ordered: bool = False
    sell_ordered: bool = False
    bands: Bands | None = None
    percent_b: float | None = None
    width_pct: float | None = None


@dataclass(frozen=True, slots=True)
class AnnotatedKline:
    kline: Kline
    annotation: KlineAnnotation


def annotate(
    previous: KlineAnnotation,
    close: float,
    bands: Bands | None,
    buy_crosses: int,
    sell_crosses: int,
    ordered: Side | None,
) -> KlineAnnotation:
    """A kline's annotation after more updates of its period: counts add up, flags stick, bands
    are those of the last update (SPEC 2.1 rule 14)."""
    return KlineAnnotation(
        buy_cross_count=previous.buy_cross_count + buy_crosses,
        sell_cross_count=previous.sell_cross_count + sell_crosses,
        buy_ordered=previous.buy_ordered or ordered == "buy",
        sell_ordered=previous.sell_ordered or ordered == "sell",
        bands=bands,
        percent_b=None if bands is None else percent_b(close, bands),
        width_pct=None if bands is None else band_width_pct(bands),
    )


@dataclass(frozen=True, slots=True)
class Step:
    """What one update produced: the kline as it now stands and the fills, in order_id order."""

    kline: AnnotatedKline
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class BatchStep:
    """What a batch produced: fills in order, the klines it touched (each as its last update
    left it, ascending), and the indexes of updates skipped for an out-of-order kline."""

    fills: tuple[Fill, ...]
    klines: tuple[AnnotatedKline, ...]
    rejected: tuple[int, ...]


@dataclass
class SymbolStrategy:
    """State of one symbol of one bot; `libs.wire.checkpoint` turns it into the worker's
    checkpoint and back."""

    terms: SymbolTerms
    params: StrategyParams
    ledger: Ledger
    closed_closes: deque[float] = field(default_factory=deque)
    kline: AnnotatedKline | None = None
    price: float = 0.0
    last_time_ms: int = 0
    first_time_ms: int = 0
    signal: Signal | None = None
    order: Order | None = None
    buy_condition: bool = False
    sell_condition: bool = False
    small_batch: ClassVar[int] = 16  # `on_batch` takes batches up to this size one by one

    def __post_init__(self) -> None:
        self.closed_closes = deque(self.closed_closes, maxlen=max(self.params.period - 1, 1))

    # --- the update ----------------------------------------------------------------------------

    def on_update(self, update: MarketUpdate) -> Step:
        """Settle the open order, then liquidate, then act on a cross (SPEC 3.1 rule 4)."""
        self._advance_kline(update)
        assert self.kline is not None
        closes = [*self.closed_closes, self.kline.kline.close]
        params = self.params
        bands = bollinger_bands(closes, params.period, params.nbdev_up, params.nbdev_dn)
        buy_now, sell_now = band_conditions(update.price, bands)
        buy_cross = buy_now and not self.buy_condition
        sell_cross = sell_now and not self.sell_condition
        self.buy_condition, self.sell_condition = buy_now, sell_now
        fills, ordered = self._trade(update.time_ms, update.price, buy_cross, sell_cross)
        self.kline = AnnotatedKline(
            self.kline.kline,
            annotate(
                self.kline.annotation, self.kline.kline.close, bands, buy_cross, sell_cross, ordered
            ),
        )
        return Step(kline=self.kline, fills=tuple(fills))

    def _trade(
        self, time_ms: int, price: float, buy_cross: bool, sell_cross: bool
    ) -> tuple[list[Fill], Side | None]:
        """SPEC 3.1 rule 4, given the update's crosses: settle the open order, then liquidate,
        then let a cross place an order. Returns the fills and the side of a placed order."""
        fills = self._settle_open_order(time_ms, price)
        if self.ledger.position is not None and liquidation_due(
            self.ledger, price, self.terms.isolated
        ):
            fills.append(self._liquidate(time_ms, price))
        ordered: Side | None = None
        if buy_cross and self._place_order("buy", time_ms, price):
            ordered = "buy"
        elif sell_cross and self._place_order("sell", time_ms, price):
            ordered = "sell"
        return fills, ordered

    def _advance_kline(self, update: MarketUpdate) -> None:
        current = self.kline
        if current is not None and update.kline.time_ms < current.kline.time_ms:
            raise BadMarketData("kline_time", update.kline.time_ms, "earlier than the last kline")
        if current is None or update.kline.time_ms > current.kline.time_ms:
            if current is not None:
                self.closed_closes.append(current.kline.close)
            annotation = KlineAnnotation()
        else:
            annotation = current.annotation
        if current is None:
            self.first_time_ms = update.time_ms
        self.kline = AnnotatedKline(update.kline, annotation)
        self.price = update.price
        self.last_time_ms = update.time_ms

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

        Conditions and crosses come for all updates at once (`libs.core.batch`); the state
        machine then jumps from event to event (a cross that can act, an open order's fill or
        timeout, a position's liquidation price) and runs `_trade`, the code `on_update` runs,
        on those updates only: between events nothing can change. `kline_limit` annotates only
        the batch's last so many klines (a backtest needs 1, the live worker the bot's
        `kline_history`), skipping a TA-Lib call for each kline nobody will see.

        A batch of at most `small_batch` updates goes through `on_update` one by one instead:
        the vector path costs ~100 us of numpy set-up per call, ten times one update's work,
        and a live market at a modest pace comes a few updates per read.
        """
        if not isinstance(updates, UpdateColumns) and len(updates) <= self.small_batch:
            return self._one_by_one(updates, kline_limit)
        columns = updates if isinstance(updates, UpdateColumns) else UpdateColumns.of(updates)
        columns, rejected = self._drop_out_of_order(columns)
        count = len(columns)
        if count == 0:
            return BatchStep((), (), rejected)
        params = self.params
        windows, starts = windows_of(
            list(self.closed_closes), self._current_kline(), columns, params.period
        )
        buy, sell = band_flags(
            windows, columns.price, columns.close, params.period, params.nbdev_up, params.nbdev_dn
        )
        buy_crosses = CrossIndex.of(crosses(buy, self.buy_condition))
        sell_crosses = CrossIndex.of(crosses(sell, self.sell_condition))
        price, time_ms = columns.price, columns.time_ms
        extremes = (float(price.min()), float(price.max()))

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

        klines = self._close_batch(
            columns, windows, starts, buy_crosses, sell_crosses, ordered_at, kline_limit
        )
        self.buy_condition, self.sell_condition = bool(buy[-1]), bool(sell[-1])
        return BatchStep(tuple(fills), klines, rejected)

    def _one_by_one(self, updates: Sequence[MarketUpdate], kline_limit: int | None) -> BatchStep:
        """`on_batch`'s answer, from `on_update` per update (what the vector path is proven
        equal to)."""
        fills: list[Fill] = []
        klines: dict[int, AnnotatedKline] = {}  # by open time: ascending, each as last left
        rejected: list[int] = []
        for index, update in enumerate(updates):
            try:
                step = self.on_update(update)
            except BadMarketData:
                rejected.append(index)
                continue
            fills += step.fills
            klines[step.kline.kline.time_ms] = step.kline
        touched = tuple(klines.values())
        if kline_limit is not None:
            touched = touched[-kline_limit:]
        return BatchStep(tuple(fills), touched, tuple(rejected))

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
            # liquidation comes first. The loss grows monotonically as the price moves against
            # the position, so a range's worst price tells whether any update in it liquidates:
            # first the batch's (one comparison), then, only if that one would, the range's.
            long = position.side == "long"
            closing = sell_crosses.next_at(start) if long else buy_crosses.next_at(start)
            if closing > start and liquidation_due(
                ledger, extremes[0 if long else 1], terms.isolated
            ):
                window = price[start:closing]
                worst = float(window.min() if long else window.max())
                if liquidation_due(ledger, worst, terms.isolated):
                    return start + self._first_liquidation(window)
            return closing
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
            elif position.side == "long":  # a cross that closes it (rule 5)
                mask |= sell_crosses.mask[start:stop]
            else:
                mask |= buy_crosses.mask[start:stop]
            if position is not None:
                mask |= self._liquidation_mask(prices)
            found = np.flatnonzero(mask)
            if len(found):
                return start + int(found[0])
            start = stop
            size *= 4
        return count

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

    def _close_batch(
        self,
        columns: UpdateColumns,
        windows: Windows,
        starts: Bools,
        buy_crosses: CrossIndex,
        sell_crosses: CrossIndex,
        ordered_at: dict[int, Side],
        kline_limit: int | None,
    ) -> tuple[AnnotatedKline, ...]:
        """Bring the kline state to the batch's last update; annotate the klines it touched
        (all of them, or the last `kline_limit`), each as its last update left it."""
        count = len(columns)
        current = self.kline
        opened = np.flatnonzero(starts)  # where each kline of the batch but a continued one starts
        if kline_limit is not None:
            opened = opened[-kline_limit:]
        segment_starts = opened.tolist()
        if not segment_starts or segment_starts[0] != 0:  # the batch continues `current`
            segment_starts.insert(0, 0)
        if kline_limit is not None and len(segment_starts) > kline_limit:
            del segment_starts[0]  # that kline is older than the last `kline_limit`
        segment_stops = [*segment_starts[1:], count]
        if current is None:
            self.first_time_ms = int(columns.time_ms[0])
        params = self.params
        order_indexes = list(ordered_at)  # ascending: events come in order
        klines: list[AnnotatedKline] = []
        for first, stop in zip(segment_starts, segment_stops, strict=True):
            last = stop - 1
            continues = first == 0 and current is not None and not starts[0]
            previous = (
                current.annotation if continues and current is not None else KlineAnnotation()
            )
            orders = order_indexes[
                bisect_left(order_indexes, first) : bisect_left(order_indexes, stop)
            ]
            sides = {ordered_at[i] for i in orders}
            close = float(columns.close[last])
            bands = None
            if windows.valid[last]:
                window = windows.closes(last, params.period, close)
                bands = bollinger_bands(window, params.period, params.nbdev_up, params.nbdev_dn)
            annotation = KlineAnnotation(
                buy_cross_count=previous.buy_cross_count + buy_crosses.count_in(first, stop),
                sell_cross_count=previous.sell_cross_count + sell_crosses.count_in(first, stop),
                buy_ordered=previous.buy_ordered or "buy" in sides,
                sell_ordered=previous.sell_ordered or "sell" in sides,
                bands=bands,
                percent_b=None if bands is None else percent_b(close, bands),
                width_pct=None if bands is None else band_width_pct(bands),
            )
            klines.append(AnnotatedKline(columns.kline(last), annotation))
        keep = self.closed_closes.maxlen or 1
        self.closed_closes = deque(windows.history[-keep:].tolist(), maxlen=keep)
        self.kline = klines[-1]
        self.price = float(columns.price[-1])
        self.last_time_ms = int(columns.time_ms[-1])
        return tuple(klines)
