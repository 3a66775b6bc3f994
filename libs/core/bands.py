"""Bollinger Bands of one update, exactly as SPEC 3.1 rule 2 defines them.

TA-Lib is the reference: the bands of an update are the last value of `BBANDS` over exactly the
last `period` closes, so live, replay and backtest agree to the bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import talib
from talib._ta_lib import MA_Type


@dataclass(frozen=True, slots=True)
class Bands:
    middle: float
    upper: float
    lower: float

    @property
    def zero_width(self) -> bool:
        return self.upper == self.lower


def bollinger_bands(
    closes: Sequence[float] | npt.NDArray[np.float64], period: int, nbdev_up: float, nbdev_dn: float
) -> Bands | None:
    """None while fewer than `period` closes exist; the last `period` closes are used, oldest
    first. Equal closes give zero width by definition (not whatever rounding TA-Lib produces)."""
    if len(closes) < period:
        return None
    window = np.asarray(closes[-period:], dtype=np.float64)
    values = window.tolist()  # a short list compares faster in Python than numpy's set-up
    first = values[0]
    if all(value == first for value in values):
        return Bands(middle=first, upper=first, lower=first)
    upper, middle, lower = talib.BBANDS(
        window,
        timeperiod=period,
        nbdevup=nbdev_up,
        nbdevdn=nbdev_dn,
        matype=MA_Type.SMA,
    )
    return Bands(middle=float(middle[-1]), upper=float(upper[-1]), lower=float(lower[-1]))


def band_conditions(price: float, bands: Bands | None) -> tuple[bool, bool]:
    """(buy, sell): price below the lower band, above the upper band. Neither holds without
    bands or at zero width (SPEC 3.1 rule 2)."""
    if bands is None or bands.zero_width:
        return False, False
    return price < bands.lower, price > bands.upper


def percent_b(close: float, bands: Bands) -> float | None:
    """pb = (close - lower) / (upper - lower); undefined (null) at zero width."""
    if bands.zero_width:
        return None
    return (close - bands.lower) / (bands.upper - bands.lower)


def band_width_pct(bands: Bands) -> float:
    """pw = (upper - lower) / middle * 100; 0 at zero width."""
    if bands.zero_width:
        return 0.0
    return (bands.upper - bands.lower) / bands.middle * 100
