"""Prices and the one cost-rounding rule.

Amounts are integer micro-units of a bucket's unit (1 unit = 1,000,000 micro). Prices are
micro-units per 1M tokens. Cost is computed once per attempt over the exact integer product and
rounded *up* to the next micro-unit, so a charge is never below the true price and the same
tokens always cost the same. Every money input is parsed by :func:`parse_amount`, and its
ranges are the constants below.

Token classes: ``input_tokens`` counts every prompt token, of which ``cached_input_tokens`` were
read from a prompt cache and ``cache_write_tokens`` / ``cache_write_1h_tokens`` were written to
one (Anthropic's 5-minute and 1-hour writes); ``output_tokens`` counts every generated token, of
which ``reasoning_tokens`` were hidden reasoning. Each class has its price; a class's price left
unset falls back to the plain input (or output) price, so an old channel costs what it did.
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
    cache_write: int | None = Field(default=None, ge=0)
    cache_write_1h: int | None = Field(default=None, ge=0)
    reasoning: int | None = Field(default=None, ge=0)

    def per_class(self) -> dict[str, int]:
        """The price of every token class, defaults resolved (5-minute writes back 1-hour ones)."""
        write = self.input if self.cache_write is None else self.cache_write
        return {
            "input": self.input,
            "cached_input": self.input if self.cached_input is None else self.cached_input,
            "cache_write": write,
            "cache_write_1h": write if self.cache_write_1h is None else self.cache_write_1h,
            "output": self.output,
            "reasoning": self.output if self.reasoning is None else self.reasoning,
        }

    def worst_case(self) -> Price:
        """The dearest input and output class prices: what a hold must assume before the call."""
        classes = self.per_class()
        return Price(
            input=max(
                classes[k] for k in ("input", "cached_input", "cache_write", "cache_write_1h")
            ),
            output=max(classes["output"], classes["reasoning"]),
        )


class CostPrice(Price):
    """What the operator pays an upstream: micro-units of ``currency`` per 1M tokens of each class.

    The sell price (:class:`Price`) is in the tenant bucket's unit; the cost price is in the
    operator's cost currency (``USD``, ``CNY``, ...), which may differ. ``per_request`` is a fixed
    cost per upstream call, in micro-units of ``currency``.
    """

    currency: str = Field(pattern=UNIT_PATTERN)
    per_request: int = Field(default=0, ge=0)


class Usage(BaseModel):
    """Tokens an upstream reported (or that were counted, when ``estimated``)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    estimated: bool = False
    cache_write_tokens: int = Field(default=0, ge=0)
    cache_write_1h_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def classes(self) -> dict[str, int]:
        """Tokens per class, each counted once: classes never add up to more than the totals."""
        left = self.input_tokens
        out: dict[str, int] = {}
        for name, tokens in (
            ("cached_input", self.cached_input_tokens),
            ("cache_write", self.cache_write_tokens),
            ("cache_write_1h", self.cache_write_1h_tokens),
        ):
            out[name] = min(tokens, left)
            left -= out[name]
        reasoning = min(self.reasoning_tokens, self.output_tokens)
        return {
            "input": left,
            **out,
            "output": self.output_tokens - reasoning,
            "reasoning": reasoning,
        }


def line_items(usage: Usage, price: Price) -> list[dict[str, int | str]]:
    """What a receipt shows: each token class with its tokens and its price per 1M.

    ``cost_micro_exact_e6`` is the class's exact cost in millionths of a micro-unit; the sum is
    rounded once, by :func:`cost_micro`.
    """
    prices = price.per_class()
    return [
        {
            "class": name,
            "tokens": tokens,
            "price_per_1m_micro": prices[name],
            "cost_micro_exact_e6": tokens * prices[name],
        }
        for name, tokens in usage.classes().items()
        if tokens
    ]


def cost_micro(usage: Usage, price: Price) -> int:
    """Return the cost of ``usage`` at ``price`` in micro-units, rounded up once."""
    prices = price.per_class()
    numerator = sum(tokens * prices[name] for name, tokens in usage.classes().items())
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


def upstream_cost_micro(usage: Usage, cost: CostPrice) -> int:
    """What one upstream call with ``usage`` costs the operator at ``cost``, rounded up once."""
    return cost_micro(usage, cost) + cost.per_request


def worst_case_micro(input_tokens: int, output_tokens: int, price: Price) -> int:
    """The most ``input_tokens`` in and ``output_tokens`` out can cost, whatever their classes."""
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return cost_micro(usage, price.worst_case())


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
