"""Risk exits (SPEC 3.3) against values worked out by hand from its formulas.

Most scenarios trade a tiny deterministic plug-in, `Marker`, whose conditions are read off the
kline's volume (1: buy, 2: sell, anything else: neither), so that every cross is placed where the
scenario wants it, at any price. Openings are maker orders at the limit, so the entry price is a
round number (e = 100.0) and every trigger is a short expression written as SPEC 3.3 rule 2 writes
it, evaluated here the same way (IEEE doubles, left to right). A few scenarios trade
BollingerBands(3, 1, 1), whose bands are checked on paper in tests/unit/test_core_strategy.py.

Every scenario is also replayed through `on_batch` (vector path, batches of several sizes) and
must end with the same fills, klines and state as `on_update` one by one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

import numpy as np
import orjson
import pytest

from libs.core.market import Kline, MarketUpdate
from libs.core.pnl import Ledger, Position, PositionSide
from libs.core.risk_exits import RiskExits, running_extreme
from libs.core.sim_exchange import Fill, OrderType, SymbolTerms
from libs.core.strategies import BollingerBands
from libs.core.strategies.contract import Bools, Evaluation, KlineWindow, Strategy, WindowBatch
from libs.core.strategies.harness import Trading, check_paths_match, machine_state
from libs.core.strategy import AnnotatedKline, Mode, Step, StrategyParams, SymbolStrategy
from libs.wire.checkpoint import strategy_from_state, strategy_state

MINUTE_MS = 60_000
T0 = 1_681_105_620_000  # a kline open time from the Status API document
SLIPPAGE_PCT = 0.05
TAKER_FEE_PCT = 0.1
MAKER_FEE_PCT = 0.02

NONE, BUY, SELL = 0.0, 1.0, 2.0  # kline volumes the Marker strategy reads as its conditions


class Marker(Strategy):
    """Buy while the forming kline's volume is 1, sell while it is 2 (a window of one kline).

    A plug-in (its module is not `libs.core.strategies.*`), so the machine checks its answers;
    it offers a vectorized `conditions`, so `on_batch` runs its vector path."""

    name: ClassVar[str] = "Marker"
    indicators: ClassVar[tuple[str, ...]] = ("marker",)

    def __init__(self) -> None:
        self.window = 1

    def evaluate(self, klines: KlineWindow) -> Evaluation:
        marker = float(klines.volume[-1])
        return Evaluation(marker == BUY, marker == SELL, (marker,))

    def conditions(self, windows: WindowBatch) -> tuple[Bools, Bools]:
        marker = windows.column("volume")[:, -1]
        buy: Bools = marker == BUY
        sell: Bools = marker == SELL
        return buy, sell


def time_of(n: int) -> int:
    """Event time of update n: the close_time of the n-th one-minute kline (SPEC 3.1 rule 1)."""
    return T0 + n * MINUTE_MS + MINUTE_MS - 1


def row(n: int, price: float, marker: float = NONE) -> MarketUpdate:
    open_time = T0 + n * MINUTE_MS
    return MarketUpdate(time_of(n), price, Kline(open_time, price, price, price, price, marker))


@dataclass
class Scenario:
    """One symbol (index 1 of 3: order_id = n * 3 + 2) fed one update per minute."""

    exits: RiskExits = field(default_factory=RiskExits)
    strategy: Strategy = field(default_factory=Marker)
    order_type: OrderType = "maker"
    mode: Mode = "both"
    leverage: float = 1.0
    timeout_ms: int = 10 * MINUTE_MS
    updates: list[MarketUpdate] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    machine: SymbolStrategy = field(init=False)

    def __post_init__(self) -> None:
        self.machine = self.new_machine()

    def new_machine(self) -> SymbolStrategy:
        terms = SymbolTerms(
            index=1,
            symbol_count=3,
            min_size="0.001",
            price_decimals=2,
            leverage=self.leverage,
            isolated=True,
            maker_fee_pct=MAKER_FEE_PCT,
            taker_fee_pct=TAKER_FEE_PCT,
            buy_pct=20,
            slippage_pct=SLIPPAGE_PCT,
            order_timeout_ms=self.timeout_ms,
            strategy_name=self.strategy.name,
        )
        params = StrategyParams(self.strategy, self.mode, self.order_type, exits=self.exits)
        return SymbolStrategy(terms=terms, params=params, ledger=Ledger(allocation=1000.0))

    @property
    def n(self) -> int:
        """The number of the next update."""
        return len(self.updates)

    def at(self, price: float, marker: float = NONE) -> Step:
        update = row(self.n, price, marker)
        self.updates.append(update)
        step = self.machine.on_update(update)
        self.steps.append(step)
        return step

    def fills(self) -> list[Fill]:
        return [fill for step in self.steps for fill in step.fills]

    def klines(self) -> dict[int, AnnotatedKline]:
        return {step.kline.kline.time_ms: step.kline for step in self.steps}

    def check_paths(self) -> None:
        """`on_batch` in batches of several sizes, on its vector path and one by one, gives what
        `on_update` gave: the same fills, klines and final state."""
        expected_fills, expected_klines = self.fills(), self.klines()
        expected_state = machine_state(self.machine)
        count = len(self.updates)
        for sizes, small_batch in (
            ([count], 0),
            ([1], 0),
            ([2], 0),
            ([3, 1], 0),
            ([5, 2, 7], 0),
            ([count], 16),
        ):
            batched = self.new_machine()
            batched.small_batch = small_batch  # type: ignore[misc]  # 0: vectors even for one
            cuts = [0]
            while cuts[-1] < count:
                cuts.append(min(count, cuts[-1] + sizes[len(cuts) % len(sizes)]))
            fills: list[Fill] = []
            klines: dict[int, AnnotatedKline] = {}
            for start, stop in pairwise(cuts):
                batch_step = batched.on_batch(self.updates[start:stop])
                assert batch_step.failure is None
                fills += batch_step.fills
                klines.update((k.kline.time_ms, k) for k in batch_step.klines)
            assert fills == expected_fills, (sizes, small_batch)
            assert klines == expected_klines, (sizes, small_batch)
            assert machine_state(batched) == expected_state, (sizes, small_batch)


def open_long(s: Scenario, price: float = 100.0) -> Fill:
    """A buy cross places a maker limit at `price`; the next update at `price` reaches it, so
    the long's entry e is exactly `price` (SPEC 3.1 rule 9) and h starts at `price`."""
    assert s.at(price, BUY).fills == ()
    (opening,) = s.at(price).fills
    assert (opening.action, opening.price, opening.order_type) == (
        "Marker_buy_long",
        price,
        "maker",
    )
    return opening


