"""The cost the demo upstream reports, OpenRouter-style, when the model name asks for it.

A model named ``<model>+cost:<input>:<output>`` (prices in currency units per 1M tokens, e.g.
``gpt-4o-mini+cost:0.15:0.6``) gets ``usage.cost``: ``input_tokens * input / 1M + output_tokens
* output / 1M``, computed exactly and written as a plain JSON number (never through a float).
Any other model name reports no cost: the default answers are unchanged.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

MARKER = "+cost:"
PER = Decimal(1_000_000)


def reported_cost(model: str, input_tokens: int, output_tokens: int) -> orjson.Fragment | None:
    """The exact cost as a JSON number fragment, or None when the model does not ask."""
    _, marker, prices = model.partition(MARKER)
    if not marker:
        return None
    try:
        price_in, price_out = (Decimal(p) for p in prices.split(":", 1))
    except (InvalidOperation, ValueError):
        return None
    if not (price_in.is_finite() and price_out.is_finite()):
        return None
    cost = (input_tokens * price_in + output_tokens * price_out) / PER
    return orjson.Fragment(format(cost.normalize(), "f").encode())


def with_cost(usage: dict[str, Any], model: str, input_tokens: int, output_tokens: int) -> None:
    """Add ``cost`` to ``usage`` when ``model`` asks for it."""
    cost = reported_cost(model, input_tokens, output_tokens)
    if cost is not None:
        usage["cost"] = cost
