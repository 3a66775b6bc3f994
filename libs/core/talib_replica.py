"""TA-Lib's last RSI and MACD values for many windows at once, bit for bit, in numpy.

The live path calls TA-Lib on each window as it arrives. A batch path (a backtest over a year of
minute windows) must reach the same decisions, so it needs the same bits: a threshold crossed
by one ulp in one path and not the other turns into a different trade. Calling TA-Lib once per
window costs a Python call per window; here every window is a row and the work runs down the
window axis, one numpy operation across all rows per step, in the exact order of floating-point
operations of the TA-Lib binary the project ships.

That order was read from the binary (the ta-lib 0.8.2 wheel, C library 0.8.1), not from older C
sources, because the two differ in ways that change bits:

* RSI multiplies by the rounded reciprocal ``1.0 / period`` instead of dividing by the period,
  picks gain and loss without a branch (``m = d if 0 < d else +0.0``; the loss gets ``m - d``),
  and writes 0.0 unless ``gain + loss > 0`` (so NaN or 0 there gives 0.0; no 1e-8 band).
* MACD advances every EMA with a fused multiply-add, ``fma(k, x - prev, prev)``, rounded once:
  the library picks a hardware-FMA clone or glibc's ``fma()``, which agree. numpy has no fused
  multiply-add, and separate ``*`` and ``+`` differ from it in the last bit within a few hundred
  steps, so the fma is emulated exactly (Dekker's product, 2Sum, rounding to odd: Boldo and
  Melquiond, "Emulation of a FMA and correctly rounded sums", IEEE TC 2008). That costs about 33
  numpy operations per EMA step instead of 3, which leaves ``macd_last`` no faster than calling
  TA-Lib once per window: it is kept for exactness where windows arrive as one array, while
  ``rsi_last`` is several times faster than the per-window calls.

Each step of the emulation is exact only while no partial product underflows or overflows. A row
holding NaN, an infinity or a magnitude above 2**500, or in which an EMA's step gets a nonzero
input below 2**-900, is computed by a scalar replica with an exact integer fma instead, as are
rows TA-Lib's wrapper would shorten (a leading NaN). Prices never come near those bounds, so that
path is for odd inputs, not for speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats1D = npt.NDArray[np.float64]
Floats2D = npt.NDArray[np.float64]
UInts = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]

# Rows per block: a block's dozen scratch columns stay in the CPU's L2 cache.
BLOCK_ROWS = 16_384
# TA-Lib rejects periods above this.
MAX_PERIOD = 100_000

# Veltkamp's splitter for binary64: 2**27 + 1.
_SPLITTER = 134217729.0
# Rows whose values stay within this magnitude cannot overflow the emulated fma's split.
_MAGNITUDE_LIMIT = 2.0**500
# Positive rows above this floor cannot feed a price EMA a step small enough to underflow.
_POSITIVE_FLOOR = 2.0**-500
# An EMA step smaller than this (and nonzero) could underflow the product's low part.
_TINY_STEP = 2.0**-900
# Guard words: (bits << 1) - 1 of a step, unsigned, is below this exactly when the step is tiny
# and nonzero (the shift drops the sign; the -1 sends both zeros to the top).
_TINY_GUARD = np.uint64((int(np.float64(_TINY_STEP).view(np.uint64)) << 1) - 1)
_NO_GUARD = np.uint64(2**64 - 1)
_INF = float("inf")


def rsi_last(closes: Floats2D, period: int) -> Floats1D:
    """``talib.RSI(row, timeperiod=period)[-1]`` for every row of ``closes``, bit for bit.

    Default TA-Lib settings only: unstable period 0 and default compatibility.
    """
    rows, window = _shape(closes)
    if not 2 <= period <= MAX_PERIOD:
        raise ValueError(f"RSI period must be within [2, {MAX_PERIOD}], not {period}")
    if window < period + 1:
        raise ValueError(f"RSI({period}) needs windows of at least {period + 1}, not {window}")
    out = np.empty(rows, dtype=np.float64)
    work = _Scratch(min(rows, BLOCK_ROWS), window, closes)
    with np.errstate(all="ignore"):  # inf - inf and 0 / 0 are part of TA-Lib's results
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, rows)
            _rsi_block(work.columns(closes[start:stop]), period, out[start:stop], work)
    # TA-Lib's wrapper starts each series at its first non-NaN value.
    for row in np.flatnonzero(np.isnan(closes[:, 0])):
        out[row] = _rsi_row(closes[row].tolist(), period)
    return out


def macd_last(
    closes: Floats2D, fast: int, slow: int, signal: int
) -> tuple[Floats1D, Floats1D, Floats1D]:
    """The last (macd, signal, hist) of ``talib.MACD(row, fast, slow, signal)`` for every row.

    Bit for bit, with TA-Lib's default settings. Unlike TA-Lib, which swaps a fast period above
    the slow one, such a call is refused: it is always a caller's mistake here.
    """
    rows, window = _shape(closes)
    if not 2 <= fast < slow <= MAX_PERIOD:
        raise ValueError(f"MACD needs 2 <= fast < slow <= {MAX_PERIOD}, not {fast}, {slow}")
    if not 1 <= signal <= MAX_PERIOD:
        raise ValueError(f"MACD signal period must be within [1, {MAX_PERIOD}], not {signal}")
    if window < slow + signal - 1:
        raise ValueError(
            f"MACD({fast}, {slow}, {signal}) needs windows of at least {slow + signal - 1}, "
            f"not {window}"
        )
    macd = np.empty(rows, dtype=np.float64)
    sig = np.empty(rows, dtype=np.float64)
    hist = np.empty(rows, dtype=np.float64)
    exact = np.zeros(rows, dtype=np.bool_)
    work = _Scratch(min(rows, BLOCK_ROWS), window, closes)
    with np.errstate(all="ignore"):  # rows outside the emulation's range are recomputed below
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, rows)
            exact[start:stop] = _macd_block(
                work.columns(closes[start:stop]),
                fast,
                slow,
                signal,
                (macd[start:stop], sig[start:stop], hist[start:stop]),
                work,
            )
    for row in np.flatnonzero(exact):
        macd[row], sig[row], hist[row] = _macd_row(closes[row].tolist(), fast, slow, signal)
    return macd, sig, hist


def _shape(closes: Floats2D) -> tuple[int, int]:
    if not isinstance(closes, np.ndarray) or closes.ndim != 2 or closes.dtype != np.float64:
        raise ValueError("closes must be a 2-D float64 array, one window per row")
    rows, window = closes.shape
    return int(rows), int(window)


class _Scratch:
    """Buffers reused by every block of one call: allocating them per step would cost more than
    the arithmetic."""

    def __init__(self, rows: int, window: int, closes: Floats2D) -> None:
        self.floats = np.empty((13, rows), dtype=np.float64)
        self.mask = np.empty(rows, dtype=np.bool_)
        self.guard = np.empty(rows, dtype=np.uint64)
        # A column of a C-ordered block is strided; steps read each column several times, so
        # such blocks are first copied column-major. Sliding-window views need no copy.
        columns_contiguous = closes.strides[0] == closes.itemsize
        self.transposed = None if columns_contiguous else np.empty((window, rows))

    def columns(self, block: Floats2D) -> Floats2D:
        """The block's columns as rows, each one contiguous."""
        if self.transposed is None:
            return block.T
        columns = self.transposed[:, : block.shape[0]]
        np.copyto(columns, block.T)
        return columns

    def take(self, n: int) -> list[Floats1D]:
        return [buffer[:n] for buffer in self.floats]


