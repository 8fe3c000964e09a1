"""The cost an upstream reports with its answer, read exactly into integer micro-units.

OpenRouter-style upstreams put what a call cost in the answer (``usage.cost``, a JSON number in
the channel's cost currency); a channel may name another path (``reported_cost_path``, e.g.
``usage.total_cost`` or ``x_cost.usd``). The number is decoded as a :class:`~decimal.Decimal`
from its JSON text (never a float), then converted to micro-units with one rule: rounded *up*
to the next micro-unit (``ROUND_CEILING``), the direction the booked cost rounds in, so an
upstream that bills exactly the cost price reconciles to zero. A value that is not a number,
negative, NaN/Infinity or absurd (above :data:`MAX_REPORTED_MICRO`) is refused: the attempt
carries no reported cost and a fact is logged; the request never fails for it.

Where the path applies: the non-streamed body; each streamed OpenAI chunk; an Anthropic
``message_start``'s ``message`` and any other event itself (``message_delta``); a Responses
event's ``response`` object. The last value a stream reports wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import structlog

from tollway.events.pricing import MICRO
from tollway.events.recon import DEFAULT_COST_PATH, CostPathError, cost_path_segments

log = structlog.get_logger(__name__)

# One upstream call reported to cost more than a million units is a bug, not a bill.
MAX_REPORTED_MICRO = 10**12


class RefusedCostError(ValueError):
    """The reported value is present but unusable; ``reason`` is a stable snake_case word."""

    def __init__(self, reason: str) -> None:
        """``reason``: not_a_number, negative, not_finite, too_large or not_json."""
        super().__init__(reason)
        self.reason = reason


def _refuse_constant(_name: str) -> Any:
    raise RefusedCostError("not_finite")  # NaN, Infinity, -Infinity (JSON extensions)


def loads_exact(raw: str | bytes) -> Any:
    """JSON with every fraction as a Decimal (integers stay exact ints); NaN/Infinity refused."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except RefusedCostError:
        raise
    except (ValueError, RecursionError):  # invalid JSON, or an integer too long to convert
        raise RefusedCostError("not_json") from None


def to_micro(value: Any) -> int:
    """A JSON number (Decimal or int) of currency units as micro-units, rounded up once."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise RefusedCostError("not_a_number")
    number = Decimal(value)
    if not number.is_finite():
        raise RefusedCostError("not_finite")
    if number < 0:
        raise RefusedCostError("negative")
    if number > Decimal(MAX_REPORTED_MICRO) / MICRO:
        raise RefusedCostError("too_large")
    try:
        return int((number * MICRO).to_integral_value(rounding=ROUND_CEILING))
    except InvalidOperation:  # pragma: no cover - bounded above, so it always fits
        raise RefusedCostError("too_large") from None


def find(obj: Any, segments: tuple[str, ...]) -> Any:
    """The value at ``segments`` in nested objects, or None when any key is missing."""
    for key in segments:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def answer_object(event: Any) -> Any:
    """The object a path applies to in a streamed event (see the module docstring)."""
    if not isinstance(event, dict):
        return None
    if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
        return event["message"]
    if isinstance(event.get("response"), dict):
        return event["response"]
    return event


def read(raw: str | bytes, segments: tuple[str, ...], *, stream_event: bool = False) -> int | None:
    """The reported cost in ``raw`` (a body or one stream event) in micro-units; None if absent.

    Raises :class:`RefusedCostError` when the value is there but unusable.
    """
    needle = f'"{segments[-1]}"'
    found = needle in raw if isinstance(raw, str) else needle.encode() in raw
    if not found:
        return None  # the cheap common case: no such key anywhere, no second parse
    parsed = loads_exact(raw)
    value = find(answer_object(parsed) if stream_event else parsed, segments)
    return None if value is None else to_micro(value)


@dataclass(frozen=True, slots=True)
class CostReader:
    """Reads one channel's reported cost; refusals become a logged fact and None."""

    channel_id: str
    segments: tuple[str, ...]

    def body(self, raw: str | bytes) -> int | None:
        """The cost a non-streamed answer reports."""
        return self._read(raw, stream_event=False)

    def event(self, raw: str) -> int | None:
        """The cost one streamed event reports."""
        return self._read(raw, stream_event=True)

    def _read(self, raw: str | bytes, *, stream_event: bool) -> int | None:
        try:
            return read(raw, self.segments, stream_event=stream_event)
        except RefusedCostError as exc:
            log.warning(
                "reported_cost_refused",
                channel_id=self.channel_id,
                path=".".join(self.segments),
                reason=exc.reason,
            )
            return None


@lru_cache(maxsize=1024)
def reader(channel_id: str, path: str | None) -> CostReader:
    """The reader of a channel's path (the default ``usage.cost`` when unset or unusable)."""
    try:
        segments = cost_path_segments(path or DEFAULT_COST_PATH)
    except CostPathError:
        log.warning("reported_cost_path_invalid", channel_id=channel_id)
        segments = cost_path_segments(DEFAULT_COST_PATH)
    return CostReader(channel_id, segments)