def open_short(s: Scenario, price: float = 100.0) -> Fill:
    assert s.at(price, SELL).fills == ()
    (opening,) = s.at(price).fills
    assert (opening.action, opening.price, opening.order_type) == (
        "Marker_sell_short",
        price,
        "maker",
    )
    return opening


def spec_exit_fill(
    *,
    order_id: int,
    n: int,
    signal_n: int,
    signal_price: float,
    update_price: float,
    opening: Fill,
    action: str,
) -> Fill:
    """The TRADE of a closing taker fill at update n of an order placed at update signal_n,
    every field from the SPEC's formulas (3.1 rules 8 and 16, TRADE table of section 2)."""
    entry, size = opening.price, float(opening.size)
    position_side: PositionSide = opening.position_side
    if position_side == "long":  # a sell gets less (rule 8)
        price = update_price * (1 - SLIPPAGE_PCT / 100)
        gross = (price - entry) * size
    else:  # a buy pays more
        price = update_price * (1 + SLIPPAGE_PCT / 100)
        gross = (entry - price) * size
    fee = size * price * TAKER_FEE_PCT / 100
    usdt_profit = gross - fee
    slippage = (price - signal_price) / signal_price * 100
    if position_side == "long":
        slippage = -slippage  # sign flipped for sells: positive = worse
    return Fill(
        order_id=order_id,
        time_ms=time_of(n),
        execution_time_ms=time_of(n) - time_of(signal_n),
        slippage_pct=slippage,
        side="sell" if position_side == "long" else "buy",
        size=opening.size,
        fee=fee,
        price=price,
        order_type="taker",
        action=action,
        profit=usdt_profit / (entry * size),
        usdt_profit=usdt_profit,
        position_side=position_side,
        round_trip="win" if gross - opening.fee - fee > 0 else "lost",
    )


def assert_exit_order(s: Scenario, exit: str, side: str, n: int, price: float) -> None:
    """SPEC 3.3 rule 3: a closing-only taker order whose signal is this update's."""
    order = s.machine.order
    assert order is not None
    assert order.exit == exit
    assert (order.side, order.closes, order.opens, order.order_type) == (side, True, False, "taker")
    assert (order.signal_time_ms, order.signal_price) == (time_of(n), price)
    assert s.machine.signal == ("selling" if side == "sell" else "buying")


def assert_flat(s: Scenario, signal: str) -> None:
    """The exit filled: no position, no order, nothing reopened."""
    assert s.machine.ledger.position is None
    assert s.machine.order is None
    assert s.machine.signal == signal


# --- the triggers themselves -----------------------------------------------------------------


def position(side: PositionSide, entry: float = 100.0) -> Position:
    return Position(side, entry, "2.000", 200.0, 0.04)


TRIGGER_CASES = [
    # side, exits, price, extreme (h or l), expected
    # long e=100, h=100: stop 100*(1-5/100)=95, trailing 100*(1-3/100)=97; 94 is below both
    ("long", RiskExits(stop_loss_pct=5, trailing_stop_pct=3), 94.0, 100.0, "stopLoss"),
    ("long", RiskExits(stop_loss_pct=5, trailing_stop_pct=3), 96.0, 100.0, "trailingStop"),
    # long e=100, h=120: trailing 120*(1-5/100)=114, take profit 100*(1+10/100)=110.00000000000001
    ("long", RiskExits(take_profit_pct=10, trailing_stop_pct=5), 112.0, 120.0, "trailingStop"),
    ("long", RiskExits(take_profit_pct=10, trailing_stop_pct=5), 115.0, 120.0, "takeProfit"),
    ("long", RiskExits(take_profit_pct=10), 110.0, 120.0, None),  # 110 < 110.00000000000001
    (
        "long",
        RiskExits(stop_loss_pct=5, take_profit_pct=10, trailing_stop_pct=3),
        94.0,
        100.0,
        "stopLoss",
    ),
    ("long", RiskExits(stop_loss_pct=5, take_profit_pct=10, trailing_stop_pct=3), 98, 100, None),
    # short e=100, l=100: stop 100*(1+5/100)=105, trailing 100*(1+3/100)=103
    ("short", RiskExits(stop_loss_pct=5, trailing_stop_pct=3), 106.0, 100.0, "stopLoss"),
    ("short", RiskExits(stop_loss_pct=5, trailing_stop_pct=3), 104.0, 100.0, "trailingStop"),
    # short e=100, l=80: trailing 80*(1+5/100)=84, take profit 100*(1-10/100)=90
    ("short", RiskExits(take_profit_pct=10, trailing_stop_pct=5), 88.0, 80.0, "trailingStop"),
    ("short", RiskExits(take_profit_pct=10, trailing_stop_pct=5), 83.0, 80.0, "takeProfit"),
    ("short", RiskExits(take_profit_pct=10), 90.0, 80.0, "takeProfit"),  # p <= 90.0
    (
        "short",
        RiskExits(stop_loss_pct=5, take_profit_pct=10, trailing_stop_pct=3),
        106.0,
        100.0,
        "stopLoss",
    ),
    ("short", RiskExits(stop_loss_pct=5, take_profit_pct=10, trailing_stop_pct=3), 102, 100, None),
    ("long", RiskExits(), 1.0, 1000.0, None),
    ("short", RiskExits(), 1000.0, 1.0, None),
]


@pytest.mark.parametrize(("side", "exits", "price", "extreme", "expected"), TRIGGER_CASES)
def test_triggers_are_checked_stop_loss_then_trailing_stop_then_take_profit(
    side: PositionSide, exits: RiskExits, price: float, extreme: float, expected: str | None
) -> None:
    held = position(side)
    assert exits.triggered(held, price, extreme) == expected
    # the array form (the batch path's search) agrees with the scalar form
    mask = exits.mask(held, np.array([price]), np.array([extreme]))
    assert mask.tolist() == [expected is not None]


