"""The batch RSI and MACD must be TA-Lib's, bit for bit, on every window.

TA-Lib called on one window at a time is the reference. Every comparison is on the bits
(signed zeros included); NaN matches NaN whatever its payload, as TA-Lib's NaNs carry none that
anything reads. Windows come from random walks at every price scale a market has, from real minute
closes, and from shapes built to hit every branch: flat, a single ulp, alternating, monotone, a
jump then a long flat tail (which drives the MACD signal line into the subnormal range), and
values no price takes (NaN, infinities, zeros, negatives, huge and tiny magnitudes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import talib
from numpy.lib.stride_tricks import sliding_window_view

from libs.core import talib_replica
from libs.core.talib_replica import macd_last, rsi_last

try:  # not a dependency of the project: its property test runs where it happens to be installed
    import hypothesis
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ModuleNotFoundError:
    HAVE_HYPOTHESIS = False

Floats = npt.NDArray[np.float64]
DATA = Path(__file__).parents[1] / "data"
RSI_PERIODS = (2, 3, 14, 50)
MACD_PERIODS = ((2, 3, 1), (12, 26, 9), (5, 35, 5), (3, 10, 2))
SCALES = (1e-8, 3e-4, 1.0, 250.0, 1e5)


def talib_rsi(closes: Floats, period: int) -> Floats:
    return np.array([talib.RSI(np.array(row), timeperiod=period)[-1] for row in closes])


def talib_macd(closes: Floats, fast: int, slow: int, signal: int) -> tuple[Floats, ...]:
    lasts = [[line[-1] for line in talib.MACD(np.array(row), fast, slow, signal)] for row in closes]
    return tuple(np.array(column) for column in zip(*lasts, strict=True))


def assert_same_bits(got: Floats, want: Floats) -> None:
    assert got.shape == want.shape
    nan = np.isnan(got) & np.isnan(want)
    differ = (got.view(np.int64) != want.view(np.int64)) & ~nan
    rows = np.flatnonzero(differ)
    assert rows.size == 0, f"{rows.size} of {got.size} differ, rows {rows[:5]}: {got[rows[:5]]!r}"


def check_rsi(closes: Floats, period: int) -> None:
    assert_same_bits(rsi_last(closes, period), talib_rsi(closes, period))


def check_macd(closes: Floats, fast: int, slow: int, signal: int) -> None:
    got = macd_last(closes, fast, slow, signal)
    for line, want in zip(got, talib_macd(closes, fast, slow, signal), strict=True):
        assert_same_bits(line, want)


def random_walk(rng: np.random.Generator, length: int, scale: float, volatility: float) -> Floats:
    walk = scale * np.exp(np.cumsum(rng.normal(0.0, volatility, length)))
    return np.asarray(walk, dtype=np.float64)


def windows(series: Floats, width: int) -> Floats:
    return sliding_window_view(series, width)


def real_closes() -> Floats:
    table = np.genfromtxt(DATA / "klines-1m-3000.csv", delimiter=",", names=True)
    return np.asarray(table["close"], dtype=np.float64)


def rsi_widths(period: int) -> tuple[int, ...]:
    return (period + 1, period + 2, 2 * period + 5, 300)


def macd_widths(slow: int, signal: int) -> tuple[int, ...]:
    shortest = slow + signal - 1
    return (shortest, shortest + 1, 100, 300)


@pytest.mark.parametrize("period", RSI_PERIODS)
def test_rsi_on_random_walks(period: int) -> None:
    rng = np.random.default_rng(period)
    for scale in SCALES:
        for width in rsi_widths(period):
            for volatility in (1e-4, 3e-3, 0.1):
                check_rsi(windows(random_walk(rng, width + 150, scale, volatility), width), period)


@pytest.mark.parametrize(("fast", "slow", "signal"), MACD_PERIODS)
def test_macd_on_random_walks(fast: int, slow: int, signal: int) -> None:
    rng = np.random.default_rng(slow)
    for scale in SCALES:
        for width in macd_widths(slow, signal):
            for volatility in (1e-4, 3e-3, 0.1):
                series = random_walk(rng, width + 150, scale, volatility)
                check_macd(windows(series, width), fast, slow, signal)


def test_on_tick_rounded_walks() -> None:
    """Prices on a tick grid repeat and tie, as exchange prices do."""
    rng = np.random.default_rng(7)
    for ticks in (2, 4, 8):
        series = np.round(random_walk(rng, 700, 50.0, 2e-3), ticks)
        for period in RSI_PERIODS:
            check_rsi(windows(series, 120), period)
        for fast, slow, signal in MACD_PERIODS:
            check_macd(windows(series, 120), fast, slow, signal)


def test_on_real_minute_closes() -> None:
    closes = real_closes()
    for period in RSI_PERIODS:
        for width in rsi_widths(period):
            check_rsi(windows(closes, width), period)
    for fast, slow, signal in MACD_PERIODS:
        for width in macd_widths(slow, signal):
            check_macd(windows(closes, width), fast, slow, signal)


def shaped_windows(width: int) -> Floats:
    """Rows built to hit TA-Lib's branches: flats, single ulps, alternations, monotone runs."""
    rows: list[npt.ArrayLike] = []
    for level in (1e-8, 0.00162008, 0.1, 1.0, 3.0, 64.0, 12345.678, 1e5):
        flat = np.full(width, level)
        rows.append(flat)
        for at in sorted({1, 2, width // 2, width - 2, width - 1}):
            for direction in (np.inf, -np.inf):
                moved = flat.copy()
                moved[at:] = np.nextafter(level, direction)
                rows.append(moved)
                spike = flat.copy()
                spike[at] = np.nextafter(level, direction)
                rows.append(spike)
        steps = np.arange(width)
        for step in (np.nextafter(level, np.inf) - level, level * 1e-3, level * 0.5):
            rows.append(level + step * (steps % 2))  # alternating up and down
            rows.append(level + step * steps)  # all up
            rows.append(level + step * (width - steps))  # all down
        rows.append(level * 1.01**steps)
        rows.append(level * 0.99**steps)
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("width", [4, 15, 16, 51, 52, 100])
def test_rsi_on_shaped_windows(width: int) -> None:
    for period in RSI_PERIODS:
        if width >= period + 1:
            check_rsi(shaped_windows(width), period)


@pytest.mark.parametrize("width", [3, 4, 34, 39, 40, 100])
def test_macd_on_shaped_windows(width: int) -> None:
    for fast, slow, signal in MACD_PERIODS:
        if width >= slow + signal - 1:
            check_macd(shaped_windows(width), fast, slow, signal)


def test_macd_when_a_flat_tail_drives_the_signal_line_subnormal() -> None:
    """After a move, a long flat tail makes the MACD line exactly 0 and the signal line decays
    towards 0 through the subnormal range, where the emulated fma would lose bits."""
    jump = np.concatenate([np.linspace(1.0, 2.0, 20), np.full(1200, 1.0)])
    drop = np.concatenate([np.linspace(5.0, 0.25, 30), np.full(1190, 0.25)])
    closes = np.array([jump, drop, jump[::-1], drop[::-1]])
    for fast, slow, signal in ((2, 3, 2), (2, 3, 3), (3, 4, 2), *MACD_PERIODS):
        check_macd(closes, fast, slow, signal)
        check_macd(windows(jump, 700), fast, slow, signal)


def odd_windows(rng: np.random.Generator, width: int, count: int) -> Floats:
    """Values no price takes, in every position: TA-Lib's answer is still the reference."""
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.5, 1e300, -1e300, 1e-300, 5e-324])
    rows = np.repeat(random_walk(rng, width, 10.0, 0.01)[None, :], count, axis=0)
    for row in rows:
        spots = rng.integers(0, width, int(rng.integers(1, 4)))
        row[spots] = rng.choice(specials, spots.size)
    rows[0, :3] = np.nan  # a leading NaN: TA-Lib's wrapper starts after it
    rows[1, :] = np.nan
    rows[2, : width - 2] = np.nan  # too short once the NaNs are dropped
    rows[3] = -rows[3]
    rows[4] = rng.normal(0.0, 1.0, width)  # signed, crossing zero
    rows[5] = 0.0
    rows[6] = -0.0
    rows[7] = 1e300 * rng.random(width)  # RSI's gain overflows
    rows[8] = 1e-310 * rng.random(width)  # subnormal
    rows[9] = np.where(np.arange(width) % 2 == 0, -0.0, 0.0)
    return rows


