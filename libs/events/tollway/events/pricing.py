"""Prices and the one cost-rounding rule.

Amounts are integer micro-units of a bucket's unit (1 unit = 1,000,000 micro). Prices are
micro-units per 1M tokens. Cost is computed once per attempt over the exact integer product and
rounded *up* to the next micro-unit, so a charge is never below the true price and the same
tokens always cost the same.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MICRO = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


class Price(BaseModel):
    """Micro-units of the bucket's unit per 1M tokens."""

    model_config = ConfigDict(frozen=True)

    input: int = Field(ge=0)
    output: int = Field(ge=0)
    cached_input: int | None = Field(default=None, ge=0)


class Usage(BaseModel):
    """Tokens an upstream reported (or that were counted, when ``estimated``)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def cost_micro(usage: Usage, price: Price) -> int:
    """Return the cost of ``usage`` at ``price`` in micro-units, rounded up once."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    numerator = (
        (usage.input_tokens - cached) * price.input
        + cached * cached_price
        + usage.output_tokens * price.output
    )
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


def to_micro(units: str | int) -> int:
    """Parse a decimal amount of units (``"12.5"``) into micro-units exactly, without floats."""
    text = str(units).strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not whole.isdigit() and whole != "":
        raise ValueError(f"not a decimal amount: {text!r}")
    if frac and (not frac.isdigit() or len(frac) > 6):
        raise ValueError(f"at most 6 decimal places: {text!r}")
    micro = int(whole or "0") * MICRO + int(frac.ljust(6, "0") or "0")
    return -micro if negative else micro


def format_micro(micro: int) -> str:
    """Render micro-units as a decimal string with six places (``"12.500000"``)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
