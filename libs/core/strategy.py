"""The per-(bot, symbol) Bollinger Bands state machine (SPEC section 3 and 3.1).

Sans-IO: market updates go in, a `Step` comes out, and every time it uses is the update's event
time. The strategy worker, a replay and the backtest all drive this very class, so they make the
same trades. Rule 4 of 3.1 fixes the order of work inside one update, and `on_update` is that rule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.core.bands import Bands, band_conditions, band_width_pct, bollinger_bands, percent_b
from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger, Position, Side
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


@dataclass
class SymbolStrategy:
    """State of one symbol of one bot. `to_state`/`from_state` let the worker checkpoint it."""

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
        fills += self._liquidate_if_margin_gone(time_ms, price)
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

    def _liquidate_if_margin_gone(self, time_ms: int, price: float) -> list[Fill]:
        position = self.ledger.position
        if position is None or not liquidation_due(self.ledger, price, self.terms.isolated):
            return []
        self.ledger, fill = liquidate(self.ledger, time_ms=time_ms, price=price, terms=self.terms)
        self.order = None
        self.signal = "sold" if position.side == "long" else "bought"
        return [fill]

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

    # --- checkpoints ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state; floats round-trip exactly through orjson."""
        kline = self.kline
        return {
            "ledger": ledger_state(self.ledger),
            "closed_closes": list(self.closed_closes),
            "kline": None if kline is None else _kline_state(kline),
            "price": self.price,
            "last_time_ms": self.last_time_ms,
            "first_time_ms": self.first_time_ms,
            "signal": self.signal,
            "order": None if self.order is None else _order_state(self.order),
            "buy_condition": self.buy_condition,
            "sell_condition": self.sell_condition,
        }

    @classmethod
    def from_state(
        cls, terms: SymbolTerms, params: StrategyParams, state: dict[str, Any]
    ) -> SymbolStrategy:
        return cls(
            terms=terms,
            params=params,
            ledger=ledger_from_state(state["ledger"]),
            closed_closes=deque(state["closed_closes"]),
            kline=None if state["kline"] is None else _kline_from_state(state["kline"]),
            price=state["price"],
            last_time_ms=state["last_time_ms"],
            first_time_ms=state["first_time_ms"],
            signal=state["signal"],
            order=None if state["order"] is None else Order(**state["order"]),
            buy_condition=state["buy_condition"],
            sell_condition=state["sell_condition"],
        )


def ledger_state(ledger: Ledger) -> dict[str, Any]:
    position = ledger.position
    return {
        "allocation": ledger.allocation,
        "realized_pnl": ledger.realized_pnl,
        "fill_count": ledger.fill_count,
        "win": ledger.win,
        "lost": ledger.lost,
        "last_trade_time_ms": ledger.last_trade_time_ms,
        "position": None
        if position is None
        else {
            "side": position.side,
            "entry_price": position.entry_price,
            "size": position.size,
            "margin": position.margin,
            "opening_fee": position.opening_fee,
        },
    }


def ledger_from_state(state: dict[str, Any]) -> Ledger:
    position = state["position"]
    return Ledger(
        allocation=state["allocation"],
        realized_pnl=state["realized_pnl"],
        fill_count=state["fill_count"],
        win=state["win"],
        lost=state["lost"],
        last_trade_time_ms=state["last_trade_time_ms"],
        position=None if position is None else Position(**position),
    )


def _order_state(order: Order) -> dict[str, Any]:
    return {
        "side": order.side,
        "closes": order.closes,
        "opens": order.opens,
        "order_type": order.order_type,
        "signal_time_ms": order.signal_time_ms,
        "signal_price": order.signal_price,
        "previous_signal": order.previous_signal,
    }


def _kline_state(annotated: AnnotatedKline) -> dict[str, Any]:
    kline, annotation = annotated.kline, annotated.annotation
    bands = annotation.bands
    return {
        "kline": [kline.time_ms, kline.open, kline.high, kline.low, kline.close, kline.volume],
        "counts": [annotation.buy_cross_count, annotation.sell_cross_count],
        "ordered": [annotation.buy_ordered, annotation.sell_ordered],
        "bands": None if bands is None else [bands.middle, bands.upper, bands.lower],
        "percent_b": annotation.percent_b,
        "width_pct": annotation.width_pct,
    }


def _kline_from_state(state: dict[str, Any]) -> AnnotatedKline:
    time_ms, open_, high, low, close, volume = state["kline"]
    bands = state["bands"]
    return AnnotatedKline(
        kline=Kline(time_ms, open_, high, low, close, volume),
        annotation=KlineAnnotation(
            buy_cross_count=state["counts"][0],
            sell_cross_count=state["counts"][1],
            buy_ordered=state["ordered"][0],
            sell_ordered=state["ordered"][1],
            bands=None if bands is None else Bands(*bands),
            percent_b=state["percent_b"],
            width_pct=state["width_pct"],
        ),
    )
