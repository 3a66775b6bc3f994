"""`FeedState`, the pure part of the ccxt source: where a stream stands after its last entry, what
it asks the exchange for next, and what candles and trades add (SPEC 3.1 rule 1, 4.1 rule 8,
5.1 rule 11). No exchange, no Redis, no clock: every time is written here, computed by hand.

The minute opening at T0 = 1_700_000_040_000 is the forming one: `now` is 30 s into it.
"""

from __future__ import annotations

from typing import Any

from libs.core.market import (
    NOT_A_NUMBER,
    NOT_AN_INTEGER,
    ROW_TIME_NOT_INCREASING,
    ROW_TIME_OFF_PERIOD,
    TRADE_TIME_BACKWARDS,
    Kline,
    MarketUpdate,
)
from libs.exchange.candles import candle_pages, cut_page
from libs.exchange.market_files import Reject
from services.ingest.ccxt_source import FeedState
from services.ingest.sources import Item, LastEntry

MINUTE = 60_000
T0 = 1_700_000_040_000  # open of the forming minute
NOW = 1_700_000_070_000  # T0 + 30 s
PREVIOUS = 1_699_999_980_000  # open of the minute before T0
TWO_BEFORE = 1_699_999_920_000  # open of the minute before that


def new_state(last: LastEntry | None = None) -> FeedState:
    return FeedState("binance", "ETH/USDT", MINUTE, last)


def trade(trade_id: object, time_ms: object, price: object, amount: object) -> dict[str, Any]:
    return {"id": trade_id, "timestamp": time_ms, "price": price, "amount": amount}


def after_a_trade() -> FeedState:
    """Restarted after the stream's last entry: trade 42, in the minute before T0."""
    kline = Kline(time_ms=PREVIOUS, open=10.0, high=11.0, low=10.0, close=11.0, volume=2.5)
    update = MarketUpdate(time_ms=1_699_999_990_000, price=11.0, kline=kline)
    return new_state(LastEntry("7-0", "ccxt:binance:ETH/USDT:t42", update))


def after_a_kline() -> FeedState:
    """Restarted after the stream's last entry: the whole kline of the minute before T0."""
    kline = Kline(time_ms=PREVIOUS, open=10.0, high=12.0, low=9.0, close=11.0, volume=4.0)
    update = MarketUpdate(time_ms=1_700_000_039_999, price=11.0, kline=kline)
    return new_state(LastEntry("7-0", f"ccxt:binance:ETH/USDT:k{PREVIOUS}", update))


# --- where a stream stands -----------------------------------------------------------------------


def test_a_new_stream_backfills_its_history_and_then_the_trades_of_the_forming_minute() -> None:
    state = new_state()
    assert state.label == "ccxt:binance:ETH/USDT"
    assert state.klines_from(NOW, history=5, complete=True) == 1_699_999_740_000  # T0 - 5 min
    assert state.covered_until() is None
    assert state.trades_from(NOW) == T0


def test_after_a_whole_kline_nothing_is_missing_and_trades_start_after_its_close() -> None:
    state = after_a_kline()
    assert state.kline_whole is True
    assert state.klines_from(NOW, history=300, complete=True) is None
    assert state.covered_until() == 1_700_000_039_999
    assert state.trades_from(NOW) == T0


def test_after_a_whole_kline_further_back_the_missing_klines_follow_it() -> None:
    kline = Kline(time_ms=TWO_BEFORE, open=10.0, high=12.0, low=9.0, close=11.0, volume=4.0)
    update = MarketUpdate(time_ms=1_699_999_979_999, price=11.0, kline=kline)
    state = new_state(LastEntry("7-0", f"ccxt:binance:ETH/USDT:k{TWO_BEFORE}", update))
    assert state.klines_from(NOW, history=300, complete=False) == PREVIOUS
    assert state.klines_from(NOW, history=300, complete=True) == PREVIOUS


def test_a_backfill_reaches_back_at_most_history_periods() -> None:
    kline = Kline(time_ms=1_699_000_020_000, open=10.0, high=12.0, low=9.0, close=11.0, volume=4.0)
    update = MarketUpdate(time_ms=1_699_000_079_999, price=11.0, kline=kline)
    state = new_state(LastEntry("7-0", "ccxt:binance:ETH/USDT:k1699000020000", update))
    assert state.klines_from(NOW, history=3, complete=True) == 1_699_999_860_000  # T0 - 3 min


