"""Market rows -> updates: validation (SPEC 5.1 rule 11), klines rows (3.1 rule 1) and trades
aggregated into klines (4.1 rule 8). Expected values are computed by hand."""

from __future__ import annotations

import math

import pytest

from libs.core.market import (
    HIGH_BELOW_OPEN_CLOSE,
    LOW_ABOVE_OPEN_CLOSE,
    NEGATIVE,
    NOT_A_NUMBER,
    NOT_AN_INTEGER,
    NOT_POSITIVE,
    ROW_TIME_NOT_INCREASING,
    ROW_TIME_OFF_PERIOD,
    TRADE_ID_REPEATED,
    TRADE_TIME_BACKWARDS,
    Kline,
    KlineRowReader,
    MarketUpdate,
    Trade,
    TradeKlineBuilder,
    parse_kline_row,
    parse_time_ms,
    parse_trade_row,
)
from libs.errors import BadMarketData

MINUTE = 60_000
T0 = 1_509_836_520_000  # a minute boundary (first row of the real klines file)


def kline_row(
    time: str = str(T0),
    open: str = "10",
    high: str = "12",
    low: str = "9",
    close: str = "11",
    volume: str = "5",
) -> Kline:
    return parse_kline_row(time, open, high, low, close, volume)


def rejection(call: object) -> tuple[str, object, str]:
    assert callable(call)
    with pytest.raises(BadMarketData) as caught:
        call()
    return caught.value.field, caught.value.value, caught.value.reason


# --- klines rows ----------------------------------------------------------------------------------


def test_a_klines_row_is_one_update_at_its_close_time_priced_at_its_close() -> None:
    update = KlineRowReader(MINUTE).accept(kline_row())
    assert update == MarketUpdate(
        time_ms=T0 + 59_999,
        price=11.0,
        kline=Kline(time_ms=T0, open=10.0, high=12.0, low=9.0, close=11.0, volume=5.0),
    )


def test_a_klines_row_of_a_5m_period_closes_five_minutes_later() -> None:
    update = KlineRowReader(5 * MINUTE).accept(kline_row(time=str(T0 - T0 % (5 * MINUTE))))
    assert update.time_ms == T0 - T0 % (5 * MINUTE) + 5 * MINUTE - 1


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"close": "nan"}, "close", NOT_POSITIVE),
        ({"open": "inf"}, "open", NOT_POSITIVE),
        ({"open": "0"}, "open", NOT_POSITIVE),
        ({"high": "-12"}, "high", NOT_POSITIVE),
        ({"low": "-1e-9"}, "low", NOT_POSITIVE),
        ({"close": "0.0"}, "close", NOT_POSITIVE),
        ({"volume": "-0.5"}, "volume", NEGATIVE),
        ({"volume": "nan"}, "volume", NEGATIVE),
        ({"volume": "inf"}, "volume", NEGATIVE),
        ({"low": "10.5"}, "low", LOW_ABOVE_OPEN_CLOSE),  # open 10, close 11
        ({"high": "10.9"}, "high", HIGH_BELOW_OPEN_CLOSE),  # open 10, close 11
    ],
)
def test_a_bad_klines_row_is_rejected_naming_field_and_reason(
    row: dict[str, str], field: str, reason: str
) -> None:
    reader = KlineRowReader(MINUTE)
    assert rejection(lambda: reader.accept(kline_row(**row)))[::2] == (field, reason)
    assert reader.last_time_ms is None  # nothing changed


def test_a_volume_of_zero_is_accepted_and_low_may_equal_open() -> None:
    update = KlineRowReader(MINUTE).accept(kline_row(volume="0", low="10", high="11"))
    assert update.kline.volume == 0.0


@pytest.mark.parametrize("text", ["1509836520000.5", "abc", "", "1e-3", "nan", "inf"])
def test_a_time_that_is_not_an_integer_is_rejected(text: str) -> None:
    assert rejection(lambda: parse_time_ms(text)) == ("time", text, NOT_AN_INTEGER)


def test_an_integral_time_in_decimal_spelling_is_an_integer() -> None:
    assert parse_time_ms("1509836520000.0") == T0
    assert parse_time_ms("1509836520000") == T0


def test_a_time_given_as_a_float_object_is_rejected_by_the_reader() -> None:
    row = Kline(time_ms=float(T0), open=1, high=1, low=1, close=1, volume=1)  # type: ignore[arg-type]
    assert rejection(lambda: KlineRowReader(MINUTE).accept(row))[::2] == ("time", NOT_AN_INTEGER)