def test_trigger_thresholds_are_the_spec_expressions_in_doubles() -> None:
    long, short = position("long"), position("short")
    exits = RiskExits(stop_loss_pct=5, take_profit_pct=10, trailing_stop_pct=5)
    stop, take = 100.0 * (1 - 5 / 100), 100.0 * (1 + 10 / 100)
    assert (stop, take) == (95.0, 110.00000000000001)  # 1 + 0.1 rounds up in doubles
    assert exits.triggered(long, stop, 100.0) == "stopLoss"  # p <= e * (1 - 5/100)
    above = math.nextafter(stop, math.inf)  # one ulp above the stop
    assert exits.triggered(long, above, 100.0) is None  # trailing 100 * (1 - 5/100) = 95 too
    assert exits.triggered(long, above, 101.0) == "trailingStop"  # 101 * 0.95 = 95.95
    assert exits.triggered(long, take, take) == "takeProfit"  # p >= e * (1 + 10/100)
    assert exits.triggered(long, 110.0, 110.0) is None
    short_stop, short_take = 100.0 * (1 + 5 / 100), 100.0 * (1 - 10 / 100)
    assert (short_stop, short_take) == (105.0, 90.0)
    assert exits.triggered(short, short_stop, 101.0) == "stopLoss"
    assert exits.triggered(short, math.nextafter(short_stop, 0.0), 101.0) is None
    assert exits.triggered(short, short_take, short_take) == "takeProfit"
    assert exits.triggered(short, math.nextafter(short_take, math.inf), 90.0) is None


def test_the_array_form_agrees_with_the_scalar_form_on_random_paths() -> None:
    rng = random.Random(4)
    for _ in range(200):
        side: PositionSide = rng.choice(("long", "short"))
        held = position(side, rng.uniform(50, 150))
        exits = RiskExits(
            stop_loss_pct=rng.choice((None, rng.uniform(0.1, 20))),
            take_profit_pct=rng.choice((None, rng.uniform(0.1, 20))),
            trailing_stop_pct=rng.choice((None, rng.uniform(0.1, 20))),
        )
        prices = np.array([held.entry_price * (1 + rng.gauss(0, 0.08)) for _ in range(30)])
        seed = rng.choice((None, float(prices[0]) * 1.01, float(prices[0]) * 0.99))
        running = running_extreme(held, seed, prices)
        expected_running: list[float] = []
        extreme = seed
        for price in prices.tolist():
            if extreme is None:
                extreme = price
            else:
                extreme = max(extreme, price) if side == "long" else min(extreme, price)
            expected_running.append(extreme)
        assert running.tolist() == expected_running
        mask = exits.mask(held, prices, running)
        expected = [
            exits.triggered(held, price, extreme) is not None
            for price, extreme in zip(prices.tolist(), expected_running, strict=True)
        ]
        assert mask.tolist() == expected


# --- stop loss ---------------------------------------------------------------------------------


def test_a_long_s_stop_loss_places_a_taker_sell_filled_at_the_next_update() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5))
    opening = open_long(s)  # updates 0, 1: entry e = 100.0, size floor(200 / 100 / 0.001) steps
    assert opening.size == "2.000" and opening.order_id == 2  # fill 0 of symbol 1 of 3
    trigger = 100.0 * (1 - 5 / 100)  # 95.0
    assert s.at(math.nextafter(trigger, math.inf)).fills == ()  # 2: one ulp above: nothing
    assert s.machine.order is None and s.machine.signal == "bought"
    step = s.at(trigger)  # 3: p <= e * (1 - 5/100): the stop loss
    assert step.fills == ()  # placed now, filled at the next update
    assert_exit_order(s, "stopLoss", "sell", 3, trigger)
    assert not step.kline.annotation.sell_ordered  # an exit is not a cross's order
    assert step.kline.annotation.sell_cross_count == 0

    (exit_fill,) = s.at(94.0).fills  # 4: sells at 94 * (1 - 0.05/100) = 93.953
    assert exit_fill == spec_exit_fill(
        order_id=5,  # fill 1: 1 * 3 + 1 + 1
        n=4,
        signal_n=3,
        signal_price=trigger,
        update_price=94.0,
        opening=opening,
        action="stopLoss_sell_long",
    )
    assert exit_fill.price == 94.0 * (1 - 0.05 / 100)
    assert exit_fill.execution_time_ms == MINUTE_MS
    assert exit_fill.slippage_pct == -((exit_fill.price - 95.0) / 95.0 * 100)  # 1.1021...% worse
    assert exit_fill.round_trip == "lost"
    assert_flat(s, "sold")
    ledger = s.machine.ledger
    assert (ledger.win, ledger.lost, ledger.fill_count) == (0, 1, 2)
    assert ledger.realized_pnl == 0.0 + opening.usdt_profit + exit_fill.usdt_profit
    assert s.at(90.0).fills == ()  # nothing reopens
    s.check_paths()


def test_a_short_s_stop_loss_places_a_taker_buy_filled_at_the_next_update() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5))
    opening = open_short(s)  # entry e = 100.0
    trigger = 100.0 * (1 + 5 / 100)  # 105.0
    assert s.at(math.nextafter(trigger, 0.0)).fills == ()  # 2: one ulp below: nothing
    assert s.machine.order is None
    assert s.at(trigger).fills == ()  # 3: p >= e * (1 + 5/100)
    assert_exit_order(s, "stopLoss", "buy", 3, trigger)
    (exit_fill,) = s.at(106.0).fills  # 4: buys at 106 * (1 + 0.05/100) = 106.053
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=4,
        signal_n=3,
        signal_price=trigger,
        update_price=106.0,
        opening=opening,
        action="stopLoss_buy_short",
    )
    assert exit_fill.slippage_pct == (106.0 * (1 + 0.05 / 100) - 105.0) / 105.0 * 100
    assert exit_fill.round_trip == "lost"
    assert_flat(s, "bought")
    assert (s.machine.ledger.win, s.machine.ledger.lost) == (0, 1)
    s.check_paths()


# --- take profit -------------------------------------------------------------------------------