def test_after_a_trade_the_kline_it_was_building_is_fetched_whole_only_after_a_gap() -> None:
    state = after_a_trade()
    assert state.kline_whole is False
    assert list(state.recent_ids) == ["42"]
    assert state.klines_from(NOW, history=300, complete=True) == PREVIOUS
    assert state.klines_from(NOW, history=300, complete=False) is None
    assert state.covered_until() is None
    assert state.trades_from(NOW) == 1_699_999_990_000  # the same millisecond may hold new trades


def test_an_entry_another_source_wrote_counts_as_a_whole_kline() -> None:
    kline = Kline(time_ms=PREVIOUS, open=10.0, high=11.0, low=10.0, close=11.0, volume=2.5)
    update = MarketUpdate(time_ms=1_699_999_990_000, price=11.0, kline=kline)
    state = new_state(LastEntry("7-0", "ccxt:mexc:ETH/USDT:t42", update))
    assert state.kline_whole is True
    assert not state.recent_ids
    assert state.klines_from(NOW, history=300, complete=True) is None
    assert state.covered_until() == 1_700_000_039_999


def test_klines_fetched_up_to_a_time_cover_the_trades_before_it() -> None:
    state = new_state()
    state.cover_until(1_700_000_039_999)
    state.cover_until(1_699_999_979_999)  # an earlier cover does not move it back
    assert state.covered_until() == 1_700_000_039_999
    assert state.trades_from(NOW) == T0
    batch = state.accept_trades(
        [trade(1, 1_700_000_039_000, 10.0, 1.0), trade(2, 1_700_000_041_000, 10.5, 1.0)]
    )
    assert [item.src for item in batch.items] == ["ccxt:binance:ETH/USDT:t2"]


# --- candles -------------------------------------------------------------------------------------


def test_closed_candles_become_one_update_each_at_their_close_time() -> None:
    state = new_state()
    batch = state.accept_candles(
        [
            [TWO_BEFORE, 10.0, 12.0, 9.0, 11.0, 3.5],
            [PREVIOUS, 11.0, 11.0, 11.0, 11.0, 0.0],  # no trades in that minute: no kline
            [T0, 11.0, 13.0, 10.0, 12.0, 1.0],  # the forming minute is not closed
        ],
        NOW,
    )
    kline = Kline(time_ms=TWO_BEFORE, open=10.0, high=12.0, low=9.0, close=11.0, volume=3.5)
    assert batch.items == [
        Item(
            "ccxt:binance:ETH/USDT:k1699999920000",
            MarketUpdate(time_ms=1_699_999_979_999, price=11.0, kline=kline),
        )
    ]
    assert batch.rejects == []
    assert (state.kline_ms, state.kline_whole, state.last_time_ms) == (
        TWO_BEFORE,
        True,
        1_699_999_979_999,
    )
    assert state.klines_from(NOW, history=300, complete=True) == PREVIOUS
    assert state.trades_from(NOW) == 1_699_999_980_000


def test_bad_candles_are_rejected_with_their_open_time_and_the_state_stays() -> None:
    state = after_a_kline()
    batch = state.accept_candles(
        [
            [PREVIOUS, 10.0, 12.0, 9.0, 11.0, 4.0],  # the stream's whole kline again
            [1_699_999_980_007, 10.0, 12.0, 9.0, 11.0, 4.0],  # off the minute
            [None, 10.0, 12.0, 9.0, 11.0, 4.0],  # CCXT could not parse the time
            [PREVIOUS, "abc", 12.0, 9.0, 11.0, 4.0],
        ],
        NOW,
    )
    assert batch.items == []
    assert batch.rejects == [
        ("k1699999980000", Reject(0, "time", 1_699_999_980_000, ROW_TIME_NOT_INCREASING)),
        ("k1699999980007", Reject(0, "time", 1_699_999_980_007, ROW_TIME_OFF_PERIOD)),
        ("kNone", Reject(0, "time", None, NOT_AN_INTEGER)),
        ("k1699999980000", Reject(0, "open", "abc", NOT_A_NUMBER)),
    ]
    assert (state.kline_ms, state.kline_whole, state.last_time_ms) == (
        PREVIOUS,
        True,
        1_700_000_039_999,
    )