def _rsi_block(columns: Floats2D, period: int, out: Floats1D, work: _Scratch) -> None:
    n = out.shape[0]
    d, m, t, gain, loss = work.take(n)[:5]
    positive = work.mask[:n]
    inv = 1.0 / period
    weight = float(period - 1)
    gain.fill(0.0)
    loss.fill(0.0)
    for j in range(1, columns.shape[0]):
        np.subtract(columns[j], columns[j - 1], out=d)
        # TA-Lib's m is +0.0 unless 0 < d. fmax gives d for -0.0 and 0.0 for NaN; the sums
        # below cannot tell a -0.0 from a +0.0 there, as gain is never -0.0.
        np.fmax(d, 0.0, out=m)
        np.subtract(m, d, out=t)
        if j <= period:
            np.add(gain, m, out=gain)
            np.add(loss, t, out=loss)
            if j == period:
                np.multiply(gain, inv, out=gain)
                np.multiply(loss, inv, out=loss)
        else:
            np.multiply(gain, weight, out=gain)
            np.add(gain, m, out=gain)
            np.multiply(gain, inv, out=gain)
            np.multiply(loss, weight, out=loss)
            np.add(loss, t, out=loss)
            np.multiply(loss, inv, out=loss)
    np.add(loss, gain, out=d)
    np.greater(d, 0.0, out=positive)
    np.divide(gain, d, out=t)
    np.multiply(t, 100.0, out=t)
    out.fill(0.0)
    np.copyto(out, t, where=positive)


@dataclass(frozen=True, slots=True)
class _Smoothing:
    """An EMA factor k = 2 / (period + 1), with its Veltkamp halves for the exact product."""

    k: float
    high: float
    low: float

    @classmethod
    def of(cls, period: int) -> _Smoothing:
        k = 2.0 / float(period + 1)
        c = k * _SPLITTER
        high = c - (c - k)
        return cls(k, high, k - high)


