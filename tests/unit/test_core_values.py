"""Periods, decimals, bands and portfolio figures against the SPEC's vectors and formulas."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import talib

from libs.core.bands import bollinger_bands
from libs.core.decimals import decimals_of, format_decimal, format_decimal_exact
from libs.core.periods import kline_close_time, kline_period_ms, period_id
from libs.core.pnl import Ledger, Position, order_size
from libs.core.portfolio import status_figures, symbol_figures

REAL_KLINES = Path(__file__).parents[1] / "data" / "klines-1m-3000.csv"


def test_period_id_matches_the_status_api_vector() -> None:
    assert period_id(1681105620000, "1m") == "m28018427"
    assert kline_close_time(1681105620000, kline_period_ms("1m")) == 1681105679999


def test_period_id_carries_the_multiplier_only_when_it_is_not_one() -> None:
    assert period_id(1681105620000, "5m") == f"5m{1681105620000 // 300_000}"
    assert period_id(1681105620000, "1h") == f"h{1681105620000 // 3_600_000}"
    assert period_id(1681105620000, "1d") == f"d{1681105620000 // 86_400_000}"
    with pytest.raises(ValueError, match="kline size"):
        kline_period_ms("1w")


def test_decimals_are_plain_correctly_rounded_with_ties_to_even() -> None:
    assert format_decimal(0.125, 2) == "0.12"  # exactly representable tie -> even
    assert format_decimal(0.375, 2) == "0.38"
    assert format_decimal(1857.4, 2) == "1857.40"  # trailing zeros kept
    assert format_decimal(1e-7, 8) == "0.00000010"  # never an exponent
    assert format_decimal(0.10757000000000001, 5) == "0.10757"
    assert decimals_of("0.00001") == 5 and decimals_of("1") == 0


def test_fast_decimal_formatting_equals_the_exact_decimal_quantization() -> None:
    """`format_decimal` formats with Python's float formatting where it can; it must give what
    quantizing the double's exact value with ties to even gives, digit for digit."""
    rng = random.Random(13)
    values = [0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 0.125, 0.375, 1e-7, 5e-324, 999999999999999.9]
    values += [k / 2**n for k in range(-40, 41) for n in range(1, 12)]  # exact ties at many places
    values += [rng.uniform(-1e6, 1e6) for _ in range(3000)]
    values += [10 ** rng.uniform(-12, 14.9) for _ in range(3000)]
    values += [round(rng.uniform(0, 100), rng.randint(0, 8)) for _ in range(3000)]
    for value in values:
        for decimals in (0, 1, 2, 5, 8, 13):
            assert format_decimal(value, decimals) == format_decimal_exact(value, decimals), (
                value,
                decimals,
            )
    assert format_decimal(1e20, 2) == format_decimal_exact(1e20, 2) == "100000000000000000000.00"


def test_order_size_floors_to_whole_min_size_steps() -> None:
    # margin 200 at leverage 10 and price 1857.4: 200 * 10 / 1857.4 / 0.00001 = 107677.4 steps
    assert order_size(200.0, 10, 1857.4, "0.00001") == "1.07677"
    assert order_size(1.0, 1, 1857.4, "0.001") == "0.000"  # below one step: size 0


def test_bands_equal_talib_on_every_window_of_real_data() -> None:
    with REAL_KLINES.open() as handle:
        rows = list(csv.DictReader(handle))[:400]
    closes = [float(row["close"]) for row in rows]
    middle = talib.BBANDS(np.array(closes), 20, 2.0, 2.0, 0)[1]
    for end in range(20, len(closes) + 1):
        bands = bollinger_bands(closes[:end], 20, 2.0, 2.0)
        assert bands is not None
        window = closes[end - 20 : end]
        if len(set(window)) == 1:
            assert bands.upper == bands.lower == window[0]
            continue
        expected = talib.BBANDS(np.array(window), 20, 2.0, 2.0, 0)
        assert (bands.upper, bands.middle, bands.lower) == (
            expected[0][-1],
            expected[1][-1],
            expected[2][-1],
        )
        # the last-window rule agrees with a whole-series run up to rounding only
        assert bands.middle == pytest.approx(middle[end - 1], rel=1e-9)
    assert bollinger_bands(closes[:19], 20, 2.0, 2.0) is None


def test_symbol_and_status_figures_follow_the_spec_formulas() -> None:
    long = Position(side="long", entry_price=100.0, size="2.000", margin=40.0, opening_fee=0.2)
    eth = Ledger(allocation=500.0, realized_pnl=-0.2, fill_count=1, position=long)
    btc = Ledger(allocation=500.0, realized_pnl=12.5, fill_count=2, win=1, last_trade_time_ms=7)
    eth_figures, btc_figures = symbol_figures(eth, 103.0), symbol_figures(btc, 50.0)

    assert eth_figures.unrealized_pnl == (103.0 - 100.0) * 2.0
    assert eth_figures.asset_capital == 40.0 + 6.0
    assert eth_figures.profit == -0.2 / 500.0
    assert eth_figures.unrealized_profit == 6.0 / 500.0
    assert btc_figures.asset_capital == 0.0 and btc_figures.unrealized_pnl == 0.0
    assert btc_figures.win_lost_rate == 1.0 and eth_figures.win_lost_rate == 0.0

    status = status_figures(1000.0, [eth_figures, btc_figures])
    assert status.realized_pnl == -0.2 + 12.5
    assert status.current_capital == 1000.0 + (-0.2 + 12.5) - 40.0
    assert status.total_capital == 1000.0 + (-0.2 + 12.5) + 6.0
    assert status.profit == (-0.2 + 12.5) / 1000.0
    assert status.fill_count == 3 and (status.win, status.lost) == (1, 0)
    assert status.win_lost_rate == 1.0 and status.symbol_count == 2