def test_a_price_that_is_not_a_number_is_rejected() -> None:
    assert rejection(lambda: kline_row(close="1,5")) == ("close", "1,5", NOT_A_NUMBER)


def test_a_klines_row_must_come_after_the_previous_accepted_row() -> None:
    reader = KlineRowReader(MINUTE)
    reader.accept(kline_row(time=str(T0)))
    assert rejection(lambda: reader.accept(kline_row(time=str(T0)))) == (
        "time",
        T0,
        ROW_TIME_NOT_INCREASING,
    )
    assert rejection(lambda: reader.accept(kline_row(time=str(T0 - MINUTE))))[2] == (
        ROW_TIME_NOT_INCREASING
    )
    # a gap is normal data
    assert reader.accept(kline_row(time=str(T0 + 3 * MINUTE))).time_ms == T0 + 4 * MINUTE - 1


def test_a_klines_row_off_the_period_grid_is_rejected_and_changes_nothing() -> None:
    reader = KlineRowReader(MINUTE)
    reader.accept(kline_row(time=str(T0)))
    assert rejection(lambda: reader.accept(kline_row(time=str(T0 + 30_000)))) == (
        "time",
        T0 + 30_000,
        ROW_TIME_OFF_PERIOD,
    )
    assert reader.last_time_ms == T0
    assert reader.accept(kline_row(time=str(T0 + MINUTE))).kline.time_ms == T0 + MINUTE


def test_a_rejected_row_does_not_move_the_previous_row_time() -> None:
    reader = KlineRowReader(MINUTE)
    reader.accept(kline_row(time=str(T0)))
    with pytest.raises(BadMarketData):
        reader.accept(kline_row(time=str(T0 + 2 * MINUTE), close="nan"))
    # had the bad row counted, this one would be "not after the previous row"
    assert reader.accept(kline_row(time=str(T0 + MINUTE))).kline.time_ms == T0 + MINUTE


def test_a_kline_reader_restored_from_its_snapshot_goes_on_where_it_stood() -> None:
    reader = KlineRowReader(MINUTE)
    reader.accept(kline_row(time=str(T0)))
    restored = KlineRowReader.restore(MINUTE, reader.snapshot())
    with pytest.raises(BadMarketData):
        restored.accept(kline_row(time=str(T0)))
    assert restored.accept(kline_row(time=str(T0 + MINUTE))).time_ms == T0 + 2 * MINUTE - 1


# --- trades ---------------------------------------------------------------------------------------


def trade(offset_ms: int, trade_id: str, price: str, amount: str = "1") -> Trade:
    return parse_trade_row(str(T0 + offset_ms), trade_id, price, amount)


def test_trades_build_klines_across_a_period_boundary_with_equal_times_and_a_gap() -> None:
    builder = TradeKlineBuilder(MINUTE)
    updates = [
        builder.accept(trade(1_000, "1", "10", "2")),
        builder.accept(trade(1_000, "2", "12", "0.5")),  # equal time: normal
        builder.accept(trade(30_000, "3", "9", "1")),
        builder.accept(trade(59_999, "4", "11", "0")),  # last ms of the period
        builder.accept(trade(60_000, "5", "20", "3")),  # later period: the first kline closed
        builder.accept(trade(60_001, "6", "19", "1")),
        builder.accept(trade(200_000, "7", "21", "4")),  # minutes 2 has no trade: no kline
    ]
    assert [(u.time_ms - T0, u.price) for u in updates] == [
        (1_000, 10.0),
        (1_000, 12.0),
        (30_000, 9.0),
        (59_999, 11.0),
        (60_000, 20.0),
        (60_001, 19.0),
        (200_000, 21.0),
    ]
    assert [u.kline for u in updates] == [
        Kline(T0, 10.0, 10.0, 10.0, 10.0, 2.0),
        Kline(T0, 10.0, 12.0, 10.0, 12.0, 2.5),
        Kline(T0, 10.0, 12.0, 9.0, 9.0, 3.5),
        Kline(T0, 10.0, 12.0, 9.0, 11.0, 3.5),
        Kline(T0 + MINUTE, 20.0, 20.0, 20.0, 20.0, 3.0),
        Kline(T0 + MINUTE, 20.0, 20.0, 19.0, 19.0, 4.0),
        Kline(T0 + 3 * MINUTE, 21.0, 21.0, 21.0, 21.0, 4.0),
    ]


