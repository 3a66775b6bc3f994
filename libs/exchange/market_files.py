"""Market CSV files (klines or trades) as the sequence of updates the strategy sees.

Ingest's `replay` source and `bandwagon backtest` both read files through `read_market_file`, so
both feed the strategy exactly the same updates (SPEC section 1, determinism). The kind of a file
is told by its header; columns are found by name, so their order and extra columns do not matter.
Parsing, validation and aggregation are the pure core's (`libs.core.market`); this module only
reads lines.

`read_market_columns` gives the same updates as columns, for the backtest: a clean klines file is
read by numpy in one pass and checked column by column; anything else goes row by row as above.
"""

from __future__ import annotations

import csv
import enum
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from libs.core.batch import UpdateColumns
from libs.core.market import (
    MISSING_FIELD,
    KlineRowReader,
    MarketUpdate,
    TradeKlineBuilder,
    parse_kline_row,
    parse_trade_row,
)
from libs.core.strategies.contract import Bools, Floats
from libs.errors import BadMarketData, ConfigError

KLINES_COLUMNS = ("time", "open", "high", "low", "close", "volume")
TRADES_COLUMNS = ("time", "id", "price", "amount")  # `side` may be present; no rule needs it
MAX_PRICE_DECIMALS = 18  # as `price_decimals` allows
_PLAIN_DECIMAL = re.compile(r"([0-9]*)\.?([0-9]*)", re.ASCII)


class FileKind(enum.Enum):
    KLINES = "klines"
    TRADES = "trades"


@dataclass(frozen=True, slots=True)
class Reject:
    """A skipped row: where it is, and what `BadMarketData` said about it (SPEC 5.1 rule 11)."""

    line: int
    field: str
    value: object
    reason: str


def detect_kind(header: Sequence[str]) -> tuple[FileKind, tuple[int, ...]] | None:
    """The file kind and the index of each needed column, or None for an unknown header."""
    names = [name.strip().lower() for name in header]
    for kind, columns in ((FileKind.KLINES, KLINES_COLUMNS), (FileKind.TRADES, TRADES_COLUMNS)):
        if all(column in names for column in columns):
            return kind, tuple(names.index(column) for column in columns)
    return None


def _open_csv(path: Path) -> tuple[FileKind, tuple[int, ...]]:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            header = next(csv.reader(file), [])
    except OSError as error:
        raise ConfigError(str(path), str(path), f"cannot read: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(str(path), str(path), f"not a CSV file: {error}") from None
    detected = detect_kind(header)
    if detected is None:
        raise ConfigError(
            str(path),
            ",".join(header),
            f"header must name the columns {','.join(KLINES_COLUMNS)} (klines)"
            f" or {','.join(TRADES_COLUMNS)} (trades)",
        )
    return detected


def _missing(names: Sequence[str], columns: Sequence[int], row: Sequence[str]) -> BadMarketData:
    field = next(name for name, column in zip(names, columns, strict=True) if column >= len(row))
    return BadMarketData(field, ",".join(row), MISSING_FIELD)


def file_kind(path: Path) -> FileKind:
    """Checked at start, so a wrong file is a config error (exit 78), not a stream of rejects."""
    return _open_csv(path)[0]


def read_market_file(
    path: Path,
    period_ms: int,
    on_reject: Callable[[Reject], None] | None = None,
) -> Iterator[tuple[int, MarketUpdate]]:
    """`(line number, update)` for every accepted row, in file order; line 1 is the header.

    A klines row is one update at its close_time; trades are aggregated into klines of
    `period_ms`. A bad row goes to `on_reject` and the reading goes on; blank lines are skipped.
    """
    kind, columns = _open_csv(path)
    width = max(columns) + 1
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        next(reader, None)
        if kind is FileKind.KLINES:
            klines = KlineRowReader(period_ms)
            t, o, h, lo, c, v = columns
            for row in reader:
                if not row:
                    continue
                try:
                    if len(row) < width:
                        raise _missing(KLINES_COLUMNS, columns, row)
                    update = klines.accept(
                        parse_kline_row(row[t], row[o], row[h], row[lo], row[c], row[v])
                    )
                except BadMarketData as error:
                    if on_reject is not None:
                        on_reject(Reject(reader.line_num, error.field, error.value, error.reason))
                    continue
                yield reader.line_num, update
        else:
            trades = TradeKlineBuilder(period_ms)
            t, i, p, a = columns
            for row in reader:
                if not row:
                    continue
                try:
                    if len(row) < width:
                        raise _missing(TRADES_COLUMNS, columns, row)
                    update = trades.accept(parse_trade_row(row[t], row[i], row[p], row[a]))
                except BadMarketData as error:
                    if on_reject is not None:
                        on_reject(Reject(reader.line_num, error.field, error.value, error.reason))
                    continue
                yield reader.line_num, update


# --- the decimals its prices are written with -----------------------------------------------------


def written_decimals(text: str) -> int | None:
    """The decimals a price needs as the file writes it, trailing zeros aside (`"0.00162008"` 8,
    `"2000.10"` 1, `"1.5e-05"` 6, `"2000"` 0); None for a field that is not a finite number > 0.

    Read from the text, not the double: `0.3` written `0.3` has 1, whatever its binary value."""
    plain = _PLAIN_DECIMAL.fullmatch(text.strip())
    if plain is not None:  # the common case, ten times faster than Decimal
        whole, fraction = plain.group(1, 2)
        if not (whole + fraction).strip("0"):
            return None  # zero
        return len(fraction.rstrip("0"))
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0:
        return None
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def price_decimals_of(path: Path) -> int | None:
    """The most decimals among the file's prices as written (`written_decimals`): a klines file's
    open, high, low and close, a trades file's price; at most 18. None when no row has one.

    What `bandwagon backtest` trades with when nothing else gives a symbol's `price_decimals`:
    enough for each price of the file to be written exactly, so no fill rounds to 0."""
    kind, columns = _open_csv(path)
    price_columns = columns[1:5] if kind is FileKind.KLINES else columns[2:3]
    most: int | None = None
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file)
            next(reader, None)
            for row in reader:
                for column in price_columns:
                    if column < len(row):
                        decimals = written_decimals(row[column])
                        if decimals is not None and (most is None or decimals > most):
                            most = decimals
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(str(path), str(path), f"not a CSV file: {error}") from None
    return None if most is None else min(most, MAX_PRICE_DECIMALS)