def test_a_long_s_take_profit_is_the_spec_expression_to_the_last_bit() -> None:
    s = Scenario(RiskExits(take_profit_pct=10))
    opening = open_long(s)
    trigger = 100.0 * (1 + 10 / 100)  # 110.00000000000001, not 110
    assert trigger > 110.0
    assert s.at(110.0).fills == ()  # 2: 110 < e * (1 + 10/100): nothing
    assert s.machine.order is None
    assert s.at(trigger).fills == ()  # 3
    assert_exit_order(s, "takeProfit", "sell", 3, trigger)
    (exit_fill,) = s.at(112.0).fills  # 4: sells at 112 * (1 - 0.05/100) = 111.944
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=4,
        signal_n=3,
        signal_price=trigger,
        update_price=112.0,
        opening=opening,
        action="takeProfit_sell_long",
    )
    # sells for less than the signal price would have brought: the slippage is negative
    assert exit_fill.slippage_pct == -((112.0 * (1 - 0.05 / 100) - trigger) / trigger * 100)
    assert exit_fill.slippage_pct < 0
    assert exit_fill.round_trip == "win"  # (111.944 - 100) * 2 - fees > 0
    assert_flat(s, "sold")
    assert (s.machine.ledger.win, s.machine.ledger.lost) == (1, 0)
    s.check_paths()


def test_a_short_s_take_profit_places_a_taker_buy() -> None:
    s = Scenario(RiskExits(take_profit_pct=10))
    opening = open_short(s)
    trigger = 100.0 * (1 - 10 / 100)  # 90.0
    assert s.at(math.nextafter(trigger, math.inf)).fills == ()  # 2
    assert s.at(trigger).fills == ()  # 3: p <= e * (1 - 10/100)
    assert_exit_order(s, "takeProfit", "buy", 3, trigger)
    (exit_fill,) = s.at(89.0).fills  # 4: buys at 89 * (1 + 0.05/100) = 89.0445
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=4,
        signal_n=3,
        signal_price=trigger,
        update_price=89.0,
        opening=opening,
        action="takeProfit_buy_short",
    )
    assert exit_fill.round_trip == "win"
    assert_flat(s, "bought")
    assert (s.machine.ledger.win, s.machine.ledger.lost) == (1, 0)
    s.check_paths()


# --- trailing stop -----------------------------------------------------------------------------


def test_a_long_s_trailing_stop_trails_update_prices_not_its_fill_price() -> None:
    s = Scenario(RiskExits(trailing_stop_pct=5), order_type="taker")
    assert s.at(120.0, BUY).fills == ()  # 0: the signal; 120 precedes the fill: not in h
    (opening,) = s.at(100.0).fills  # 1: fills at 100 * (1 + 0.05/100) = 100.05; h = 100
    assert opening.price == 100.0 * (1 + 0.05 / 100) == 100.05
    # h = 100 (update price): trigger 100 * (1 - 5/100) = 95.0, and 95.02 > 95.0: nothing. With
    # h = the fill price, 100.05 * 0.95 = 95.0475 would trigger; with the signal update's 120,
    # 114 would.
    assert 100.05 * (1 - 5 / 100) > 95.02 > 100.0 * (1 - 5 / 100)
    assert s.at(95.02).fills == ()  # 2
    assert s.machine.order is None and s.machine.extreme == 100.0
    assert s.at(110.0).fills == ()  # 3: h = 110, trigger 110 * (1 - 5/100) = 104.5
    trigger = 110.0 * (1 - 5 / 100)
    assert s.at(math.nextafter(trigger, math.inf)).fills == ()  # 4
    assert s.machine.order is None and s.machine.extreme == 110.0
    assert s.at(trigger).fills == ()  # 5: p <= h * (1 - 5/100)
    assert_exit_order(s, "trailingStop", "sell", 5, trigger)
    (exit_fill,) = s.at(104.0).fills  # 6
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=6,
        signal_n=5,
        signal_price=trigger,
        update_price=104.0,
        opening=opening,
        action="trailingStop_sell_long",
    )
    assert exit_fill.round_trip == "win"
    assert_flat(s, "sold")
    assert s.machine.extreme is None
    s.check_paths()


def test_a_short_s_trailing_stop_trails_update_prices_not_its_fill_price() -> None:
    s = Scenario(RiskExits(trailing_stop_pct=5), order_type="taker")
    assert s.at(80.0, SELL).fills == ()  # 0: the signal; 80 is not in l
    (opening,) = s.at(100.0).fills  # 1: fills at 100 * (1 - 0.05/100) = 99.95; l = 100
    assert opening.price == 100.0 * (1 - 0.05 / 100) == 99.95
    # l = 100: trigger 100 * (1 + 5/100) = 105.0 > 104.98. With l = the fill price, 99.95 * 1.05
    # = 104.9475 would trigger; with the signal update's 80, 84 would.
    assert 99.95 * (1 + 5 / 100) < 104.98 < 100.0 * (1 + 5 / 100)
    assert s.at(104.98).fills == ()  # 2
    assert s.machine.order is None and s.machine.extreme == 100.0
    assert s.at(90.0).fills == ()  # 3: l = 90, trigger 90 * (1 + 5/100) = 94.5
    trigger = 90.0 * (1 + 5 / 100)
    assert s.at(math.nextafter(trigger, 0.0)).fills == ()  # 4
    assert s.machine.order is None and s.machine.extreme == 90.0
    assert s.at(trigger).fills == ()  # 5: p >= l * (1 + 5/100)
    assert_exit_order(s, "trailingStop", "buy", 5, trigger)
    (exit_fill,) = s.at(95.0).fills  # 6: buys at 95 * (1 + 0.05/100) = 95.0475 < 99.95: a win
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=6,
        signal_n=5,
        signal_price=trigger,
        update_price=95.0,
        opening=opening,
        action="trailingStop_buy_short",
    )
    assert exit_fill.round_trip == "win"
    assert_flat(s, "bought")
    s.check_paths()


def test_a_maker_fill_through_a_gap_starts_h_at_the_update_price_below_the_limit() -> None:
    s = Scenario(RiskExits(trailing_stop_pct=5))
    assert s.at(100.0, BUY).fills == ()  # 0: limit buy at 100
    (opening,) = s.at(90.0).fills  # 1: 90 <= 100: fills at the limit 100.0, but h = 90
    assert opening.price == 100.0 and s.machine.extreme == 90.0
    # h = 90: trigger 90 * (1 - 5/100) = 85.5; h = 100 (the fill price) would give 95.0, which
    # 90 (the fill update itself) and 86 would both reach
    assert s.machine.order is None
    assert s.at(86.0).fills == ()  # 2
    assert s.machine.order is None
    trigger = 90.0 * (1 - 5 / 100)
    assert s.at(trigger).fills == ()  # 3
    assert_exit_order(s, "trailingStop", "sell", 3, trigger)
    (exit_fill,) = s.at(85.0).fills
    assert exit_fill.action == "trailingStop_sell_long" and exit_fill.round_trip == "lost"
    s.check_paths()


