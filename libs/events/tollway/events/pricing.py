"""Prices and the one cost-rounding rule.

Amounts are integer micro-units of a bucket's unit (1 unit = 1,000,000 micro). Prices are
micro-units per 1M tokens. Cost is computed once per attempt over the exact integer product and
rounded *up* to the next micro-unit, so a charge is never below the true price and the same
tokens always cost the same.

Token classes: ``input_tokens`` counts every prompt token, of which ``cached_input_tokens`` were
read from a prompt cache and ``cache_write_tokens`` / ``cache_write_1h_tokens`` were written to
one (Anthropic's 5-minute and 1-hour writes); ``output_tokens`` counts every generated token, of
which ``reasoning_tokens`` were hidden reasoning. Each class has its price; a class's price left
unset falls back to the plain input (or output) price, so an old channel costs what it did.
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


def worst_case_micro(input_tokens: int, output_tokens: int, price: Price) -> int:
    """The most ``input_tokens`` in and ``output_tokens`` out can cost, whatever their classes."""
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return cost_micro(usage, price.worst_case())


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
