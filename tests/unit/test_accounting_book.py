"""Accounting's book (`services.accounting.book`) on its own, no Redis: strategy events written by
hand go in, refreshes come out (SPEC 2.1 rules 5, 10, 11 and 14; section 2's SYMBOL and STATUS).

The bot has two symbols of 500 each. ETH-USDT trades a winning long (isolated, leverage 10), then
SOL-USDT a losing one (cross, leverage 2). Fees are 0.25 % and every price a binary fraction, so
each figure below is exact or one correctly rounded division of exact numbers, and is written
down as the literal a hand computation gives:

- ETH opens at 2000.0: margin = 500 * 20 / 100 = 100.0, size = floor(100.0 * 10 / 2000.0 / 0.001)
  * 0.001 = "0.500", fee = 0.5 * 2000.0 * 0.25 / 100 = 2.5 (usdtProfit -2.5, profit -2.5 / 1000 =
  -0.0025). It closes at 2100.0: gross (2100 - 2000) * 0.5 = 50.0, fee 2.625, usdtProfit 47.375,
  profit 0.047375; net of both fees 44.875 > 0, a win; realized -2.5 + 47.375 = 44.875.
- SOL opens at 25.0: margin 100.0, size floor(100.0 * 2 / 25.0 / 0.5) * 0.5 = "8.0", fee 0.5. It
  closes at 21.875: gross (21.875 - 25) * 8 = -25.0, fee 0.4375, usdtProfit -25.4375, profit
  -25.4375 / 200 = -0.1271875, a loss; realized -0.5 - 25.4375 = -25.9375.
- order_id = n * 2 + i + 1 (SPEC 3.1 rule 13): ETH (i = 0) fills 1 and 3, SOL (i = 1) 2 and 4.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from libs.config import BotConfig
from libs.core.pnl import Ledger, Position
from libs.core.sim_exchange import Signal
from libs.wire.events import StrategyEvent
from libs.wire.frames import JSONObject
from services.accounting.book import BotBook, Refresh

EPOCH = "0123456789abcdef"
OFFSET_MIN = -480  # STATUS timeZoneOffset of UTC+8
START_MS = 1681105679999  # the first update: ETH's first kline (m28018427) at its close_time

SYMBOL_FIGURES = (
    "price",
    "assetCaptial",
    "usdtProfit",
    "profit",
    "dynamicUsdtProfit",
    "dynamicProfit",
    "signal",
    "win",
    "lost",
    "winLostRate",
    "lastTradeTime",
)
STATUS_FIGURES = (
    "currentCapital",
    "tradeNum",
    "usdtProfit",
    "profit",
    "dynamicUsdtProfit",
    "dynamicProfit",
    "totalCapital",
    "win",
    "lost",
    "winLostRate",
    "startTime",
)

BOT = BotConfig.model_validate(
    {
        "id": "book",
        "exchange": "binance",
        "start_capital": 1000.0,
        "maker_fee": 0.25,
        "taker_fee": 0.25,
        "strategy": {"order_type": "maker"},
        "symbols": [
            {
                "product_id": "ETH-USDT",
                "min_size": "0.001",
                "price_decimals": 2,
                "leverage": 10,
                "isolated": True,
            },
            {
                "product_id": "SOL-USDT",
                "min_size": "0.5",
                "price_decimals": 3,
                "leverage": 2,
                "isolated": False,
            },
        ],
    }
)

ETH_OPEN = Ledger(
    500.0, -2.5, 1, 0, 0, 1681105739999, Position("long", 2000.0, "0.500", 100.0, 2.5)
)
ETH_CLOSED = Ledger(500.0, 44.875, 2, 1, 0, 1681105859999, None)
SOL_OPEN = Ledger(500.0, -0.5, 1, 0, 0, 1681105710000, Position("long", 25.0, "8.0", 100.0, 0.5))
SOL_CLOSED = Ledger(500.0, -25.9375, 2, 0, 1, 1681105750000, None)

ETH_BUY = {
    "order_id": 1,
    "time": 1681105739999,
    "execution_time": 60000,
    "slippage": 0.0,
    "type": "buy",
    "size": "0.500",
    "fee": 2.5,
    "price": "2000.00",
    "order_type": "maker",
    "action": "BollingerBands_buy_long",
    "profit": -0.0025,
    "usdtProfit": -2.5,
    "position_side": "long",
}
ETH_SELL = {
    "order_id": 3,
    "time": 1681105859999,
    "execution_time": 60000,
    "slippage": 0.0,
    "type": "sell",
    "size": "0.500",
    "fee": 2.625,
    "price": "2100.00",
    "order_type": "maker",
    "action": "BollingerBands_sell_long",
    "profit": 0.047375,
    "usdtProfit": 47.375,
    "position_side": "long",
}
SOL_BUY = {
    "order_id": 2,
    "time": 1681105710000,
    "execution_time": 10000,
    "slippage": 0.0,
    "type": "buy",
    "size": "8.0",
    "fee": 0.5,
    "price": "25.000",
    "order_type": "maker",
    "action": "BollingerBands_buy_long",
    "profit": -0.0025,
    "usdtProfit": -0.5,
    "position_side": "long",
}
SOL_SELL = {
    "order_id": 4,
    "time": 1681105750000,
    "execution_time": 5000,
    "slippage": 0.0,
    "type": "sell",
    "size": "8.0",
    "fee": 0.4375,
    "price": "21.875",
    "order_type": "maker",
    "action": "BollingerBands_sell_long",
    "profit": -0.1271875,
    "usdtProfit": -25.4375,
    "position_side": "long",
}


def kline(period_id: str, time_ms: int, close: float) -> JSONObject:
    """A KLINE as the strategy worker writes it (SPEC section 2). The book passes klines on as
    they come, so their `strategy` values are placeholders here."""
    return {
        "period_id": period_id,
        "time": time_ms,
        "size": "1m",
        "close_time": time_ms + 59_999,
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": 1.0,
        "strategy": {
            "BollingerBands_buyCrossCount": 0,
            "BollingerBands_sellCrossCount": 0,
            "BollingerBands_buy": False,
            "BollingerBands_sell": False,
            "middle": None,
            "upper": None,
            "lower": None,
            "pb": None,
            "pw": None,
        },
    }


ETH_K0 = kline("m28018427", 1681105620000, 2000.0)
ETH_K1 = kline("m28018428", 1681105680000, 1990.0)
ETH_K2 = kline("m28018429", 1681105740000, 2100.0)
ETH_K3 = kline("m28018430", 1681105800000, 2110.0)
ETH_K4 = kline("m28018431", 1681105860000, 2090.0)
# SOL's klines are built from trades: the forming one changes in place
SOL_K0_FORMING = kline("m28018428", 1681105680000, 25.0)
SOL_K0_LATER = kline("m28018428", 1681105680000, 24.5)
SOL_K1 = kline("m28018429", 1681105740000, 22.0)


def event(
    product_id: str,
    *,
    entry_id: str,
    time_ms: int,
    first_time_ms: int,
    price: float,
    signal: Signal | None,
    ledger: Ledger,
    klines: tuple[JSONObject, ...] = (),
    trades: tuple[JSONObject, ...] = (),
) -> StrategyEvent:
    return StrategyEvent(
        product_id=product_id,
        entry_id=entry_id,
        time_ms=time_ms,
        first_time_ms=first_time_ms,
        price=price,
        signal=signal,
        ledger=ledger,
        klines=klines,
        trades=trades,
    )


# `entry_id`: the last market entry each event applied (its time is when the update entered
# the pipeline); the events stream's own ids are 1-0, 2-0... in the order of STREAM below.
ETH_FIRST = event(
    "ETH-USDT",
    entry_id="1681105680001-0",
    time_ms=START_MS,
    first_time_ms=START_MS,
    price=2000.0,
    signal="buying",  # a buy cross placed a maker limit at 2000.0
    ledger=Ledger(500.0),
    klines=(ETH_K0,),
)
ETH_BOUGHT = event(  # 1990.0 <= the limit: filled at 2000.0
    "ETH-USDT",
    entry_id="1681105740001-0",
    time_ms=1681105739999,
    first_time_ms=START_MS,
    price=1990.0,
    signal="bought",
    ledger=ETH_OPEN,
    klines=(ETH_K1,),
    trades=(ETH_BUY,),
)
SOL_FIRST = event(  # SOL's first trade: a buy cross, a maker limit at 25.0
    "SOL-USDT",
    entry_id="1681105740002-0",
    time_ms=1681105700000,
    first_time_ms=1681105700000,
    price=25.0,
    signal="buying",
    ledger=Ledger(500.0),
    klines=(SOL_K0_FORMING,),
)
ETH_SELLING = event(  # K1 comes again as it was published: not a change
    "ETH-USDT",
    entry_id="1681105800001-0",
    time_ms=1681105799999,
    first_time_ms=START_MS,
    price=2100.0,
    signal="selling",
    ledger=ETH_OPEN,
    klines=(ETH_K1, ETH_K2),
)
ETH_SOLD = event(  # 2110.0 >= the limit: filled at 2100.0
    "ETH-USDT",
    entry_id="1681105860001-0",
    time_ms=1681105859999,
    first_time_ms=START_MS,
    price=2110.0,
    signal="sold",
    ledger=ETH_CLOSED,
    klines=(ETH_K3,),
    trades=(ETH_SELL,),
)
SOL_BOUGHT = event(  # 24.5 <= the limit: filled at 25.0, in the kline still forming
    "SOL-USDT",
    entry_id="1681105860002-0",
    time_ms=1681105710000,
    first_time_ms=1681105700000,
    price=24.5,
    signal="bought",
    ledger=SOL_OPEN,
    klines=(SOL_K0_LATER,),
    trades=(SOL_BUY,),
)
ETH_AFTER = event(
    "ETH-USDT",
    entry_id="1681105920001-0",
    time_ms=1681105919999,
    first_time_ms=START_MS,
    price=2090.0,
    signal="sold",
    ledger=ETH_CLOSED,
    klines=(ETH_K4,),
)
SOL_SOLD = event(  # a sell limit at 21.875 (placed at 1681105745000), filled by 22.0
    "SOL-USDT",
    entry_id="1681105920002-0",
    time_ms=1681105750000,
    first_time_ms=1681105700000,
    price=22.0,
    signal="sold",
    ledger=SOL_CLOSED,
    klines=(SOL_K1,),
    trades=(SOL_SELL,),
)


def fresh_book(seq: int = 1) -> BotBook:
    return BotBook.fresh(BOT, epoch=EPOCH, seq=seq)


STREAM = [ETH_FIRST, ETH_BOUGHT, SOL_FIRST, ETH_SELLING, ETH_SOLD, SOL_BOUGHT, ETH_AFTER, SOL_SOLD]
"""The bot's events stream, in order."""