def test_the_running_extreme_restarts_at_the_fill_of_a_flip() -> None:
    s = Scenario(RiskExits(trailing_stop_pct=3), order_type="taker")
    s.at(100.0, BUY)  # 0
    s.at(100.0)  # 1: long at 100.05, h = 100
    s.at(120.0)  # 2: h = 120; trigger 120 * (1 - 3/100) = 116.4
    assert s.machine.order is None and s.machine.extreme == 120.0
    assert s.at(119.0, SELL).fills == ()  # 3: 119 > 116.4, then the sell cross: a taker flip
    closing, reopening = s.at(125.0).fills  # 4: closes the long, opens a short, at 124.9375
    assert (closing.action, reopening.action) == ("Marker_sell_long", "Marker_sell_short")
    # l restarts at 125 (this update): trigger 125 * (1 + 3/100) = 128.75. Carried over from the
    # long, min(120, 125) = 120 would give 123.6, which 125 itself reaches.
    assert s.machine.extreme == 125.0 and s.machine.order is None
    trigger = 125.0 * (1 + 3 / 100)
    assert s.at(math.nextafter(trigger, 0.0)).fills == ()  # 5
    assert s.machine.order is None
    assert s.at(trigger).fills == ()  # 6
    assert_exit_order(s, "trailingStop", "buy", 6, trigger)
    (exit_fill,) = s.at(129.0).fills
    assert exit_fill.action == "trailingStop_buy_short" and exit_fill.order_id == 11  # fill 3
    s.check_paths()


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_trailing_stop_remembers_its_extreme_over_a_long_stretch(side: str) -> None:
    """The peak (trough) lies a hundred updates before the trigger, with lower (higher) prices
    between: the batch path, which searches for the exit in chunks, must carry h (l) along."""
    long = side == "long"
    s = Scenario(RiskExits(trailing_stop_pct=5))
    (open_long if long else open_short)(s)  # 0, 1: e = h = l = 100
    path = [100.0 + (n if long else -n / 2) for n in range(1, 51)]  # 2..51: to 150 (75)
    path += [147.0 if long else 76.0] * 28  # 52..79
    path += [146.0 if long else 77.0] * 40  # 80..119: trigger 146 * 0.95 = 138.7 (80.85)
    for price in path:
        assert s.at(price).fills == ()
    assert s.machine.order is None
    extreme = 150.0 if long else 75.0
    assert s.machine.extreme == extreme
    # h = 150: trigger 150 * (1 - 5/100) = 142.5; l = 75: trigger 75 * (1 + 5/100) = 78.75
    trigger = extreme * (1 - 5 / 100) if long else extreme * (1 + 5 / 100)
    assert s.at(trigger).fills == ()  # 120
    assert_exit_order(s, "trailingStop", "sell" if long else "buy", 120, trigger)
    (exit_fill,) = s.at(trigger).fills
    assert exit_fill.action == ("trailingStop_sell_long" if long else "trailingStop_buy_short")
    s.check_paths()


# --- the order of checks, in the machine -------------------------------------------------------


def test_a_long_below_its_stop_and_its_trailing_stop_exits_as_a_stop_loss() -> None:
    for price, expected in ((94.0, "stopLoss"), (96.0, "trailingStop")):
        s = Scenario(RiskExits(stop_loss_pct=5, trailing_stop_pct=3, take_profit_pct=10))
        open_long(s)  # e = h = 100: stop 95, trailing 97
        s.at(price)  # 94 reaches both (stop loss first), 96 only the trailing stop
        assert_exit_order(s, expected, "sell", 2, price)
        (exit_fill,) = s.at(price).fills
        assert exit_fill.action == f"{expected}_sell_long"
        s.check_paths()


def test_a_short_above_its_stop_and_its_trailing_stop_exits_as_a_stop_loss() -> None:
    for price, expected in ((106.0, "stopLoss"), (104.0, "trailingStop")):
        s = Scenario(RiskExits(stop_loss_pct=5, trailing_stop_pct=3, take_profit_pct=10))
        open_short(s)  # e = l = 100: stop 105, trailing 103
        s.at(price)
        assert_exit_order(s, expected, "buy", 2, price)
        (exit_fill,) = s.at(price).fills
        assert exit_fill.action == f"{expected}_buy_short"
        s.check_paths()


# --- liquidation first -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opener", "price", "action", "signal"),
    [
        (open_long, 94.0, "liquidation_long", "sold"),
        (open_short, 106.0, "liquidation_short", "bought"),
    ],
)
def test_a_liquidation_at_the_update_of_a_stop_wins_and_places_no_exit(
    opener: Callable[[Scenario], Fill], price: float, action: str, signal: str
) -> None:
    # leverage 20: size floor(200 * 20 / 100 / 0.001) * 0.001 = 40.000, margin 200; the loss
    # reaches 200 at 95 (long) / 105 (short); the stop (3%) is at 97 / 103
    s = Scenario(RiskExits(stop_loss_pct=3, trailing_stop_pct=1, take_profit_pct=1), leverage=20)
    opening = opener(s)
    assert opening.size == "40.000"
    (liquidation,) = s.at(price).fills  # 2
    size = 40.0
    gross = (price - 100.0) * size if action == "liquidation_long" else (100.0 - price) * size
    fee = size * price * TAKER_FEE_PCT / 100
    assert liquidation.action == action
    assert (liquidation.price, liquidation.order_type, liquidation.round_trip) == (
        price,
        "taker",
        "lost",
    )
    assert (liquidation.execution_time_ms, liquidation.slippage_pct) == (0, 0.0)
    assert liquidation.usdt_profit == gross - fee
    assert liquidation.order_id == 5
    assert_flat(s, signal)  # no exit order placed
    assert s.at(price).fills == ()  # 3: nothing to fill
    assert_flat(s, signal)
    s.check_paths()


# --- crosses at the exit's update --------------------------------------------------------------


