"""Prices and the one cost-rounding rule.

Amounts are integer micro-units of a bucket's unit (1 unit = 1,000,000 micro). Prices are
micro-units per 1M tokens. Cost is computed once per attempt over the exact integer product and
rounded *up* to the next micro-unit, so a charge is never below the true price and the same
tokens always cost the same. Every money input is parsed by :func:`parse_amount`, and its
ranges are the constants below.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MICRO = 1_000_000
DECIMALS = 6
TOKENS_PER_PRICE_UNIT = 1_000_000

# The ranges every amount lives in. Postgres stores amounts and balances as bigint (at most
# 2**63 - 1, about 9.2e18 micro), so the limits leave two orders of magnitude of headroom:
# - one money input (a top-up, adjustment, reversal, budget, task budget, research cap, a price
#   per 1M tokens) moves at most MAX_AMOUNT_MICRO (1e9 units);
# - a credit (top-up, positive adjustment) may not take a bucket above MAX_BALANCE_MICRO
#   (1e11 units);
# - a tenant's top-up source ``system/topup/<account>`` may not fall below -MAX_SOURCE_MICRO
#   (1e12 units topped up, net of reversals, over the account's whole life).
# Each is checked by the ledger against state of the account's own partition only, so the same
# log always gives the same decisions (replay); the edge checks them first to answer 400.
MAX_AMOUNT_MICRO = 10**15
MAX_BALANCE_MICRO = 10**17
MAX_SOURCE_MICRO = 10**18
MAX_AMOUNT_CHARS = 40  # longer than any amount in range with six decimals and a sign

# A bucket's name and a unit's, as every service accepts them (a unit is anything printable:
# "credit", "USD", "CNY"; never a control character, which Postgres text or a log would mangle).
BUCKET_PATTERN = r"^[a-z0-9_-]{1,32}$"
UNIT_PATTERN = r"^[^\x00-\x1f\x7f]{1,16}$"

Sign = Literal["positive", "non_negative", "non_zero"]


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


class AmountError(ValueError):
    """A money (or count) input that is not an exact amount in range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        """``message`` says what is wrong, without repeating the field's name."""
        super().__init__(f"Invalid value for '{field}': {message}.")
        self.field = field


# An ASCII decimal: digits, then decimals (at most six, checked below). ``[0-9]``, not ``\d``,
# keeps out other scripts' digits (U+0665 Arabic-Indic five, U+FF15 full-width five), which
# ``int()`` and ``str.isdigit`` would take for 5.
_DECIMAL = re.compile(r"(?P<sign>[+-]?)(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?", re.ASCII)
_WHOLE = re.compile(r"[0-9]+", re.ASCII)
SIGNS: dict[Sign, str] = {
    "positive": "a positive amount",
    "non_negative": "an amount of zero or more",
    "non_zero": "a non-zero amount (a leading '-' debits)",
}


def parse_amount(
    value: object,
    *,
    field: str = "amount",
    sign: Sign = "positive",
    maximum: int = MAX_AMOUNT_MICRO,
) -> int:
    """Parse a decimal amount of units (``"12.5"``) into micro-units exactly, without floats.

    The one parser of money inputs: ASCII digits only, at most six decimals, one leading sign
    and only when ``sign`` is ``"non_zero"`` (the one kind that can be negative), and a
    magnitude of at most ``maximum`` micro-units. Anything else raises :class:`AmountError`
    naming ``field``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise AmountError(field, 'expected a decimal string of units, like "12.50"')
    found = _DECIMAL.fullmatch(value) if len(value) <= MAX_AMOUNT_CHARS else None
    if found is None:
        raise AmountError(field, 'expected a decimal string of ASCII digits, like "12.50"')
    frac = found["frac"] or ""
    if len(frac) > DECIMALS:
        raise AmountError(field, f"at most {DECIMALS} decimal places")
    if found["sign"] and sign != "non_zero":
        raise AmountError(field, f"expected {SIGNS[sign]}, without a sign")
    micro = int(found["whole"]) * MICRO + int(frac.ljust(DECIMALS, "0"))
    micro = -micro if found["sign"] == "-" else micro
    return _in_range(micro, field, sign, maximum)


def parse_count(value: object, *, field: str, maximum: int = MAX_AMOUNT_MICRO) -> int:
    """A positive whole number (tokens) of ASCII digits, at most ``maximum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > MAX_AMOUNT_CHARS or not _WHOLE.fullmatch(value):
        raise AmountError(field, 'expected a whole number of ASCII digits, like "1000"')
    return _in_range(int(value), field, "positive", maximum)


def _in_range(micro: int, field: str, sign: Sign, maximum: int) -> int:
    if (sign == "positive" and micro <= 0) or (sign == "non_zero" and micro == 0):
        raise AmountError(field, f"expected {SIGNS[sign]}")
    if abs(micro) > maximum:
        raise AmountError(field, f"at most {format_micro(maximum)} in magnitude")
    return micro


def bucket_pattern() -> re.Pattern[str]:
    """:data:`BUCKET_PATTERN` compiled (use ``fullmatch``)."""
    return re.compile(BUCKET_PATTERN.strip("^$"))


def unit_pattern() -> re.Pattern[str]:
    """:data:`UNIT_PATTERN` compiled (use ``fullmatch``)."""
    return re.compile(UNIT_PATTERN.strip("^$"))


def format_micro(micro: int) -> str:
    """Render micro-units as a decimal string with six places (``"12.500000"``)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