def test_a_whole_candle_replaces_the_kline_trades_had_built_but_nothing_earlier() -> None:
    state = after_a_trade()
    batch = state.accept_candles(
        [
            [TWO_BEFORE, 10.0, 12.0, 9.0, 11.0, 3.5],
            [PREVIOUS, 10.0, 12.5, 9.5, 12.0, 4.0],
        ],
        NOW,
    )
    kline = Kline(time_ms=PREVIOUS, open=10.0, high=12.5, low=9.5, close=12.0, volume=4.0)
    assert batch.rejects == [
        ("k1699999920000", Reject(0, "time", 1_699_999_920_000, ROW_TIME_NOT_INCREASING))
    ]
    assert batch.items == [
        Item(
            "ccxt:binance:ETH/USDT:k1699999980000",
            MarketUpdate(time_ms=1_700_000_039_999, price=12.0, kline=kline),
        )
    ]
    assert state.kline_whole is True
    assert state.covered_until() == 1_700_000_039_999


# --- trades --------------------------------------------------------------------------------------


def test_trades_build_the_forming_kline_one_update_each() -> None:
    state = new_state()
    batch = state.accept_trades(
        [trade(100, 1_700_000_041_000, 10.0, 2.0), trade("101", 1_700_000_042_000, 12.0, 1.0)]
    )
    assert batch.items == [
        Item(
            "ccxt:binance:ETH/USDT:t100",
            MarketUpdate(
                time_ms=1_700_000_041_000,
                price=10.0,
                kline=Kline(time_ms=T0, open=10.0, high=10.0, low=10.0, close=10.0, volume=2.0),
            ),
        ),
        Item(
            "ccxt:binance:ETH/USDT:t101",
            MarketUpdate(
                time_ms=1_700_000_042_000,
                price=12.0,
                kline=Kline(time_ms=T0, open=10.0, high=12.0, low=10.0, close=12.0, volume=3.0),
            ),
        ),
    ]
    assert (state.kline_ms, state.kline_whole, state.last_time_ms) == (T0, False, 1_700_000_042_000)
    assert state.trades_from(NOW) == 1_700_000_042_000


def test_a_trade_seen_again_by_id_or_by_time_price_and_amount_is_dropped_silently() -> None:
    state = new_state()
    state.accept_trades([trade(100, 1_700_000_041_000, 10.0, 2.0)])
    batch = state.accept_trades(
        [
            trade(100, 1_700_000_041_000, 10.0, 2.0),  # by REST, then by websocket
            trade("agg-7", 1_700_000_041_000, 10.0, 2.0),  # the same trade under another id
            trade(None, 1_700_000_041_000, 10.0, 2.0),  # or none
        ]
    )
    assert batch.items == [] and batch.rejects == []


def test_the_trade_a_restart_resumes_after_is_not_written_twice() -> None:
    state = after_a_trade()
    batch = state.accept_trades(
        [trade(42, 1_699_999_990_000, 11.0, 2.5), trade(43, 1_699_999_995_000, 12.0, 0.5)]
    )
    kline = Kline(time_ms=PREVIOUS, open=10.0, high=12.0, low=10.0, close=12.0, volume=3.0)
    assert batch.items == [
        Item(
            "ccxt:binance:ETH/USDT:t43",
            MarketUpdate(time_ms=1_699_999_995_000, price=12.0, kline=kline),
        )
    ]


def test_a_trade_without_an_id_is_named_by_its_time_price_and_amount() -> None:
    state = new_state()
    batch = state.accept_trades(
        [trade(None, 1_700_000_041_000, 10.0, 2.0), trade("a\nb", 1_700_000_042_000, 10.0, 1.0)]
    )
    assert [item.src for item in batch.items] == [
        "ccxt:binance:ETH/USDT:t1700000041000/10.0/2.0",
        "ccxt:binance:ETH/USDT:ta?b",  # no control character reaches a stream entry
    ]


