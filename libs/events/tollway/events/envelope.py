"""The event envelope and its JSON (de)serialization.

Every message on every topic is an :class:`Envelope`: a unique sortable ``id``, a stable string
``type`` and ``version``, ``occurred_at`` stamped once by the producer, a ``trace`` (request and
task ids) and the typed payload. Stored and sent events are keyed by ``type``, never by a Python
class path, so a payload class can move without breaking the log.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from tollway.events.ids import new_id


class Payload(BaseModel):
    """Base of every event payload; subclasses set ``TYPE`` (and ``VERSION`` on a new shape)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


P = TypeVar("P", bound=Payload)


class Trace(BaseModel):
    """What a message belongs to: the request and, when set, the task."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    task_id: str | None = None


class Envelope(BaseModel, Generic[P]):
    """One event as it travels: identity, time, trace and payload."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    version: int
    occurred_at: datetime
    trace: Trace
    payload: P


_REGISTRY: dict[str, type[Payload]] = {}


class UnknownEventTypeError(ValueError):
    """A message carries a ``type`` this build does not know (route it to the DLQ)."""


def register(cls: type[P]) -> type[P]:
    """Class decorator: make a payload type decodable by its ``TYPE``."""
    if not cls.TYPE or cls.TYPE in _REGISTRY:
        raise ValueError(f"payload type must be unique and non-empty: {cls.TYPE!r}")
    _REGISTRY[cls.TYPE] = cls
    return cls


def utcnow() -> datetime:
    """The producer's clock, read once per event at the edge of the system."""
    return datetime.now(UTC)


def make(
    payload: P,
    *,
    trace: Trace | None = None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> Envelope[P]:
    """Wrap ``payload`` in a new envelope (new id; the clock is read here unless given)."""
    # ``Envelope[P]`` is ``Envelope`` (the class's own parameter), but subscripting costs a
    # pydantic lookup per event; the payload's type parametrizes it for mypy all the same.
    return Envelope(
        id=event_id or new_id(),
        type=payload.TYPE,
        version=payload.VERSION,
        occurred_at=occurred_at or utcnow(),
        trace=trace or Trace(),
        payload=payload,
    )


def to_data(envelope: Envelope[Any]) -> dict[str, Any]:
    """The envelope as JSON data, its payload serialized as its own registered type.

    A decoded envelope is an ``Envelope[Payload]``: dumped as declared, its payload would be
    serialized as the bare base class (``{}``). Dumping the payload by its own class keeps
    every field, and is byte-identical for an envelope made with its concrete type.
    """
    data = envelope.model_dump(mode="json", exclude={"payload"})
    data["payload"] = envelope.payload.model_dump(mode="json")
    return data


def encode(envelope: Envelope[Any]) -> bytes:
    """Serialize to compact JSON bytes (a decoded envelope keeps its whole payload)."""
    return orjson.dumps(to_data(envelope))


def decode(raw: bytes) -> Envelope[Payload]:
    """Parse JSON bytes into an envelope with its registered payload type.

    Raises ``UnknownEventTypeError`` for an unregistered type and pydantic's
    ``ValidationError`` for a malformed message; consumers send both to the DLQ.
    """
    return decode_data(orjson.loads(raw))


def decode_data(data: Any) -> Envelope[Payload]:
    """:func:`decode` for JSON already parsed (a consumer that looked at its ``type`` first)."""
    kind = data.get("type") if isinstance(data, dict) else None
    cls = _registered(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownEventTypeError(f"unknown event type: {kind!r}")
    data["payload"] = cls.model_validate(data.get("payload"))
    return _DECODED.model_validate(data)


# Parametrized once: ``Envelope[Payload]`` looks the class up in pydantic's cache on every use.
_DECODED = Envelope[Payload]

PAYLOAD_MODULES = (
    "tollway.events.gateway",
    "tollway.events.ledger",
    "tollway.events.limits",
    "tollway.events.routing",
    "tollway.events.recon",
)


def _load_payload_modules() -> None:
    for module in PAYLOAD_MODULES:
        importlib.import_module(module)


def _registered(kind: str) -> type[Payload] | None:
    cls = _REGISTRY.get(kind)
    if cls is None:  # a consumer that never imported the module defining this type
        _load_payload_modules()
        cls = _REGISTRY.get(kind)
    return cls


def registered_types() -> dict[str, type[Payload]]:
    """All known payload types by their stable name (for docs and schema export)."""
    _load_payload_modules()
    return dict(_REGISTRY)
