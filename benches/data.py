"""The benchmarks' market data: seeded random walks of 1-minute klines, as klines CSV files.

A year is 525,600 klines. It is generated once per (rows, seed, generator version) and cached
under `.bench/` (which ignores itself), so every run of a benchmark reads the very same file,
and `bandwagon backtest --klines` reads it as it reads any other klines file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from libs.core.batch import UpdateColumns
from libs.core.market import MarketUpdate
from libs.exchange.market_files import read_market_columns, read_market_file

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / ".bench"
YEAR_MINUTES = 525_600
SEED = 20_240_101
MINUTE_MS = 60_000
START_TIME_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a kline's open time
START_PRICE = 3000.0
SIGMA_PER_MINUTE = 0.001  # 0.1 % of the price per minute, in log terms
PRICE_DECIMALS = 2  # as ETH-USDT, the demo bot's first symbol
GENERATOR_VERSION = 1  # bump when `random_walk_klines` changes, so caches are not reused


@dataclass(frozen=True, slots=True)
class KlineColumns:
    """Klines column by column; `time_ms` is each kline's open time."""

    time_ms: Ints
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats

    def __len__(self) -> int:
        return len(self.time_ms)


def random_walk_klines(
    rows: int,
    seed: int,
    *,
    start_price: float = START_PRICE,
    sigma_per_minute: float = SIGMA_PER_MINUTE,
    price_decimals: int = PRICE_DECIMALS,
) -> KlineColumns:
    """A geometric random walk sampled every minute: each kline opens at the previous close,
    its high and low reach a little beyond open and close, prices rounded to the symbol's
    decimals. Valid klines by SPEC 5.1 rule 11 (positive, low <= open/close <= high)."""
    generator = np.random.default_rng(seed)
    steps = generator.normal(0.0, sigma_per_minute, rows)
    close = np.round(start_price * np.exp(np.cumsum(steps)), price_decimals)
    open_ = np.concatenate([[round(start_price, price_decimals)], close[:-1]])
    reach = np.abs(generator.normal(0.0, sigma_per_minute / 2, (2, rows)))
    high = np.round(np.maximum(open_, close) * (1 + reach[0]), price_decimals)
    low = np.round(np.minimum(open_, close) * (1 - reach[1]), price_decimals)
    volume = np.round(generator.gamma(2.0, 5.0, rows), 4)
    time_ms = START_TIME_MS + MINUTE_MS * np.arange(rows, dtype=np.int64)
    return KlineColumns(time_ms, open_, high, low, close, volume)


def write_klines_csv(
    klines: KlineColumns, path: Path, price_decimals: int = PRICE_DECIMALS
) -> None:
    """The `time,open,high,low,close,volume` format of `../shared/data/`, written to a temporary
    name and renamed, so a half-written file is never taken for the cache."""
    price = f"%.{price_decimals}f"
    table = np.column_stack(
        [klines.time_ms, klines.open, klines.high, klines.low, klines.close, klines.volume]
    )
    partial = path.with_name(path.name + ".partial")
    np.savetxt(
        partial,
        table,
        fmt=["%d", price, price, price, price, "%.4f"],
        delimiter=",",
        header="time,open,high,low,close,volume",
        comments="",
    )
    os.replace(partial, path)


def cache_dir() -> Path:
    """`.bench/`, made on first use with a `.gitignore` of `*`, as pytest does for its cache."""
    CACHE_DIR.mkdir(exist_ok=True)
    ignore = CACHE_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benches/data.py: benchmark data and results, never committed\n*\n")
    return CACHE_DIR


def klines_csv(rows: int = YEAR_MINUTES, seed: int = SEED) -> Path:
    """The cached klines file of `rows` minutes from `seed`, generated on first use."""
    path = cache_dir() / f"klines-1m-{rows}-seed{seed}-v{GENERATOR_VERSION}.csv"
    if not path.exists():
        write_klines_csv(random_walk_klines(rows, seed), path)
    return path


def read_updates(path: Path) -> list[MarketUpdate]:
    """The updates Bandwagon's backtest sees for a klines file (1-minute klines)."""
    rejected: list[int] = []
    updates = [
        update for _, update in read_market_file(path, MINUTE_MS, lambda r: rejected.append(r.line))
    ]
    if rejected:
        raise ValueError(f"{path}: rows rejected at lines {rejected[:5]}")
    return updates


def read_columns(path: Path) -> UpdateColumns:
    """The same updates as columns, read as `bandwagon backtest` reads them."""
    rejected: list[int] = []
    columns = read_market_columns(path, MINUTE_MS, lambda r: rejected.append(r.line))
    if rejected:
        raise ValueError(f"{path}: rows rejected at lines {rejected[:5]}")
    return columns


def prices_of(updates: list[MarketUpdate]) -> tuple[Ints, Floats]:
    """(event time, price) of every update: what the peers get, the very floats Bandwagon sees."""
    time_ms = np.fromiter((u.time_ms for u in updates), dtype=np.int64, count=len(updates))
    price = np.fromiter((u.price for u in updates), dtype=np.float64, count=len(updates))
    return time_ms, price