def test_on_odd_values() -> None:
    rng = np.random.default_rng(11)
    for width in (4, 40, 60):
        closes = odd_windows(rng, width, 60)
        for period in RSI_PERIODS:
            if width >= period + 1:
                check_rsi(closes, period)
        for fast, slow, signal in MACD_PERIODS:
            if width >= slow + signal - 1:
                check_macd(closes, fast, slow, signal)


def layouts(closes: Floats) -> Iterator[Floats]:
    """The same windows as a sliding view, C and Fortran copies, and a view with gaps."""
    yield closes
    yield np.ascontiguousarray(closes)
    yield np.asfortranarray(closes)
    padded = np.zeros((closes.shape[0], 2 * closes.shape[1]))
    padded[:, ::2] = closes
    yield padded[:, ::2]


def test_layout_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    closes = windows(random_walk(rng, 900, 100.0, 3e-3), 120)
    cases: list[Callable[[Floats], tuple[Floats, ...]]] = [
        lambda c: (rsi_last(c, 14),),
        lambda c: macd_last(c, 12, 26, 9),
    ]
    for case in cases:
        reference = case(closes)
        for layout in layouts(closes):
            for got, want in zip(case(layout), reference, strict=True):
                assert_same_bits(got, want)


def test_blocks_do_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many blocks, a ragged last one, and a row needing the exact path in the middle of one."""
    rng = np.random.default_rng(5)
    closes = np.array(windows(random_walk(rng, 300, 100.0, 3e-3), 60))
    closes[100, 30] = np.nan
    whole = (rsi_last(closes, 14), *macd_last(closes, 12, 26, 9))
    monkeypatch.setattr(talib_replica, "BLOCK_ROWS", 17)
    blocked = (rsi_last(closes, 14), *macd_last(closes, 12, 26, 9))
    for got, want in zip(blocked, whole, strict=True):
        assert_same_bits(got, want)
    check_rsi(closes, 14)
    check_macd(closes, 12, 26, 9)


def test_no_rows() -> None:
    closes = np.empty((0, 40))
    assert rsi_last(closes, 14).shape == (0,)
    assert all(line.shape == (0,) for line in macd_last(closes, 12, 26, 9))


@pytest.mark.parametrize(
    "call",
    [
        lambda: rsi_last(np.ones((3, 14)), 14),
        lambda: rsi_last(np.ones((3, 14)), 1),
        lambda: rsi_last(np.ones((3, 200_000)), 100_001),
        lambda: rsi_last(np.ones(20), 14),
        lambda: rsi_last(np.ones((3, 20), dtype=np.float32), 14),
        lambda: macd_last(np.ones((3, 33)), 12, 26, 9),
        lambda: macd_last(np.ones((3, 40)), 26, 12, 9),
        lambda: macd_last(np.ones((3, 40)), 12, 12, 9),
        lambda: macd_last(np.ones((3, 40)), 1, 12, 9),
        lambda: macd_last(np.ones((3, 40)), 12, 26, 0),
    ],
)
def test_preconditions(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


def test_shortest_windows_are_accepted() -> None:
    assert rsi_last(np.ones((2, 15)), 14).shape == (2,)
    assert macd_last(np.ones((2, 34)), 12, 26, 9)[0].shape == (2,)
    assert macd_last(np.ones((2, 3)), 2, 3, 1)[0].shape == (2,)


def libm_fma() -> Callable[[float, float, float], float]:
    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare the emulated fma with")
    fma = ctypes.CDLL(name).fma
    fma.restype = ctypes.c_double
    fma.argtypes = [ctypes.c_double] * 3
    return fma


def test_emulated_fma_rounds_once() -> None:
    """The emulated fma against the C library's, on steps built around rounding ties."""
    fma = libm_fma()
    rng = np.random.default_rng(13)
    n = 20_000
    for period in (1, 2, 3, 5, 9, 12, 26, 99_999):
        smoothing = talib_replica._Smoothing.of(period)
        bits = rng.integers(1, 54, n)
        prev = np.ldexp(np.floor(rng.random(n) * 2.0**bits) + 1, rng.integers(-60, 60, n) - bits)
        prev *= rng.choice([-1.0, 1.0], n)
        gap = np.spacing(np.abs(prev))
        half_gaps = rng.integers(-6, 7, n) / 2
        nudge = rng.integers(-3, 4, n) * 2.0 ** -rng.integers(20, 60, n).astype(np.float64)
        step = gap * (half_gaps + nudge) / smoothing.k  # k * step lands on or near a tie
        wide = rng.random(n) < 0.5
        step[wide] = (
            prev[wide]
            * rng.normal(0.0, 1.0, wide.sum())
            * 2.0 ** -rng.integers(-3, 80, wide.sum()).astype(np.float64)
        )
        cancel = rng.random(n) < 0.1
        step[cancel] = -prev[cancel] / smoothing.k * (1 + rng.integers(-4, 5, cancel.sum()) * 2e-16)
        step[rng.random(n) < 0.02] = 0.0
        x = prev + step  # the EMA's input: the step is x - prev again, rounded
        want = np.array(
            [
                fma(smoothing.k, xi - pi, pi)
                for xi, pi in zip(x.tolist(), prev.tolist(), strict=True)
            ]
        )
        got = prev.copy()
        ema = talib_replica._FusedEma([np.empty(n) for _ in range(8)])
        ema.step(got, x, smoothing, np.empty(n, dtype=np.bool_), None)
        assert_same_bits(got, want)


