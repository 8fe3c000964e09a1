"""The what-if policy: another route policy and price table to price logged requests under.

A policy is a JSON object (the admin API's ``policy``) or the same document as a JSON or TOML
file (the CLI's ``--policy``)::

    # Move rules, first match wins: which requests (catalog model, project, key; each optional,
    # all traffic when none is given) go to which route type or channel.
    [[rules]]
    model = "gpt-4o-mini"
    project = "p-1"
    route_type = "pool"          # or: channel = "openai-pool"

    # Another primary for a catalog model: tried first, the request's own plan behind it.
    [[primary]]
    model = "claude-3-5-haiku"
    channel = "anthropic-backup"

    # A price table override per channel (id or name): sell price in the bucket's unit, cost
    # price in its currency, decimal units per 1M tokens (as the admin API takes them).
    [prices.openai-pool]
    sell = { input = "0.9", output = "3.6" }
    cost = { currency = "CNY", input = "0.5", output = "2", per_request = "0" }

    # Which unit each bucket holds, so a margin can be taken where the cost is in that unit.
    [units]
    wallet = "CNY"

Parsing is strict: an unknown field, a rule with both or neither of ``route_type`` and
``channel``, an amount :func:`~tollway.events.pricing.parse_amount` refuses, all raise
:class:`PolicyError` naming the field (``rules[0].channel``).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tollway.events.pricing import (
    BUCKET_PATTERN,
    UNIT_PATTERN,
    AmountError,
    CostPrice,
    Price,
    parse_amount,
)

RouteType = Literal["direct", "pool"]
PRICE_CLASSES = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
MAX_RULES = 1000


class PolicyError(ValueError):
    """A policy that cannot be applied; ``field`` names where (``rules[0].route_type``)."""

    def __init__(self, field: str, message: str) -> None:
        """``message`` says what is wrong and what is expected."""
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Selector(_Strict):
    """Which requests a rule applies to; an unset member matches everything."""

    model: str | None = Field(default=None, min_length=1)
    project: str | None = Field(default=None, min_length=1)
    key: str | None = Field(default=None, min_length=1)

    def matches(self, model: str, project: str, key: str) -> bool:
        """The request's catalog model, project and key all agree with what is set."""
        return (
            (self.model in (None, "*", model))
            and (self.project in (None, project))
            and (self.key in (None, key))
        )


class MoveRule(Selector):
    """Send the selected traffic to a route type or to one channel."""

    route_type: RouteType | None = None
    channel: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_target(self) -> MoveRule:
        if (self.route_type is None) == (self.channel is None):
            raise ValueError("give exactly one of 'route_type' (direct or pool) and 'channel'")
        return self


class PrimaryRule(_Strict):
    """Use ``channel`` as the primary of catalog model ``model``."""

    model: str = Field(min_length=1)
    channel: str = Field(min_length=1)


class PriceOverride(_Strict):
    """A channel's prices in the what-if (micro-units per 1M tokens once parsed)."""

    sell: Price | None = None
    cost: CostPrice | None = None
    # Where the channel settles and its route type, for a channel no logged plan shows.
    bucket: str | None = Field(default=None, pattern=BUCKET_PATTERN)
    route_type: RouteType | None = None

    @field_validator("sell", mode="before")
    @classmethod
    def _sell(cls, value: Any) -> Any:
        return _amounts(value, cost=False)

    @field_validator("cost", mode="before")
    @classmethod
    def _cost(cls, value: Any) -> Any:
        return _amounts(value, cost=True)


class Policy(_Strict):
    """Move rules (first match wins), then primaries, then the price table override."""

    rules: list[MoveRule] = Field(default_factory=list, max_length=MAX_RULES)
    primary: list[PrimaryRule] = Field(default_factory=list, max_length=MAX_RULES)
    prices: dict[str, PriceOverride] = Field(default_factory=dict, max_length=MAX_RULES)
    units: dict[str, str] = Field(default_factory=dict, max_length=MAX_RULES)

    @field_validator("units")
    @classmethod
    def _units(cls, value: dict[str, str]) -> dict[str, str]:
        for bucket, unit in value.items():
            if not _fullmatch(BUCKET_PATTERN, bucket) or not _fullmatch(UNIT_PATTERN, unit):
                raise ValueError(f"'{bucket}' = '{unit}' is not a bucket name and a unit")
        return value

    @model_validator(mode="after")
    def _something(self) -> Policy:
        if not (self.rules or self.primary or self.prices):
            raise ValueError("the policy changes nothing: give 'rules', 'primary' or 'prices'")
        return self

    def move_for(self, model: str, project: str, key: str) -> MoveRule | None:
        """The first move rule that selects this request."""
        return next((r for r in self.rules if r.matches(model, project, key)), None)

    def primary_for(self, model: str) -> PrimaryRule | None:
        """The primary rule of ``model``, if any."""
        return next((p for p in self.primary if p.model == model), None)


def _fullmatch(pattern: str, value: str) -> bool:
    import re  # noqa: PLC0415 - only the rare units table needs it

    return re.fullmatch(pattern.strip("^$"), value) is not None


def _amounts(value: Any, *, cost: bool) -> Any:
    """Decimal strings of units per 1M tokens -> micro-units, by the one money parser."""
    if value is None:
        return None
    if not isinstance(value, dict):
        # ValueError, not TypeError: pydantic turns only the former into a validation error.
        raise ValueError('expected a table of prices per 1M tokens, like {input = "1.5"}')  # noqa: TRY004
    out: dict[str, Any] = {}
    for name, raw in value.items():
        if name in PRICE_CLASSES or (cost and name == "per_request"):
            try:
                out[name] = parse_amount(raw, field=name, sign="non_negative")
            except AmountError as exc:
                raise ValueError(str(exc)) from None
        elif cost and name == "currency":
            out[name] = raw
        else:
            # Price ignores unknown fields; a typo here must not silently price at nothing.
            raise ValueError(f"unknown price field '{name}'")
    return out


def parse_policy(data: Any) -> Policy:
    """A :class:`Policy` from parsed JSON/TOML, or :class:`PolicyError` naming the field."""
    if not isinstance(data, dict):
        raise PolicyError("policy", "expected an object with 'rules', 'primary' or 'prices'")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PolicyError(_where(first["loc"]), _message(first)) from None


def load_policy(text: str, name: str = "policy.json") -> Policy:
    """Parse a policy file's text: TOML when ``name`` ends in ``.toml``, else JSON."""
    try:
        data = tomllib.loads(text) if name.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if name.endswith(".toml") else "JSON"
        raise PolicyError("", f"the policy is not valid {kind}: {exc}") from None
    return parse_policy(data)


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "policy"


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "literal_error":
        return "expected 'direct' or 'pool'"
    return message
