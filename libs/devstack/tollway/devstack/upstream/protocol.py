"""The vocabulary shared by the demo upstream's two dialects: replies, errors and SSE frames.

A renderer (``openai_api``, ``anthropic_api``) turns a request body into a ``JsonReply`` or a
``StreamReply`` without doing IO; the app sends it and applies faults. Errors are raised as
``UpstreamError`` and rendered in the dialect of the endpoint that was called:

    OpenAI     {"error": {"message", "type", "param", "code"}}
    Anthropic  {"type": "error", "error": {"type", "message"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
SSE_DONE = b"data: [DONE]\n\n"

OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    429: "rate_limit_error",
}
OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class Api(StrEnum):
    """The dialect an endpoint speaks, which decides the error shape."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class UpstreamError(Exception):
    """A request the demo upstream answers with an error status, in the caller's dialect."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Per-request facts a renderer needs but must not invent itself."""

    request_id: str
    created: int
    include_usage: bool = True
    # Prompt prefixes this channel has cached (a prefix's first request writes it, later ones
    # read it); None when a renderer is called without a channel, as in unit tests.
    prompt_cache: set[str] | None = None

    def cached(self, prefix_key: str) -> bool:
        """Whether ``prefix_key`` was cached before; caches it for the next request."""
        if self.prompt_cache is None:
            return False
        seen = prefix_key in self.prompt_cache
        self.prompt_cache.add(prefix_key)
        return seen


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A complete JSON response body."""

    body: bytes
    status: int = 200


@dataclass(frozen=True, slots=True)
class StreamReply:
    """An SSE stream: ``chunks`` carry content (and are what ``cut_stream`` counts)."""

    head: tuple[bytes, ...]
    chunks: tuple[bytes, ...]
    tail: tuple[bytes, ...]


Reply = JsonReply | StreamReply


def error_body(api: Api, error: UpstreamError) -> bytes:
    """Render ``error`` as JSON in the dialect of ``api``."""
    status = error.status
    if api is Api.ANTHROPIC:
        default = "api_error" if status >= 500 else "invalid_request_error"
        kind = ANTHROPIC_ERROR_TYPES.get(status, default)
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": error.message}})
    default = "server_error" if status >= 500 else "invalid_request_error"
    body = {
        "message": error.message,
        "type": OPENAI_ERROR_TYPES.get(status, default),
        "param": error.param,
        "code": OPENAI_ERROR_CODES.get(status),
    }
    return orjson.dumps({"error": body})


def parse_body(model: type[Model], body: bytes) -> Model:
    """Validate a JSON request body, or raise a 400 naming the first offending field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise UpstreamError(400, message, param=param) from None


def sse_data(payload: Any) -> bytes:
    """Frame ``payload`` as OpenAI does (``data:`` only)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """Frame ``payload`` as Anthropic does: the event name repeats its ``type``."""
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