def test_bad_trades_are_rejected_by_id_and_are_not_remembered() -> None:
    state = new_state()
    state.accept_trades([trade(1, 1_700_000_042_000, 10.0, 1.0)])
    batch = state.accept_trades(
        [
            trade(2, 1_700_000_043_000, "abc", 1.0),
            trade(3, None, 10.0, 1.0),
            trade(4, 1_700_000_041_000, 10.0, 1.0),  # before the previous trade
        ]
    )
    assert batch.items == []
    assert batch.rejects == [
        ("t2", Reject(0, "price", "abc", NOT_A_NUMBER)),
        ("t3", Reject(0, "time", None, NOT_AN_INTEGER)),
        ("t4", Reject(0, "time", 1_700_000_041_000, TRADE_TIME_BACKWARDS)),
    ]
    assert state.last_time_ms == 1_700_000_042_000
    again = state.accept_trades([trade(2, 1_700_000_043_000, 10.5, 1.0)])
    assert [item.src for item in again.items] == ["ccxt:binance:ETH/USDT:t2"]


def test_a_trade_inside_a_whole_kline_is_dropped_and_a_later_one_opens_the_next() -> None:
    state = after_a_kline()
    batch = state.accept_trades(
        [trade(1, 1_700_000_039_999, 11.0, 1.0), trade(2, 1_700_000_040_000, 11.5, 1.0)]
    )
    kline = Kline(time_ms=T0, open=11.5, high=11.5, low=11.5, close=11.5, volume=1.0)
    assert batch.items == [
        Item(
            "ccxt:binance:ETH/USDT:t2",
            MarketUpdate(time_ms=1_700_000_040_000, price=11.5, kline=kline),
        )
    ]
    assert state.covered_until() is None  # the forming kline is not whole
    assert state.trades_from(NOW) == 1_700_000_040_000


def test_the_last_ten_thousand_ids_and_fingerprints_are_remembered() -> None:
    state = new_state()
    trades = [trade(n, T0 + n, 10.0, 1.0) for n in range(5_001)]  # two entries each
    assert len(state.accept_trades(trades).items) == 5_001
    assert len(state.recent_ids) == 10_000
    assert "0" not in state.recent_ids and "1700000040000/10.0/1.0" not in state.recent_ids
    assert "1" in state.recent_ids and "1700000040001/10.0/1.0" in state.recent_ids


# --- the pages FeedState is given (libs.exchange.candles) ----------------------------------------


def test_a_page_keeps_the_rows_asked_for_and_starts_the_next_after_its_newest_row() -> None:
    rows: list[list[Any]] = [
        [TWO_BEFORE, 1.0, 1.0, 1.0, 1.0, 1.0],  # asked for already
        [PREVIOUS, 1.0, 1.0, 1.0, 1.0, 1.0],
        [None, 1.0, 1.0, 1.0, 1.0, 1.0],  # kept: the parser rejects it
        [T0, 1.0, 1.0, 1.0, 1.0, 1.0],  # at the end: not wanted
    ]
    page = cut_page(rows, PREVIOUS, T0, MINUTE)
    assert page.since_ms == PREVIOUS
    assert page.rows == [rows[1], rows[2]]
    assert page.next_since_ms == 1_700_000_100_000  # T0 + 1 min
    assert cut_page(rows[:1], PREVIOUS, T0, MINUTE).next_since_ms is None  # nothing new
    assert cut_page([], PREVIOUS, T0, MINUTE).next_since_ms is None


async def test_pages_are_asked_for_until_the_end_or_an_empty_page() -> None:
    asked: list[int] = []

    async def two_a_page(since_ms: int) -> list[list[Any]]:
        asked.append(since_ms)
        first = max(since_ms, 1_699_999_800_000)  # the exchange's history starts here
        return [[t, 1.0, 1.0, 1.0, 1.0, 1.0] for t in (first, first + MINUTE) if t < NOW]

    pages = [page async for page in candle_pages(two_a_page, 1_699_999_680_000, T0, MINUTE)]
    assert asked == [1_699_999_680_000, 1_699_999_920_000]
    assert [[row[0] for row in page.rows] for page in pages] == [
        [1_699_999_800_000, 1_699_999_860_000],
        [1_699_999_920_000, 1_699_999_980_000],
    ]
    asked.clear()
    empty = [page async for page in candle_pages(two_a_page, T0, T0 + 5 * MINUTE, MINUTE)]
    assert asked == [T0, 1_700_000_100_000]
    assert [page.next_since_ms for page in empty] == [1_700_000_100_000, None]