def test_volume_is_the_running_sum_of_amounts_in_arrival_order() -> None:
    builder = TradeKlineBuilder(MINUTE)
    volumes = [builder.accept(trade(n, str(n), "1", "0.1")).kline.volume for n in range(3)]
    assert volumes == [0.1, 0.1 + 0.1, 0.1 + 0.1 + 0.1]  # 0.30000000000000004: float order


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        (("nan", "1"), "price", NOT_POSITIVE),
        (("0", "1"), "price", NOT_POSITIVE),
        (("-3", "1"), "price", NOT_POSITIVE),
        (("inf", "1"), "price", NOT_POSITIVE),
        (("3", "-1"), "amount", NEGATIVE),
        (("3", "nan"), "amount", NEGATIVE),
        (("3", "inf"), "amount", NEGATIVE),
    ],
)
def test_a_bad_trade_is_rejected_and_changes_nothing(
    row: tuple[str, str], field: str, reason: str
) -> None:
    builder = TradeKlineBuilder(MINUTE)
    builder.accept(trade(0, "1", "5"))
    before = builder.snapshot()
    assert rejection(lambda: builder.accept(trade(10, "2", *row)))[::2] == (field, reason)
    assert builder.snapshot() == before


def test_a_trade_earlier_than_the_previous_accepted_one_is_rejected() -> None:
    builder = TradeKlineBuilder(MINUTE)
    builder.accept(trade(500, "1", "5"))
    assert rejection(lambda: builder.accept(trade(499, "2", "6"))) == (
        "time",
        T0 + 499,
        TRADE_TIME_BACKWARDS,
    )
    assert builder.accept(trade(500, "2", "6")).kline.high == 6.0


def test_a_trade_with_the_previous_accepted_trades_id_is_rejected() -> None:
    builder = TradeKlineBuilder(MINUTE)
    builder.accept(trade(500, "7", "5"))
    assert rejection(lambda: builder.accept(trade(600, "7", "6"))) == ("id", "7", TRADE_ID_REPEATED)
    assert builder.kline == Kline(T0, 5.0, 5.0, 5.0, 5.0, 1.0)


def test_a_trade_time_that_is_not_an_integer_is_rejected() -> None:
    assert rejection(lambda: parse_trade_row("1.5", "1", "5", "1")) == (
        "time",
        "1.5",
        NOT_AN_INTEGER,
    )


def test_a_builder_restored_from_its_snapshot_continues_without_a_duplicate_or_a_gap() -> None:
    trades = [trade(n * 7_000, str(n), str(10 + n % 3), "0.25") for n in range(20)]
    straight = TradeKlineBuilder(MINUTE)
    expected = [straight.accept(t) for t in trades]

    first = TradeKlineBuilder(MINUTE)
    got = [first.accept(t) for t in trades[:11]]
    snapshot = first.snapshot()
    assert snapshot["kline"] is not None and math.isfinite(snapshot["kline"]["volume"])
    second = TradeKlineBuilder.restore(MINUTE, snapshot)
    with pytest.raises(BadMarketData):
        second.accept(trades[10])  # the last one again: same id
    got += [second.accept(t) for t in trades[11:]]
    assert got == expected


def test_a_builder_resumed_after_a_stream_entry_extends_that_entrys_kline() -> None:
    straight = TradeKlineBuilder(MINUTE)
    updates = [straight.accept(trade(n * 1_000, str(n), str(5 + n), "1")) for n in range(4)]
    resumed = TradeKlineBuilder.after(MINUTE, updates[1], trade_id="1")
    resumed_updates = [resumed.accept(trade(n * 1_000, str(n), str(5 + n), "1")) for n in (2, 3)]
    assert resumed_updates == updates[2:]


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_ms"):
        TradeKlineBuilder(0)
    with pytest.raises(ValueError, match="period_ms"):
        KlineRowReader(-1)


def test_stream_entry_ids_sort_as_numbers_not_text() -> None:
    from libs.wire.market import entry_key

    assert entry_key("1681105620000-3") == (1681105620000, 3)
    assert entry_key("42") == (42, 0)
    assert sorted(["10-0", "9-1", "9-0"], key=entry_key) == ["9-0", "9-1", "10-0"]
