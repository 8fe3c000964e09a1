"""Client request bodies, validated: OpenAI chat and embeddings, Anthropic messages.

Each validator checks what the dialect's own API checks for the fields it documents (roles,
content, token limits, sampling ranges, types without coercion: ``"10"`` is not a number and
``"yes"`` not a boolean) and names the first offending parameter; every other field passes
through to the upstream untouched. The result is a ``ClientCall``: the same shape whatever the
dialect, so the rest of the edge does not care which one the client spoke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from tollway.edge import errors
from tollway.edge.inputs import check_json
from tollway.events import tokens
from tollway.events.tokens import input_tokens

if TYPE_CHECKING:
    from tollway.events.gateway import Endpoint, Protocol

ABSURD_MAX_TOKENS = 1_000_000
M = TypeVar("M", bound=BaseModel)
NO_NUL = r"^[^\x00]*$"  # recorded on the receipt, and Postgres text cannot hold NUL


@dataclass(frozen=True, slots=True)
class ClientCall:
    """A validated client request, whatever its dialect."""

    protocol: Protocol
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    stream: bool
    user: str | None
    max_tokens: int | None
    choices: int
    input_estimate: int


Tokens = Annotated[StrictInt, Field(ge=1, le=ABSURD_MAX_TOKENS)]
# A JSON number (an int is one too), never a string that looks like one.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Content = str | list[dict[str, Any]]


class ChatMessage(BaseModel):
    """One OpenAI chat message: a known role; text, parts, or nothing (a tool-calling turn)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Content | None = None


class ChatRequest(BaseModel):
    """OpenAI chat completions, with OpenAI's ranges; other fields pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256, strict=True)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    n: StrictInt = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = Field(default=None, max_length=4)
    user: str | None = Field(default=None, max_length=256, pattern=NO_NUL, strict=True)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)
    seed: Int64 | None = None
    logit_bias: dict[str, Annotated[StrictInt, Field(ge=-100, le=100)]] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    parallel_tool_calls: StrictBool | None = None


class EmbeddingsRequest(BaseModel):
    """OpenAI embeddings: one text, a list of texts, or token arrays."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256, strict=True)
    input: str | list[str] | list[int] | list[list[int]]
    user: str | None = Field(default=None, max_length=256, pattern=NO_NUL, strict=True)
    dimensions: StrictInt | None = Field(default=None, ge=1, le=65_536)
    encoding_format: Literal["float", "base64"] | None = None


class AnthropicMessage(BaseModel):
    """One Anthropic message: the user's or the assistant's turn, text or content blocks."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: Content


class MessagesRequest(BaseModel):
    """Anthropic messages, with Anthropic's ranges: ``max_tokens`` is required."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256, strict=True)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: Tokens
    system: str | list[dict[str, Any]] | None = None
    stream: StrictBool = False
    metadata: dict[str, Any] | None = None
    temperature: Number | None = Field(default=None, ge=0, le=1)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None


def parse_json(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, or raise a 400 that says what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequestError(
            f"The request body is not valid JSON (or not UTF-8): {exc.msg}.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise errors.InvalidRequestError(
            "The request body must be a JSON object.", code="invalid_json"
        )
    # Depth and integer range, as for every body (tollway.edge.inputs); NUL may pass in a
    # prompt, which goes to the upstream and is never stored.
    check_json(data, nul_ok=True)
    return data


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_parameter"
        ) from None


def chat_call(data: dict[str, Any]) -> ClientCall:
    """An OpenAI chat completion request."""
    chat = _validate(ChatRequest, data)
    return ClientCall(
        protocol="openai",
        endpoint="chat",
        model=chat.model,
        body=data,
        stream=chat.stream,
        user=chat.user,
        max_tokens=chat.max_completion_tokens or chat.max_tokens,
        choices=chat.n,
        input_estimate=input_tokens("chat", data),
    )


def embeddings_call(data: dict[str, Any]) -> ClientCall:
    """An OpenAI embeddings request: input only, no output tokens to hold for."""
    embed = _validate(EmbeddingsRequest, data)
    if embed.input in ("", []):
        raise errors.InvalidRequestError(
            "Invalid value for 'input': it must not be empty.",
            param="input",
            code="invalid_parameter",
        )
    return ClientCall(
        protocol="openai",
        endpoint="embeddings",
        model=embed.model,
        body=data,
        stream=False,
        user=embed.user,
        max_tokens=0,
        choices=1,
        input_estimate=estimate_tokens(embed.input),
    )


def messages_call(data: dict[str, Any]) -> ClientCall:
    """An Anthropic Messages request."""
    msg = _validate(MessagesRequest, data)
    user = (msg.metadata or {}).get("user_id")
    return ClientCall(
        protocol="anthropic",
        endpoint="messages",
        model=msg.model,
        body=data,
        stream=msg.stream,
        user=str(user).replace("\x00", "")[:256] if user is not None else None,
        max_tokens=msg.max_tokens,
        choices=1,
        input_estimate=input_tokens("messages", data),
    )


def estimate_tokens(content: Any) -> int:
    """A deliberately generous count (3 bytes per token, plus framing) so holds cover input."""
    return tokens.estimate_tokens(content)
