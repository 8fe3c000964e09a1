"""Request bodies of the OpenAI Responses API and Anthropic's token counting, validated.

Like the chat and messages validators (``chat``): only what the gateway needs is checked and the
first offending parameter named; everything else passes through to the upstream (or to the
translation, which names what it cannot carry). Tollway stores no responses, so
``previous_response_id`` is refused up front with a message that says what to do instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tollway.edge import errors
from tollway.edge.chat import ABSURD_MAX_TOKENS, NO_NUL, ClientCall, _validate
from tollway.events.tokens import input_tokens

NOT_STORED = (
    "Tollway does not store responses (each request may be served by another channel):"
    " send the whole conversation in 'input' instead of '{field}'."
)


class ResponsesRequest(BaseModel):
    """OpenAI Responses: the fields the gateway needs; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    user: str | None = Field(default=None, max_length=256, pattern=NO_NUL)


class CountTokensRequest(BaseModel):
    """Anthropic ``/v1/messages/count_tokens``: a Messages body without ``max_tokens``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


def responses_call(data: dict[str, Any]) -> ClientCall:
    """An OpenAI Responses request."""
    req = _validate(ResponsesRequest, data)
    if req.previous_response_id is not None:
        raise errors.InvalidRequestError(
            NOT_STORED.format(field="previous_response_id"),
            param="previous_response_id",
            code="unsupported_parameter",
        )
    return ClientCall(
        protocol="openai",
        endpoint="responses",
        model=req.model,
        body=data,
        stream=req.stream,
        user=req.user,
        max_tokens=req.max_output_tokens,
        choices=1,
        input_estimate=input_tokens("responses", data),
    )


def count_tokens(data: dict[str, Any]) -> tuple[str, int]:
    """The model named and the prompt's tokens, by the counter the worst-case hold uses."""
    req = _validate(CountTokensRequest, data)
    return req.model, input_tokens("messages", data)