class _FusedEma:
    """``prev = fma(k, x - prev, prev)`` across a block of rows, rounded once as TA-Lib does.

    Exact while the step ``x - prev`` is zero or between 2**-900 and about 2**996 in magnitude
    (no partial product under- or overflows) and prev is not -0.0; callers guard the step.
    """

    def __init__(self, buffers: list[Floats1D]) -> None:
        self.d, self.ph, self.dh, self.dl, self.pl, self.s, self.t, self.u = buffers
        self.w_bits = self.u.view(np.int64)
        self.err_bits = self.dh.view(np.int64)
        self.t_bits = self.t.view(np.int64)
        self.d_bits = self.d.view(np.uint64)
        self.u_bits = self.u.view(np.uint64)

    def step(
        self, prev: Floats1D, x: Floats1D, k: _Smoothing, inexact: Bools, guard: UInts | None
    ) -> None:
        d, ph, dh, dl, pl, s, t, u = (
            self.d,
            self.ph,
            self.dh,
            self.dl,
            self.pl,
            self.s,
            self.t,
            self.u,
        )
        np.subtract(x, prev, out=d)
        if guard is not None:  # smallest (bits << 1) - 1 seen: tiny nonzero steps stand out
            np.left_shift(self.d_bits, np.uint64(1), out=self.u_bits)
            np.subtract(self.u_bits, np.uint64(1), out=self.u_bits)
            np.minimum(guard, self.u_bits, out=guard)
        # ph + pl == k * d exactly (Dekker): split d in halves of 26 bits, multiply piecewise.
        np.multiply(d, k.k, out=ph)
        np.multiply(d, _SPLITTER, out=t)
        np.subtract(t, d, out=u)
        np.subtract(t, u, out=dh)
        np.subtract(d, dh, out=dl)
        np.multiply(dh, k.high, out=t)
        np.subtract(ph, t, out=pl)
        np.multiply(dl, k.high, out=t)
        np.subtract(pl, t, out=pl)
        np.multiply(dh, k.low, out=t)
        np.subtract(pl, t, out=pl)
        np.multiply(dl, k.low, out=t)
        np.subtract(t, pl, out=pl)
        # s + e == prev + ph exactly (2Sum); e lands in dl.
        np.add(prev, ph, out=s)
        np.subtract(s, prev, out=u)
        np.subtract(s, u, out=t)
        np.subtract(prev, t, out=t)
        np.subtract(ph, u, out=u)
        np.add(t, u, out=dl)
        # w = e + pl rounded to odd: rounded to nearest, then, if inexact and even, moved one
        # ulp towards the exact sum. Rounding s + w once then rounds prev + k * d correctly.
        e = dl
        np.add(e, pl, out=u)  # w, with its rounding error in dh (2Sum again)
        np.subtract(u, e, out=t)
        np.subtract(u, t, out=dh)
        np.subtract(e, dh, out=dh)
        np.subtract(pl, t, out=t)
        np.add(dh, t, out=dh)
        np.not_equal(dh, 0.0, out=inexact)
        np.bitwise_xor(self.err_bits, self.w_bits, out=self.t_bits)
        np.right_shift(self.t_bits, 63, out=self.t_bits)  # -1 when the error points to zero
        np.add(self.w_bits, self.t_bits, out=self.t_bits)
        np.bitwise_or(self.t_bits, 1, out=self.t_bits)
        np.copyto(self.w_bits, self.t_bits, where=inexact)
        np.add(s, u, out=prev)