def fold(book: BotBook, *events: StrategyEvent) -> None:
    """Apply `events` as read from the events stream (an event read again keeps its id)."""
    for made in events:
        book.apply(f"{STREAM.index(made) + 1}-0", made)


def publish(book: BotBook) -> tuple[Refresh, dict[str, Any]]:
    """The next refresh, committed; with its text parsed."""
    refresh = book.next_refresh(OFFSET_MIN)
    assert refresh is not None
    book.published(refresh)
    return refresh, orjson.loads(refresh.text)


def lists(frame: dict[str, Any]) -> list[tuple[list[Any], list[Any]]]:
    """(klines, trades) of each symbol of a refresh, in config order."""
    return [(symbol["klines"], symbol["trades"]) for symbol in frame["data"]["symbols"]]


def book_at_the_end() -> BotBook:
    book = fresh_book()
    for batch in (STREAM[:1], STREAM[1:2], STREAM[2:4], STREAM[4:7], STREAM[7:]):
        fold(book, *batch)
        publish(book)
    return book


# --- seq ------------------------------------------------------------------------------------------


def test_the_first_refresh_follows_the_seq_the_book_was_loaded_at() -> None:
    """State creation published seq 1 (SPEC 2.1 rule 5): the book's first refresh is seq 2, and
    one loaded at seq 7 goes on at 8. Every symbol is listed, with all its scalars."""
    book = fresh_book()
    fold(book, ETH_FIRST)
    refresh, frame = publish(book)

    assert (refresh.seq, book.seq) == (2, 2)
    assert (frame["action"], frame["seq"], frame["epoch"]) == ("refresh", 2, EPOCH)
    assert refresh.newest_entry_id == "1681105680001-0"
    assert lists(frame) == [([ETH_K0], []), ([], [])]
    eth, sol = frame["data"]["symbols"]
    assert eth == {
        "product_id": "ETH-USDT",
        "price": 2000.0,
        "normalized": "binance.ETH-USDT",
        "min_size": "0.001",
        "asset": "ETH",
        "currency": "USDT",
        "assetCaptial": 0.0,
        "leverage": 10,
        "isolated": True,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "signal": "buying",
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "trades": [],
        "lastTradeTime": 0,
        "klines": [ETH_K0],
    }
    # SPEC 2.1 rule 14: before any market data, price and dynamic figures 0, no klines
    assert (sol["price"], sol["assetCaptial"], sol["dynamicUsdtProfit"], sol["signal"]) == (
        0.0,
        0.0,
        0.0,
        None,
    )
    assert frame["data"]["status"] == {
        "tradeListLen": 2,
        "startCapital": 1000.0,
        "currentCapital": 1000.0,
        "tradeNum": 0,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "totalCapital": 1000.0,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "exchange": "binance",
        "startTime": START_MS,
        "timeZoneOffset": -480,
        "status": "work",
    }
    assert refresh.status == frame["data"]["status"]

    loaded = fresh_book(seq=7)
    fold(loaded, ETH_FIRST)
    assert publish(loaded)[0].seq == 8