# --- the same updates as columns ------------------------------------------------------------------

# Bytes a clean klines body may hold: plain and exponent-notation numbers, commas, newlines. In
# this alphabet numpy's parser and Python's `float` (both `PyOS_string_to_double`, correctly
# rounded) accept the same fields and give the same doubles: no spaces, underscores, quotes,
# carriage returns, `nan` or `inf` spellings, which the two may treat differently.
_CLEAN_BYTES = b"0123456789.+-eE,\n"
_EMPTY_FIELDS = (b",,", b",\n", b"\n,", b"\n\n")  # and a body starting with a separator
_EXACT_INTEGERS = 2.0**53  # below this a double holds every integer a time text can spell


def read_market_columns(
    path: Path,
    period_ms: int,
    on_reject: Callable[[Reject], None] | None = None,
) -> UpdateColumns:
    """Every accepted update of the file, in order, as columns: exactly `read_market_file`'s.

    A klines file of plain numbers whose every row passes SPEC 5.1 rule 11 is parsed by numpy in
    one pass and checked by whole-column tests (ten times faster than row by row). Any other
    file, or one with a row those tests refuse, is read by `read_market_file`, so its rejects and
    their messages are exactly that reader's.
    """
    kind, columns = _open_csv(path)
    if kind is FileKind.KLINES:
        clean = clean_klines_columns(path, columns, period_ms)
        if clean is not None:
            return clean
    return UpdateColumns.of([update for _, update in read_market_file(path, period_ms, on_reject)])


def clean_klines_columns(
    path: Path, columns: Sequence[int], period_ms: int
) -> UpdateColumns | None:
    """The updates of a klines file with every row clean and valid; None if any is not (the row
    reader then decides, row by row). `columns`: where time, open, high, low, close, volume are."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header_end = data.find(b"\n")
    if header_end < 0 or b'"' in data[:header_end]:
        return None  # no row, or a header the csv module may read across lines
    body = data[header_end + 1 :]
    if not body or body.translate(None, _CLEAN_BYTES):
        return None  # no row, or a byte outside the clean alphabet
    if body[:1] in (b",", b"\n") or any(empty in body for empty in _EMPTY_FIELDS):
        return None  # an empty field or a blank line: the row reader's to judge
    try:
        table = np.loadtxt(
            path, delimiter=",", comments=None, skiprows=1, dtype=np.float64, ndmin=2
        )
    except ValueError:
        return None
    if table.shape[1] <= max(columns):
        return None
    time, open_, high, low, close, volume = (np.ascontiguousarray(table[:, c]) for c in columns)
    if not _valid_klines(time, open_, high, low, close, volume, period_ms):
        return None
    open_time_ms = time.astype(np.int64)
    return UpdateColumns(
        time_ms=open_time_ms + (period_ms - 1),  # kline_close_time, SPEC 3.1 rule 1
        price=close.copy(),
        kline_time_ms=open_time_ms,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )


def _valid_klines(
    time: Floats,
    open_: Floats,
    high: Floats,
    low: Floats,
    close: Floats,
    volume: Floats,
    period_ms: int,
) -> bool:
    """Whether every row passes what `parse_kline_row` and `KlineRowReader.accept` check: an
    integer time (as `parse_time_ms` reads one), positive finite prices, a finite volume >= 0,
    low <= min(open, close) <= max(open, close) <= high, times increasing, on the period."""
    whole: Bools = np.isfinite(time) & (np.abs(time) < _EXACT_INTEGERS) & (time == np.floor(time))
    if not whole.all():
        return False
    for prices in (open_, high, low, close):
        if not (np.isfinite(prices) & (prices > 0)).all():
            return False
    if not (np.isfinite(volume) & (volume >= 0)).all():
        return False
    if not ((low <= np.minimum(open_, close)) & (high >= np.maximum(open_, close))).all():
        return False
    open_time_ms = time.astype(np.int64)
    return bool((open_time_ms[1:] > open_time_ms[:-1]).all()) and bool(
        (open_time_ms % period_ms == 0).all()
    )