def _macd_block(
    columns: Floats2D,
    fast: int,
    slow: int,
    signal: int,
    out: tuple[Floats1D, Floats1D, Floats1D],
    work: _Scratch,
) -> Bools:
    """Fill ``out`` for one block; return the rows the emulation could not vouch for."""
    out_macd, out_signal, out_hist = out
    n = out_macd.shape[0]
    buffers = work.take(n)
    prev_fast, prev_slow, prev_signal, total, macd = buffers[:5]
    ema = _FusedEma(buffers[5:13])
    inexact = work.mask[:n]
    kf, ks, kg = _Smoothing.of(fast), _Smoothing.of(slow), _Smoothing.of(signal)
    window = columns.shape[0]

    lowest = columns.min(axis=0)
    highest = columns.max(axis=0)
    fallback: Bools = ~((lowest >= -_MAGNITUDE_LIMIT) & (highest <= _MAGNITUDE_LIMIT))
    # Positive rows keep both price EMAs within the row's range, so their steps need no guard.
    prices = bool(np.all((lowest >= _POSITIVE_FLOOR) | fallback))
    guard = work.guard[:n]
    guard.fill(_NO_GUARD)
    price_guard = None if prices else guard

    # Seeds: the slow EMA's mean accumulates its leading bars first, then both means share the
    # fast window's bars, each sum starting from 0.0.
    total.fill(0.0)
    for j in range(slow - fast):
        np.add(total, columns[j], out=total)
    prev_fast.fill(0.0)
    for j in range(slow - fast, slow):
        np.add(prev_fast, columns[j], out=prev_fast)
        np.add(total, columns[j], out=total)
    np.divide(total, float(slow), out=prev_slow)
    np.divide(prev_fast, float(fast), out=prev_fast)
    np.subtract(prev_fast, prev_slow, out=macd)
    np.add(macd, 0.0, out=prev_signal)

    def advance(j: int) -> None:
        ema.step(prev_fast, columns[j], kf, inexact, price_guard)
        ema.step(prev_slow, columns[j], ks, inexact, price_guard)
        np.subtract(prev_fast, prev_slow, out=macd)

    if signal == 1:  # TA-Lib's signal line is then the MACD line itself
        for j in range(slow, window):
            advance(j)
        np.copyto(out_macd, macd)
        np.copyto(out_signal, macd)
        np.subtract(macd, macd, out=out_hist)
    else:
        for j in range(slow, slow + signal - 1):
            advance(j)
            np.add(prev_signal, macd, out=prev_signal)
        np.divide(prev_signal, float(signal), out=prev_signal)
        for j in range(slow + signal - 1, window):
            advance(j)
            ema.step(prev_signal, macd, kg, inexact, guard)
        np.copyto(out_macd, macd)
        np.copyto(out_signal, prev_signal)
        np.subtract(macd, prev_signal, out=out_hist)

    fallback |= guard < _TINY_GUARD
    return fallback


def _first_valid(row: list[float]) -> list[float]:
    """The row as TA-Lib's wrapper passes it on: from its first non-NaN value (or its last)."""
    start = next((i for i, value in enumerate(row) if value == value), len(row) - 1)
    return row[start:]


def _rsi_row(row: list[float], period: int) -> float:
    """One row through TA-Lib's RSI, with Python floats (IEEE doubles, no fused operations)."""
    row = _first_valid(row)
    if len(row) < period + 1:
        return float("nan")
    inv = 1.0 / period
    weight = float(period - 1)
    gain = 0.0
    loss = 0.0
    for j in range(1, len(row)):
        d = row[j] - row[j - 1]
        m = d if 0.0 < d else 0.0
        if j <= period:
            gain = gain + m
            loss = loss + (m - d)
            if j == period:
                gain = gain * inv
                loss = loss * inv
        else:
            gain = (gain * weight + m) * inv
            loss = ((m - d) + loss * weight) * inv
    total = loss + gain
    return (gain / total) * 100.0 if total > 0.0 else 0.0


def _macd_row(row: list[float], fast: int, slow: int, signal: int) -> tuple[float, float, float]:
    """One row through TA-Lib's MACD, each EMA step an exact fma."""
    row = _first_valid(row)
    if len(row) < slow + signal - 1:
        nan = float("nan")
        return nan, nan, nan
    kf, ks, kg = (2.0 / float(period + 1) for period in (fast, slow, signal))
    total = 0.0
    for value in row[: slow - fast]:
        total += value
    prev_fast = 0.0
    for value in row[slow - fast : slow]:
        prev_fast += value
        total += value
    prev_slow = total / float(slow)
    prev_fast = prev_fast / float(fast)
    macd = prev_fast - prev_slow
    prev_signal = 0.0 + macd
    for j, value in enumerate(row[slow:], start=slow):
        prev_fast = _fma(kf, value - prev_fast, prev_fast)
        prev_slow = _fma(ks, value - prev_slow, prev_slow)
        macd = prev_fast - prev_slow
        if signal == 1:
            continue
        if j < slow + signal - 1:
            prev_signal += macd
            if j == slow + signal - 2:
                prev_signal = prev_signal / float(signal)
        else:
            prev_signal = _fma(kg, macd - prev_signal, prev_signal)
    if signal == 1:
        return macd, macd, macd - macd
    return macd, prev_signal, macd - prev_signal


def _fma(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once, as C's fma(); ``a`` is finite and within (0, 1]."""
    if not (abs(b) < _INF and abs(c) < _INF):
        return a * b + c  # a * b cannot overflow, so infinities and NaNs fall out alike
    an, ad = a.as_integer_ratio()
    bn, bd = b.as_integer_ratio()
    cn, cd = c.as_integer_ratio()
    numerator = an * bn * cd + cn * ad * bd
    if numerator == 0:
        # Signed zeros add as IEEE says when the product is a zero; a cancellation is +0.0.
        return a * b + c if b == 0.0 else 0.0
    try:
        return numerator / (ad * bd * cd)  # int / int is correctly rounded
    except OverflowError:
        return _INF if numerator > 0 else -_INF