# --- no change, no refresh (SPEC 2.1 rule 10) -----------------------------------------------------


def test_nothing_a_client_sees_changed_makes_no_refresh() -> None:
    book = fresh_book()
    fold(book, ETH_FIRST)
    publish(book)

    assert book.next_refresh(OFFSET_MIN) is None  # nothing applied since
    fold(book, ETH_FIRST)  # the same price, ledger and kline again
    assert book.unsaved_events == 1
    assert book.next_refresh(OFFSET_MIN) is None
    book.saved()  # the checkpoint goes alone
    assert (book.unsaved_events, book.seq, book.checkpoint) == (0, 2, "1-0")
    assert book.next_refresh(OFFSET_MIN) is None


def test_a_status_field_alone_is_a_change() -> None:
    book = fresh_book()
    fold(book, ETH_FIRST)
    publish(book)

    refresh = book.next_refresh(0)  # timeZoneOffset differs, nothing else
    assert refresh is not None and refresh.seq == 3
    assert lists(orjson.loads(refresh.text)) == [([], []), ([], [])]


# --- what a refresh lists (SPEC 2.1 rule 11) ------------------------------------------------------


def test_a_refresh_lists_only_the_klines_that_changed_and_the_new_trades() -> None:
    book = fresh_book()
    fold(book, ETH_FIRST)
    publish(book)

    fold(book, ETH_BOUGHT)
    refresh, frame = publish(book)
    assert refresh.seq == 3
    assert lists(frame) == [([ETH_K1], [ETH_BUY]), ([], [])], "K0 is not sent again"

    fold(book, SOL_FIRST, ETH_SELLING)
    refresh, frame = publish(book)
    assert refresh.seq == 4
    # ETH's K1 came again unchanged: only K2 is new
    assert lists(frame) == [([ETH_K2], []), ([SOL_K0_FORMING], [])]

    fold(book, ETH_SOLD, SOL_BOUGHT, ETH_AFTER)
    refresh, frame = publish(book)
    assert refresh.seq == 5
    # SOL's forming kline changed in place: sent again, as it is now, and it replaces the last
    # kline published (its commit says so); the buy of the last refresh is not sent again
    assert lists(frame) == [([ETH_K3, ETH_K4], [ETH_SELL]), ([SOL_K0_LATER], [SOL_BUY])]
    assert [commit.replaced_klines for commit in refresh.symbols] == [0, 1]
    assert [commit.klines for commit in refresh.symbols] == [
        [orjson.dumps(ETH_K3), orjson.dumps(ETH_K4)],
        [orjson.dumps(SOL_K0_LATER)],
    ]
    assert [commit.trades for commit in refresh.symbols] == [
        [orjson.dumps(ETH_SELL)],
        [orjson.dumps(SOL_BUY)],
    ]
    assert refresh.newest_entry_id == "1681105920001-0"

    fold(book, SOL_SOLD)
    refresh, frame = publish(book)
    assert refresh.seq == 6
    assert lists(frame) == [([], []), ([SOL_K1], [SOL_SELL])]
    assert [commit.replaced_klines for commit in refresh.symbols] == [0, 0]


