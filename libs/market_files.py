"""Market CSV files (klines or trades) as the sequence of updates the strategy sees.

Ingest's `replay` source and `bandwagon backtest` both read files through `read_market_file`, so
both feed the strategy exactly the same updates (SPEC section 1, determinism). The kind of a file
is told by its header; columns are found by name, so their order and extra columns do not matter.
Parsing, validation and aggregation are the pure core's (`libs.core.market`); this module only
reads lines.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from libs.core.market import (
    MISSING_FIELD,
    KlineRowReader,
    MarketUpdate,
    TradeKlineBuilder,
    parse_kline_row,
    parse_trade_row,
)
from libs.errors import BadMarketData, ConfigError

KLINES_COLUMNS = ("time", "open", "high", "low", "close", "volume")
TRADES_COLUMNS = ("time", "id", "price", "amount")  # `side` may be present; no rule needs it


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
