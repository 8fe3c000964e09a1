"""Money and token-count inputs of every edge endpoint, parsed by the one shared parser.

:func:`tollway.events.pricing.parse_amount` decides what an amount is (ASCII digits, at most six
decimals, a sign only where one is allowed, within the ledger's ranges); here its refusal becomes
the edge's 400 naming the field, in whichever dialect or page the caller answers with.
"""

from __future__ import annotations

from tollway.edge import errors
from tollway.events.pricing import (
    MAX_AMOUNT_MICRO,
    AmountError,
    Sign,
    parse_amount,
    parse_count,
)


def amount(
    value: object, *, field: str, sign: Sign = "positive", maximum: int = MAX_AMOUNT_MICRO
) -> int:
    """Micro-units of ``value``; 400 ``invalid_amount`` naming ``field`` otherwise."""
    try:
        return parse_amount(value, field=field, sign=sign, maximum=maximum)
    except AmountError as exc:
        raise errors.InvalidRequestError(str(exc), param=field, code="invalid_amount") from None


def count(value: object, *, field: str, maximum: int = MAX_AMOUNT_MICRO) -> int:
    """A positive whole number (tokens); 400 ``invalid_amount`` naming ``field`` otherwise."""
    try:
        return parse_count(value, field=field, maximum=maximum)
    except AmountError as exc:
        raise errors.InvalidRequestError(str(exc), param=field, code="invalid_amount") from None