def test_a_trade_already_published_is_not_listed_again() -> None:
    book = fresh_book()
    fold(book, ETH_FIRST, ETH_BOUGHT)
    publish(book)

    fold(book, ETH_BOUGHT)  # the same fill, as after a re-read of the events stream
    refresh = book.next_refresh(OFFSET_MIN)
    assert refresh is None


# --- STATUS and SYMBOL figures (SPEC section 2) ---------------------------------------------------


def test_status_while_a_position_is_open() -> None:
    """dynamicUsdtProfit = (1990.0 - 2000.0) * 0.5 = -5.0; currentCapital = 1000 + -2.5 - 100.0
    (the margin locked); totalCapital = 1000 + -2.5 + -5.0."""
    book = fresh_book()
    fold(book, ETH_FIRST, ETH_BOUGHT)
    _, frame = publish(book)

    eth = frame["data"]["symbols"][0]
    assert {name: eth[name] for name in SYMBOL_FIGURES} == {
        "price": 1990.0,
        "assetCaptial": 95.0,  # margin 100.0 + unrealized -5.0
        "usdtProfit": -2.5,
        "profit": -0.005,  # -2.5 / 500
        "dynamicUsdtProfit": -5.0,
        "dynamicProfit": -0.01,  # -5.0 / 500
        "signal": "bought",
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "lastTradeTime": 1681105739999,
    }
    status = frame["data"]["status"]
    assert {name: status[name] for name in STATUS_FIGURES} == {
        "currentCapital": 897.5,
        "tradeNum": 1,
        "usdtProfit": -2.5,
        "profit": -0.0025,
        "dynamicUsdtProfit": -5.0,
        "dynamicProfit": -0.005,
        "totalCapital": 992.5,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "startTime": START_MS,
    }