def check_both(closes: Floats, period: int, fast: int, slow: int, signal: int) -> None:
    if closes.shape[1] >= period + 1:
        check_rsi(closes, period)
    if closes.shape[1] >= slow + signal - 1:
        check_macd(closes, fast, slow, signal)


def test_random_shapes_and_parameters() -> None:
    """A seeded property test: any parameters, any window, prices of any shape."""
    rng = np.random.default_rng(17)
    for _ in range(120):
        width = int(rng.integers(3, 160))
        period = int(rng.integers(2, 60))
        fast = int(rng.integers(2, 20))
        slow = int(rng.integers(fast + 1, fast + 30))
        signal = int(rng.integers(1, 12))
        scale = float(10.0 ** rng.uniform(-8, 5))
        series = random_walk(rng, width + 40, scale, float(10.0 ** rng.uniform(-5, -0.5)))
        if rng.random() < 0.3:
            series = np.round(series / scale, int(rng.integers(0, 4))) * scale
        if rng.random() < 0.2:
            series[rng.integers(0, series.size, 5)] = series[0]
        check_both(windows(series, width), period, fast, slow, signal)


if not HAVE_HYPOTHESIS:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_hypothesis_property() -> None:
        pass

else:
    finite_prices = st.floats(min_value=1e-8, max_value=1e5, allow_nan=False)
    any_values = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)

    @hypothesis.settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @hypothesis.given(
        values=st.lists(
            st.one_of(finite_prices, finite_prices, any_values), min_size=3, max_size=70
        ),
        period=st.integers(2, 30),
        fast=st.integers(2, 12),
        extra=st.integers(1, 20),
        signal=st.integers(1, 10),
        repeat=st.booleans(),
    )
    def test_hypothesis_property(
        values: list[float], period: int, fast: int, extra: int, signal: int, repeat: bool
    ) -> None:
        series = np.array(values * 3 if repeat else values, dtype=np.float64)
        width = max(3, series.size // 2)
        check_both(windows(series, width), period, fast, fast + extra, signal)