def test_a_sell_cross_at_the_update_that_places_a_long_s_exit_is_counted_and_places_nothing() -> (
    None
):
    s = Scenario(RiskExits(stop_loss_pct=5))
    opening = open_long(s)
    step = s.at(94.0, SELL)  # 2: the stop loss first (rule 4 step three), then the sell cross
    annotation = step.kline.annotation
    assert (annotation.sell_cross_count, annotation.buy_cross_count) == (1, 0)  # counted
    assert not annotation.sell_ordered and not annotation.buy_ordered  # but it placed nothing
    assert_exit_order(s, "stopLoss", "sell", 2, 94.0)  # the exit is the open order: no flip
    step = s.at(93.0)  # 3: the exit fills, closing only: no short opens
    assert step.fills == (
        spec_exit_fill(
            order_id=5,
            n=3,
            signal_n=2,
            signal_price=94.0,
            update_price=93.0,
            opening=opening,
            action="stopLoss_sell_long",
        ),
    )
    assert_flat(s, "sold")
    assert s.at(93.0, SELL).kline.annotation.sell_ordered  # 4: a later cross opens a short
    (reopening,) = s.at(93.0).fills
    assert reopening.action == "Marker_sell_short" and reopening.order_id == 8
    s.check_paths()


def test_a_buy_cross_at_the_update_that_places_a_short_s_exit_is_counted_and_places_nothing() -> (
    None
):
    s = Scenario(RiskExits(stop_loss_pct=5))
    open_short(s)
    step = s.at(106.0, BUY)  # 2
    annotation = step.kline.annotation
    assert (annotation.buy_cross_count, annotation.sell_cross_count) == (1, 0)
    assert not annotation.buy_ordered and not annotation.sell_ordered
    assert_exit_order(s, "stopLoss", "buy", 2, 106.0)
    (exit_fill,) = s.at(107.0).fills  # 3: closing only: no long opens
    assert exit_fill.action == "stopLoss_buy_short"
    assert_flat(s, "bought")
    s.check_paths()


def test_bollinger_a_short_s_take_profit_preempts_the_buy_cross_of_the_same_update() -> None:
    # SPEC's own strategy. Closes 100, 100, 100 (flat: no cross), 110 (window [100, 100, 110]:
    # upper 108.05, a sell cross: taker sell), 108 (fills at 108 * (1 - 0.05/100) = 107.946,
    # window [100, 110, 108]: bands 101.68..110.32, no cross).
    exits = RiskExits(take_profit_pct=5)
    s = Scenario(exits, strategy=BollingerBands(3, 1, 1), order_type="taker", leverage=10)
    for close in (100.0, 100.0, 100.0, 110.0):
        assert s.at(close).fills == ()
    assert s.machine.signal == "selling"
    (opening,) = s.at(108.0).fills
    assert opening.price == 108.0 * (1 - 0.05 / 100)  # 107.94600000000001 in doubles
    assert opening.action == "BollingerBands_sell_short"
    # take profit: p <= 107.946.. * (1 - 5/100) = 102.5487. 102 reaches it; and its window
    # [110, 108, 102] has lower band 103.27 > 102: a buy cross, which would close the short and
    # open a long. The exit is placed first and is the open order: the cross places nothing.
    assert 102.0 <= opening.price * (1 - 5 / 100)
    step = s.at(102.0)  # 5
    assert step.fills == ()
    assert step.kline.annotation.buy_cross_count == 1
    assert not step.kline.annotation.buy_ordered
    assert_exit_order(s, "takeProfit", "buy", 5, 102.0)
    step = s.at(103.0)  # 6: window [108, 102, 103]: bands 101.71..106.96, no cross
    assert step.fills == (
        spec_exit_fill(
            order_id=5,
            n=6,
            signal_n=5,
            signal_price=102.0,
            update_price=103.0,
            opening=opening,
            action="takeProfit_buy_short",
        ),
    )
    assert step.fills[0].round_trip == "win"
    assert_flat(s, "bought")
    s.check_paths()

    # the same closes without risk exits: the buy cross at 102 flips the short into a long
    plain = Scenario(strategy=BollingerBands(3, 1, 1), order_type="taker", leverage=10)
    for close in (100.0, 100.0, 100.0, 110.0, 108.0, 102.0):
        plain.at(close)
    assert plain.steps[-1].kline.annotation.buy_ordered
    closing, reopening = plain.at(103.0).fills
    assert (closing.action, reopening.action) == (
        "BollingerBands_buy_short",
        "BollingerBands_buy_long",
    )
    plain.check_paths()


def test_bollinger_a_long_s_stop_loss() -> None:
    # closes 100, 100, 100, 90 (a buy cross), 92 (fills at 92 * (1 + 0.05/100) = 92.046,
    # size floor(200 * 10 / 92.046 / 0.001) * 0.001 = 21.728)
    s = Scenario(
        RiskExits(stop_loss_pct=5),
        strategy=BollingerBands(3, 1, 1),
        order_type="taker",
        leverage=10,
    )
    for close in (100.0, 100.0, 100.0, 90.0):
        s.at(close)
    (opening,) = s.at(92.0).fills
    assert (opening.price, opening.size) == (92.0 * (1 + 0.05 / 100), "21.728")
    trigger = opening.price * (1 - 5 / 100)  # 87.44369999999999
    # 5: one ulp above: no exit (its window [90, 92, 87.44..] has a buy cross: a long is open,
    # so it places nothing)
    assert s.at(math.nextafter(trigger, math.inf)).fills == ()
    assert s.machine.order is None
    step = s.at(trigger)  # 6: window [92, 87.44.., 87.44..]: no cross; the stop loss
    assert step.fills == ()
    assert_exit_order(s, "stopLoss", "sell", 6, trigger)
    step = s.at(trigger)  # 7: a flat window: no cross to open anything after the exit fills
    assert step.fills == (
        spec_exit_fill(
            order_id=5,
            n=7,
            signal_n=6,
            signal_price=trigger,
            update_price=trigger,
            opening=opening,
            action="stopLoss_sell_long",
        ),
    )
    assert_flat(s, "sold")
    assert (s.machine.ledger.win, s.machine.ledger.lost) == (0, 1)
    s.check_paths()


# --- an exit at the update that opened the position --------------------------------------------