def test_status_sums_the_symbols() -> None:
    """After ETH's close and SOL's open: usdtProfit 44.875 + -0.5; SOL's unrealized
    (24.5 - 25.0) * 8 = -4.0; SOL's margin 100.0 locked. startTime stays the earliest first
    update among the symbols (SPEC 2.1 rule 14): ETH's, before SOL's first at 1681105700000."""
    book = fresh_book()
    fold(book, ETH_FIRST, ETH_BOUGHT, SOL_FIRST, ETH_SELLING, ETH_SOLD, SOL_BOUGHT, ETH_AFTER)
    _, frame = publish(book)

    status = frame["data"]["status"]
    assert {name: status[name] for name in STATUS_FIGURES} == {
        "currentCapital": 944.375,  # 1000 + 44.375 - 100.0
        "tradeNum": 3,
        "usdtProfit": 44.375,
        "profit": 0.044375,
        "dynamicUsdtProfit": -4.0,
        "dynamicProfit": -0.004,
        "totalCapital": 1040.375,  # 1000 + 44.375 + -4.0
        "win": 1,
        "lost": 0,
        "winLostRate": 1.0,
        "startTime": START_MS,
    }
    eth, sol = frame["data"]["symbols"]
    assert (eth["usdtProfit"], eth["profit"], eth["assetCaptial"], eth["win"]) == (
        44.875,
        0.08975,  # 44.875 / 500
        0.0,
        1,
    )
    assert (sol["assetCaptial"], sol["dynamicUsdtProfit"], sol["dynamicProfit"]) == (
        96.0,  # margin 100.0 + unrealized -4.0
        -4.0,
        -0.008,
    )


def test_status_after_a_win_and_a_loss() -> None:
    book = book_at_the_end()
    status = book.published_status
    assert status == {
        "tradeListLen": 2,
        "startCapital": 1000.0,
        "currentCapital": 1018.9375,  # 1000 + 44.875 + -25.9375, nothing locked
        "tradeNum": 4,
        "usdtProfit": 18.9375,
        "profit": 0.0189375,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "totalCapital": 1018.9375,
        "win": 1,
        "lost": 1,
        "winLostRate": 0.5,
        "exchange": "binance",
        "startTime": START_MS,
        "timeZoneOffset": -480,
        "status": "work",
    }
    sol = book.scalars(1)
    assert {name: sol[name] for name in SYMBOL_FIGURES} == {
        "price": 22.0,
        "assetCaptial": 0.0,
        "usdtProfit": -25.9375,
        "profit": -0.051875,  # -25.9375 / 500
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "signal": "sold",
        "win": 0,
        "lost": 1,
        "winLostRate": 0.0,
        "lastTradeTime": 1681105750000,
    }
    assert (sol["leverage"], sol["isolated"], sol["min_size"]) == (2, False, "0.5")


