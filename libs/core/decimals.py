"""Plain-decimal formatting of sizes and prices (SPEC 2.1 rule 13): never an exponent, trailing
zeros kept, correctly rounded from the double's exact value with ties to even."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal


def decimals_of(step: str) -> int:
    """Decimals of a plain decimal string: `"0.00001"` -> 5, `"1"` -> 0."""
    return len(step.split(".", 1)[1]) if "." in step else 0


def format_decimal(value: float, decimals: int) -> str:
    quantum = Decimal(1).scaleb(-decimals)
    return f"{Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN):f}"
