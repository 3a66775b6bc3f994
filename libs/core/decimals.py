"""Plain-decimal formatting of sizes and prices (SPEC 2.1 rule 13): never an exponent, trailing
zeros kept, correctly rounded from the double's exact value with ties to even."""

from __future__ import annotations

import sys
from decimal import ROUND_HALF_EVEN, Decimal

# Python's own float formatting (David Gay's dtoa, used where `float_repr_style` is "short") is
# correctly rounded from the double's exact value with ties to even, exactly as the Decimal path
# below, and ten times faster. It is used where Decimal's 28 digits certainly hold the result
# (Decimal raises beyond them, and that error is kept).
_FAST = sys.float_repr_style == "short"
_FAST_LIMIT = 1e15
_FAST_DECIMALS = 13


def decimals_of(step: str) -> int:
    """Decimals of a plain decimal string: `"0.00001"` -> 5, `"1"` -> 0."""
    return len(step.split(".", 1)[1]) if "." in step else 0


def format_decimal(value: float, decimals: int) -> str:
    if _FAST and -_FAST_LIMIT < value < _FAST_LIMIT and 0 <= decimals <= _FAST_DECIMALS:
        return f"{value:.{decimals}f}"
    return format_decimal_exact(value, decimals)


def format_decimal_exact(value: float, decimals: int) -> str:
    """The definition: the double's exact value, quantized with ties to even."""
    quantum = Decimal(1).scaleb(-decimals)
    return f"{Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN):f}"