def test_a_stopped_bot_says_stop() -> None:
    stopped = BotConfig.model_validate({**BOT.model_dump(), "enabled": False})
    book = BotBook.fresh(stopped, epoch=EPOCH, seq=1)
    assert book.status(OFFSET_MIN)["status"] == "stop"


# --- a fill is pending until published (SPEC 2.1 rule 10) -----------------------------------------


def test_a_fill_is_pending_from_its_event_until_its_refresh() -> None:
    book = fresh_book()
    fold(book, ETH_FIRST)
    assert book.fill_pending is False
    publish(book)

    fold(book, ETH_BOUGHT)
    assert book.fill_pending is True
    fold(book, SOL_FIRST)  # a later event without a fill does not clear it
    assert book.fill_pending is True
    refresh = book.next_refresh(OFFSET_MIN)
    assert refresh is not None
    assert book.fill_pending is True, "asking is not publishing"
    book.published(refresh)
    assert (book.fill_pending, book.unsaved_events) == (False, 0)

    fold(book, ETH_SELLING)  # an order placed is not a fill
    assert book.fill_pending is False


# --- the checkpoint -------------------------------------------------------------------------------


def test_the_checkpoint_restores_the_figures() -> None:
    """What accounting commits (`accounting_fields`) is enough to rebuild every figure: a book
    restored from it, as the worker loads one, lists the same scalars and STATUS."""
    book = fresh_book()
    fold(book, ETH_FIRST, ETH_BOUGHT, SOL_FIRST, SOL_BOUGHT)
    fields = book.accounting_fields()
    assert fields["checkpoint"] == "6-0"
    saved = fields["book"]
    assert isinstance(saved, bytes)

    restored = fresh_book()
    restored.checkpoint = str(fields["checkpoint"])
    states = orjson.loads(saved)
    for symbol, state in zip(restored.symbols, states, strict=True):
        symbol.restore(state)

    assert [symbol.state() for symbol in restored.symbols] == states
    assert [symbol.ledger for symbol in restored.symbols] == [ETH_OPEN, SOL_OPEN]
    assert [(s.price, s.signal, s.first_time_ms) for s in restored.symbols] == [
        (1990.0, "bought", START_MS),
        (24.5, "bought", 1681105700000),
    ]
    assert restored.checkpoint == book.checkpoint
    assert restored.status(OFFSET_MIN) == book.status(OFFSET_MIN)
    assert [restored.scalars(i) for i in range(2)] == [book.scalars(i) for i in range(2)]


def test_an_event_of_a_symbol_the_bot_does_not_trade_is_refused() -> None:
    stranger = event(
        "BTC-USDT",
        entry_id="1-0",
        time_ms=START_MS,
        first_time_ms=START_MS,
        price=30000.0,
        signal=None,
        ledger=Ledger(500.0),
    )
    with pytest.raises(KeyError, match="BTC-USDT"):
        fresh_book().apply("1-0", stranger)


def test_a_refresh_carries_every_new_fill_for_the_webhooks_beyond_its_trade_history() -> None:
    """`trades` holds the newest `trade_history` (SPEC 2.1 rule 11); `fills` every fill the
    refresh publishes, so the notify feed gets each TRADE (SPEC 6.1 rule 2)."""
    bot = BOT.model_copy(update={"trade_history": 1})
    book = BotBook.fresh(bot, epoch=EPOCH, seq=1)
    for made in STREAM:
        book.apply(f"{STREAM.index(made) + 1}-0", made)
    refresh = book.next_refresh(OFFSET_MIN)
    assert refresh is not None
    every = [trade for made in STREAM for trade in made.trades]
    by_symbol = {symbol.product_id: symbol for symbol in refresh.symbols}
    for product_id, symbol in by_symbol.items():
        fills = [orjson.loads(fill) for fill in symbol.fills]
        assert fills == [t for made in STREAM if made.product_id == product_id for t in made.trades]
        assert symbol.trades == symbol.fills[-1:]
    assert sum(len(symbol.fills) for symbol in refresh.symbols) == len(every) > 2