def test_a_taker_long_whose_fill_update_already_breaches_its_stop_exits_from_that_update() -> None:
    s = Scenario(RiskExits(stop_loss_pct=0.01), order_type="taker")
    s.at(100.0, BUY)  # 0
    step = s.at(90.0)  # 1: fills at 90 * (1 + 0.05/100) = 90.045
    (opening,) = step.fills
    assert opening.price == 90.0 * (1 + 0.05 / 100)
    # stop: p <= 90.045 * (1 - 0.01/100) = 90.035995..., and p = 90 (the slippage paid is more
    # than the stop allows): step three of rule 4 places the exit at this very update
    assert 90.0 <= opening.price * (1 - 0.01 / 100)
    assert_exit_order(s, "stopLoss", "sell", 1, 90.0)
    (exit_fill,) = s.at(91.0).fills  # 2
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=2,
        signal_n=1,
        signal_price=90.0,
        update_price=91.0,
        opening=opening,
        action="stopLoss_sell_long",
    )
    assert_flat(s, "sold")
    s.check_paths()


def test_a_taker_short_whose_fill_update_already_breaches_its_stop_exits_from_that_update() -> None:
    s = Scenario(RiskExits(stop_loss_pct=0.01), order_type="taker")
    s.at(100.0, SELL)  # 0
    (opening,) = s.at(110.0).fills  # 1: 110 * (1 - 0.05/100) = 109.945
    assert 110.0 >= opening.price * (1 + 0.01 / 100)  # 109.95599...
    assert_exit_order(s, "stopLoss", "buy", 1, 110.0)
    (exit_fill,) = s.at(109.0).fills
    assert exit_fill == spec_exit_fill(
        order_id=5,
        n=2,
        signal_n=1,
        signal_price=110.0,
        update_price=109.0,
        opening=opening,
        action="stopLoss_buy_short",
    )
    assert_flat(s, "bought")
    s.check_paths()


def test_a_maker_long_filled_through_a_gap_below_its_stop_exits_from_that_update() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5))
    s.at(100.0, BUY)  # 0: limit 100
    (opening,) = s.at(90.0).fills  # 1: fills at 100.0; 90 <= 100 * (1 - 5/100) = 95
    assert opening.price == 100.0
    assert_exit_order(s, "stopLoss", "sell", 1, 90.0)
    (exit_fill,) = s.at(90.0).fills
    assert exit_fill.action == "stopLoss_sell_long"
    s.check_paths()


# --- no exit while an order is open ------------------------------------------------------------


def test_no_exit_while_a_maker_closing_order_is_open() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5), mode="long", timeout_ms=3 * MINUTE_MS)
    open_long(s)  # 0, 1
    assert s.at(101.0, SELL).kline.annotation.sell_ordered  # 2: a limit sell at 101 (closes only)
    pending = s.machine.order
    assert pending is not None and pending.exit is None and pending.order_type == "maker"
    for price in (90.0, 89.0):  # 3, 4: below the stop (95), below the limit: no fill, no exit
        assert s.at(price).fills == ()
        assert s.machine.order == pending
        assert s.machine.signal == "selling"
    (closing,) = s.at(88.0).fills  # 5: 3 minutes after the signal: the limit fills as a taker
    assert closing.action == "Marker_sell_long"  # the cross's order, not a stop loss
    assert closing.order_type == "taker" and closing.price == 88.0 * (1 - 0.05 / 100)
    assert_flat(s, "sold")
    s.check_paths()


def test_no_exit_while_a_maker_closing_order_of_a_short_is_open() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5), mode="short", timeout_ms=3 * MINUTE_MS)
    open_short(s)
    assert s.at(99.0, BUY).kline.annotation.buy_ordered  # 2: a limit buy at 99
    pending = s.machine.order
    for price in (110.0, 111.0):  # above the stop (105), above the limit
        assert s.at(price).fills == ()
        assert s.machine.order == pending
    (closing,) = s.at(100.0).fills  # 5: 100 > 99, but the timeout
    assert closing.action == "Marker_buy_short" and closing.order_type == "taker"
    s.check_paths()


# --- after the exit ------------------------------------------------------------------------------


def test_after_a_long_s_exit_nothing_reopens_until_a_later_cross() -> None:
    s = Scenario(RiskExits(stop_loss_pct=5))
    s.at(100.0, BUY)  # 0: the cross
    s.at(100.0, BUY)  # 1: the buy condition still holds (no cross); the limit fills
    s.at(94.0, BUY)  # 2: the stop loss
    (exit_fill,) = s.at(94.0, BUY).fills  # 3
    assert exit_fill.action == "stopLoss_sell_long"
    for price in (80.0, 94.0, 100.0):  # the buy condition holds on: no cross, nothing placed
        step = s.at(price, BUY)
        assert step.fills == () and step.kline.annotation.buy_cross_count == 0
        assert_flat(s, "sold")
    s.at(95.0)  # 7: the condition ends
    step = s.at(96.0, BUY)  # 8: a new cross: a new long
    assert step.kline.annotation.buy_cross_count == 1 and step.kline.annotation.buy_ordered
    (reopening,) = s.at(95.0).fills
    assert (reopening.action, reopening.price, reopening.order_id) == ("Marker_buy_long", 96.0, 8)
    s.check_paths()


def test_after_a_short_s_exit_nothing_reopens_until_a_later_cross() -> None:
    s = Scenario(RiskExits(take_profit_pct=10))
    s.at(100.0, SELL)
    s.at(100.0, SELL)
    s.at(90.0, SELL)  # take profit: 90 <= 100 * (1 - 10/100)
    (exit_fill,) = s.at(90.0, SELL).fills
    assert exit_fill.action == "takeProfit_buy_short"
    for price in (120.0, 90.0):
        assert s.at(price, SELL).fills == ()
        assert_flat(s, "bought")
    s.at(91.0)
    assert s.at(92.0, SELL).kline.annotation.sell_ordered
    (reopening,) = s.at(93.0).fills
    assert reopening.action == "Marker_sell_short"
    s.check_paths()


# --- exits off, and exits don't touch the crosses -------------------------------------------------


def test_risk_exits_off_never_trigger() -> None:
    assert not RiskExits().any
    for opener in (open_long, open_short):
        s = Scenario()  # RiskExits(): all None
        opener(s)
        # far past any stop, trail or target, short of a liquidation (a loss of 200 at 0 or 200)
        for price in (50.0, 190.0, 100.0, 60.0, 150.0):
            assert s.at(price).fills == ()
            assert s.machine.order is None
        assert s.machine.ledger.position is not None
        s.check_paths()


