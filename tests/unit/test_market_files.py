"""Market CSV files: kind by header, one update per accepted row, rejects reported by line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from libs.core.batch import UpdateColumns
from libs.core.market import (
    MISSING_FIELD,
    NOT_POSITIVE,
    ROW_TIME_NOT_INCREASING,
    TRADE_ID_REPEATED,
    KlineRowReader,
    TradeKlineBuilder,
    parse_kline_row,
    parse_trade_row,
)
from libs.errors import ConfigError
from libs.exchange.market_files import (
    FileKind,
    Reject,
    clean_klines_columns,
    detect_kind,
    file_kind,
    read_market_columns,
    read_market_file,
)

DATA = Path(__file__).parents[1] / "data"
KLINES = DATA / "klines-1m-3000.csv"
TRADES = DATA / "trades-2000.csv"
MINUTE = 60_000


def test_the_kind_of_a_file_is_told_by_its_header() -> None:
    assert file_kind(KLINES) is FileKind.KLINES
    assert file_kind(TRADES) is FileKind.TRADES
    assert detect_kind(["Time", " close", "open", "high", "low", "volume"]) == (
        FileKind.KLINES,
        (0, 2, 3, 4, 1, 5),
    )
    assert detect_kind(["time", "id", "price", "amount"]) == (FileKind.TRADES, (0, 1, 2, 3))
    assert detect_kind(["time", "price"]) is None


def test_a_file_with_an_unknown_header_or_no_file_is_a_config_error(tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"odd\.csv: a,b,c: header must name"):
        file_kind(odd)
    with pytest.raises(ConfigError, match="cannot read"):
        file_kind(tmp_path / "absent.csv")


def test_every_row_of_the_klines_slice_is_one_update_at_its_close_time() -> None:
    with KLINES.open(newline="") as file:
        rows = list(csv.reader(file))[1:]
    updates = list(read_market_file(KLINES, MINUTE))
    assert len(updates) == len(rows) == 3000
    assert [line for line, _ in updates] == list(range(2, 3002))
    reader = KlineRowReader(MINUTE)
    assert [update for _, update in updates] == [reader.accept(parse_kline_row(*r)) for r in rows]
    first = updates[0][1]
    assert first.time_ms == int(rows[0][0]) + MINUTE - 1
    assert first.price == float(rows[0][4])


def test_the_trades_slice_is_aggregated_as_the_builder_does_one_trade_at_a_time() -> None:
    with TRADES.open(newline="") as file:
        rows = list(csv.reader(file))[1:]
    builder = TradeKlineBuilder(MINUTE)
    expected = [builder.accept(parse_trade_row(r[0], r[1], r[3], r[4])) for r in rows]
    updates = [update for _, update in read_market_file(TRADES, MINUTE)]
    assert updates == expected and len(updates) == 2000


def test_bad_rows_are_reported_by_line_and_the_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "60000,1,2,0.5,1.5,10\n"  # line 2: good
        "120000,1,2,0.5,nan,10\n"  # line 3: NaN close
        "\n"  # line 4: blank, skipped
        "120000,1,2,0.5,1.5\n"  # line 5: no volume
        "60000,1,2,0.5,1.5,10\n"  # line 6: not after line 2
        "180000,1,2,0.5,1.5,10\n"  # line 7: good
    )
    rejects: list[Reject] = []
    updates = list(read_market_file(path, MINUTE, rejects.append))
    assert [line for line, _ in updates] == [2, 7]
    assert [(r.line, r.field, r.reason) for r in rejects] == [
        (3, "close", NOT_POSITIVE),
        (5, "volume", MISSING_FIELD),
        (6, "time", ROW_TIME_NOT_INCREASING),
    ]
    assert str(rejects[0].value) == "nan"


def test_a_repeated_trade_id_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text("time,id,side,price,amount\n1000,a,buy,2,1\n1000,a,buy,3,1\n1001,b,sell,4,1\n")
    rejects: list[Reject] = []
    updates = list(read_market_file(path, MINUTE, rejects.append))
    assert [(line, u.price, u.kline.volume) for line, u in updates] == [
        (2, 2.0, 1.0),
        (4, 4.0, 2.0),
    ]
    assert [(r.line, r.field, r.value, r.reason) for r in rejects] == [
        (3, "id", "a", TRADE_ID_REPEATED)
    ]


# --- the same updates as columns --------------------------------------------------------------

HEADER = "time,open,high,low,close,volume\n"
GOOD = ["60000,1,2,0.5,1.5,10", "120000,1.5,2.5,1.25,2,0", "180000,2,2,1.5,1.75,3.25"]


def same_bits(left: UpdateColumns, right: UpdateColumns) -> bool:
    """Equal columns, value for value and bit for bit (so -0.0 is not 0.0), of the same types."""
    return all(
        getattr(left, name).dtype == getattr(right, name).dtype
        and getattr(left, name).tobytes() == getattr(right, name).tobytes()
        for name in ("time_ms", "price", "kline_time_ms", "open", "high", "low", "close", "volume")
    )


def read_both(path: Path) -> tuple[UpdateColumns, list[Reject], UpdateColumns, list[Reject]]:
    """The columnar reader's columns and rejects, then the row reader's."""
    column_rejects: list[Reject] = []
    columns = read_market_columns(path, MINUTE, column_rejects.append)
    row_rejects: list[Reject] = []
    rows = [update for _, update in read_market_file(path, MINUTE, row_rejects.append)]
    return columns, column_rejects, UpdateColumns.of(rows), row_rejects


@pytest.mark.parametrize("path", [KLINES, TRADES], ids=["klines", "trades"])
def test_the_columns_of_a_file_are_its_updates_bit_for_bit(path: Path) -> None:
    columns, column_rejects, expected, row_rejects = read_both(path)
    assert same_bits(columns, expected) and len(columns) in (3000, 2000)
    assert column_rejects == row_rejects == []
    with path.open(newline="") as file:
        detected = detect_kind(next(csv.reader(file)))
    assert detected is not None
    kind, where = detected
    clean = clean_klines_columns(path, where, MINUTE)
    assert (clean is not None) == (kind is FileKind.KLINES)  # the real klines take the fast path


@pytest.mark.parametrize(
    ("rows", "fast"),
    [
        pytest.param(GOOD, True, id="plain"),
        pytest.param(["6e4,1e0,2.0e+0,5e-1,+1.5,1E1", *GOOD[1:]], True, id="exponents-and-plus"),
        pytest.param(["60000.0,1,2,0.5,1.5,-0", *GOOD[1:]], True, id="float-time-negative-zero"),
        pytest.param([f"{row},7" for row in GOOD], True, id="an-extra-column"),
        pytest.param(["60000,0.1,0.30000000000000004,0.1,0.2,1", *GOOD[1:]], True, id="ulps"),
        pytest.param(["60000,1,2,0.5,1.5,10", "60000,1,2,0.5,1.5,10"], False, id="same-time"),
        pytest.param(["60000,1,2,0.5,1.5,10", "150000,1,2,0.5,1.5,10"], False, id="off-period"),
        pytest.param(["60000.5,1,2,0.5,1.5,10", *GOOD[1:]], False, id="fractional-time"),
        pytest.param(["9007199254740993,1,2,0.5,1.5,10"], False, id="time-beyond-doubles"),
        pytest.param(["60000,0,2,0.5,1.5,10", *GOOD[1:]], False, id="zero-open"),
        pytest.param(["60000,1,2,1.25,1.5,10", *GOOD[1:]], False, id="low-above-open"),
        pytest.param(["60000,1,1.25,0.5,1.5,10", *GOOD[1:]], False, id="high-below-close"),
        pytest.param(["60000,1,2,0.5,1e999,10", *GOOD[1:]], False, id="infinite-close"),
        pytest.param(["60000,1,2,0.5,1.5,-1", *GOOD[1:]], False, id="negative-volume"),
        pytest.param(["60000,1,2,0.5,nan,10", *GOOD[1:]], False, id="nan"),
        pytest.param(["60000,1,2,0.5, 1.5,10", *GOOD[1:]], False, id="a-space"),
        pytest.param(["60000,1,2,0.5,1_5,10", *GOOD[1:]], False, id="an-underscore"),
        pytest.param(['60000,1,2,0.5,"1.5",10', *GOOD[1:]], False, id="quotes"),
        pytest.param(["60000,1,2,0.5,,10", *GOOD[1:]], False, id="an-empty-field"),
        pytest.param(["60000,1,2,0.5,1.5", *GOOD[1:]], False, id="a-missing-field"),
        pytest.param([GOOD[0], "", *GOOD[1:]], False, id="a-blank-line"),
        pytest.param(["60000,1,2,0.5,1-5,10", *GOOD[1:]], False, id="not-a-number"),
        pytest.param(["60000,1,2,0.5,1.5.1,10", *GOOD[1:]], False, id="two-points"),
        pytest.param(["-6e4,1,2,0.5,1.5,10", *GOOD[1:]], True, id="negative-time"),
    ],
)
def test_the_columns_and_rejects_of_any_klines_file_are_the_row_readers(
    tmp_path: Path, rows: list[str], fast: bool
) -> None:
    for ending, suffix in (("\n", "\n"), ("\n", ""), ("\r\n", "\r\n")):
        path = tmp_path / "klines.csv"
        path.write_bytes((HEADER.replace("\n", ending) + ending.join(rows) + suffix).encode())
        columns, column_rejects, expected, row_rejects = read_both(path)
        assert same_bits(columns, expected)
        assert repr(column_rejects) == repr(row_rejects)  # repr: a nan value equals no other
        clean = clean_klines_columns(path, (0, 1, 2, 3, 4, 5), MINUTE)
        assert (clean is not None) == (fast and ending == "\n")  # CRLF: the row reader's


def test_a_klines_file_of_a_header_only_has_no_updates(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(HEADER)
    columns, column_rejects, expected, _ = read_both(path)
    assert len(columns) == 0 and same_bits(columns, expected) and column_rejects == []