def random_marked(seed: int, count: int, *, trades: bool) -> list[MarketUpdate]:
    """A random walk with flat stretches and jumps, crosses at random (Marker volumes);
    `trades`: several updates per kline."""
    rng = random.Random(seed)
    price, time_ms, updates = 100.0, T0, []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.15:
            pass  # flat
        elif roll < 0.2:
            price = math.nextafter(price, rng.choice((0.0, math.inf)))
        elif roll < 0.23:
            price *= 1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.1)
        else:
            price *= 1 + rng.gauss(0, 0.01)
        marker = rng.choices((NONE, BUY, SELL), (6, 1, 1))[0]
        if trades:
            time_ms += rng.choice((0, 1_000, 15_000, 30_000))
            open_time = time_ms - time_ms % MINUTE_MS
        else:
            time_ms += MINUTE_MS
            open_time = time_ms - MINUTE_MS + 1
        kline = Kline(open_time, price, price, price, price, marker)
        updates.append(MarketUpdate(time_ms, price, kline))
    return updates


EXIT_CASES = [
    RiskExits(stop_loss_pct=2),
    RiskExits(take_profit_pct=2),
    RiskExits(trailing_stop_pct=1.5),
    RiskExits(stop_loss_pct=3, take_profit_pct=3, trailing_stop_pct=1),
    RiskExits(stop_loss_pct=0.01, take_profit_pct=0.01, trailing_stop_pct=0.01),
]


@pytest.mark.parametrize("trades", [False, True], ids=["klines", "trades"])
@pytest.mark.parametrize("order_type", ["maker", "taker"])
def test_exits_do_not_change_cross_counts(trades: bool, order_type: OrderType) -> None:
    updates = random_marked(seed=3, count=600, trades=trades)

    def counts(exits: RiskExits) -> tuple[list[tuple[int, int]], list[Fill]]:
        s = Scenario(exits, order_type=order_type)
        fills: list[Fill] = []
        klines: dict[int, AnnotatedKline] = {}
        for update in updates:
            step = s.machine.on_update(update)
            fills += step.fills
            klines[step.kline.kline.time_ms] = step.kline
        return [
            (k.annotation.buy_cross_count, k.annotation.sell_cross_count) for k in klines.values()
        ], fills

    plain, plain_fills = counts(RiskExits())
    assert sum(b + s for b, s in plain) > 50 and plain_fills
    for exits in EXIT_CASES:
        with_exits, fills = counts(exits)
        assert with_exits == plain, exits
        actions = {fill.action.split("_")[0] for fill in fills}
        assert actions & {"stopLoss", "takeProfit", "trailingStop"}, exits


def test_exits_do_not_change_bollinger_cross_counts_or_values() -> None:
    updates = random_marked(seed=8, count=800, trades=False)

    def klines(exits: RiskExits) -> tuple[list[AnnotatedKline], list[Fill]]:
        s = Scenario(exits, strategy=BollingerBands(20, 2, 2), order_type="taker")
        fills: list[Fill] = []
        for update in updates:
            s.at(update.price)  # Scenario numbers them itself: one kline a minute
            fills += s.steps[-1].fills
        return [step.kline for step in s.steps], fills

    plain, _ = klines(RiskExits())
    for exits in EXIT_CASES:
        annotated, fills = klines(exits)
        assert [
            (a.annotation.buy_cross_count, a.annotation.sell_cross_count, a.annotation.values)
            for a in annotated
        ] == [
            (a.annotation.buy_cross_count, a.annotation.sell_cross_count, a.annotation.values)
            for a in plain
        ]
        assert any(fill.action.split("_")[0] != "BollingerBands" for fill in fills), exits


@pytest.mark.parametrize("seed", range(12))
def test_exits_trade_alike_in_batches_and_one_by_one(seed: int) -> None:
    """Property: random paths, random crosses, every exit on or off, maker or taker, modes,
    liquidations (leverage 30): `on_batch` in batches of any size is `on_update`."""
    rng = random.Random(seed)
    updates = random_marked(seed=seed, count=700, trades=seed % 2 == 1)
    total = 0
    for exits in (*EXIT_CASES, RiskExits()):
        trading = Trading(
            mode=rng.choice(("both", "long", "short")),
            order_type=rng.choice(("maker", "taker")),
            exits=exits,
            leverage=rng.choice((1.0, 10.0, 30.0)),
            isolated=rng.random() < 0.7,
            min_size="0.001",
            order_timeout_ms=rng.choice((0, MINUTE_MS, 5 * MINUTE_MS)),
        )
        sizes = [rng.randint(1, 80) for _ in range(3)] + [len(updates)]
        total += check_paths_match(Marker(), updates, batch_sizes=sizes, trading=trading)
    assert total > 0


@pytest.mark.parametrize("order_type", ["maker", "taker"])
def test_a_checkpoint_at_any_update_keeps_the_exit_order_and_the_running_extreme(
    order_type: OrderType,
) -> None:
    """A restart resumes exactly (SPEC 3.2 rule 9): cut anywhere, e.g. with an exit order open
    or with h far above the entry, the resumed symbol trades as if never stopped."""
    exits = RiskExits(stop_loss_pct=3, take_profit_pct=4, trailing_stop_pct=1.5)
    updates = random_marked(seed=21, count=160, trades=False)
    uninterrupted = Scenario(exits, order_type=order_type)
    expected: list[Fill] = []
    for update in updates:
        expected += uninterrupted.machine.on_update(update).fills
    exit_actions = {f.action for f in expected if not f.action.startswith("Marker")}
    assert {a.split("_")[0] for a in exit_actions} >= {"stopLoss", "takeProfit", "trailingStop"}
    final = strategy_state(uninterrupted.machine)
    cut_with_exit_open = cut_with_extreme_moved = False
    for cut in range(len(updates) + 1):
        first = Scenario(exits, order_type=order_type)
        fills: list[Fill] = []
        for update in updates[:cut]:
            fills += first.machine.on_update(update).fills
        order, held = first.machine.order, first.machine.ledger.position
        cut_with_exit_open |= order is not None and order.exit is not None
        cut_with_extreme_moved |= held is not None and first.machine.extreme not in (
            None,
            held.entry_price,
            first.machine.price,
        )
        state = orjson.loads(orjson.dumps(strategy_state(first.machine)))
        resumed = strategy_from_state(first.machine.terms, first.machine.params, state)
        fills += resumed.on_batch(updates[cut:]).fills if cut < len(updates) else ()
        assert fills == expected, cut
        assert strategy_state(resumed) == final, cut
    assert cut_with_exit_open and cut_with_extreme_moved
