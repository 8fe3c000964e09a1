"""The chat-completions use case: validate, authorize the model, publish, await the answer.

The edge never calls an upstream itself: the request becomes a ``RequestReceived`` event, the
ledger places a hold (or rejects), the router answers on this instance's reply topic.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tollway.edge import errors
from tollway.edge.breakers import check_breakers
from tollway.edge.publish import publish_request
from tollway.events.envelope import Trace, make, utcnow
from tollway.events.gateway import ReplyFinal, RequestReceived, RequestRejected
from tollway.events.ids import new_id

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from tollway.edge.replies import ReplyHub
    from tollway.edge.store import EdgeStore, KeyInfo, ModelInfo
    from tollway.runtime.breakers import BreakerBoard

ABSURD_MAX_TOKENS = 1_000_000


class ChatRequest(BaseModel):
    """The fields the gateway itself needs; everything else passes through to the upstream."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=16)
    user: str | None = Field(default=None, max_length=256)


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
    return data


def validate_chat(data: dict[str, Any]) -> ChatRequest:
    """Validate the body, naming the first offending parameter."""
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_parameter"
        ) from None


def estimate_input_tokens(messages: list[dict[str, Any]]) -> int:
    """A deliberately generous count (3 bytes per token, plus framing) so holds cover input."""
    size = len(orjson.dumps(messages))
    return math.ceil(size / 3) + 8 * len(messages)


def check_access(key: KeyInfo, model: ModelInfo | None, name: str) -> ModelInfo:
    """404 for an unknown model, 403 when the key may not use it or any of its routes."""
    if model is None or not model.plan:
        raise errors.NotFoundError(
            f"The model '{name}' does not exist.", code="model_not_found", param="model"
        )
    if key.allowed_models is not None and name not in key.allowed_models:
        raise errors.PermissionDeniedError(
            f"This key may not call the model '{name}'.", param="model"
        )
    if not any(c.route_type in key.route_types for c in model.plan):
        raise errors.PermissionDeniedError(
            f"This key's route types ({', '.join(key.route_types)}) cannot serve '{name}'.",
            code="route_type_not_allowed",
            param="model",
        )
    return model


class ChatService:
    """Turns a validated chat request into events and waits for its answer."""

    def __init__(  # noqa: PLR0913, PLR0917 - a composition-root constructor
        self,
        store: EdgeStore,
        producer: AIOKafkaProducer,
        replies: ReplyHub,
        edge_id: str,
        timeout_seconds: float,
        breakers: BreakerBoard,
    ) -> None:
        """Wire the service."""
        self._breakers = breakers
        self._store = store
        self._producer = producer
        self._replies = replies
        self._edge_id = edge_id
        self._timeout = timeout_seconds

    async def complete(
        self,
        key: KeyInfo,
        chat: ChatRequest,
        body: dict[str, Any],
        task_id: str | None,
        request_id: str,
    ) -> tuple[int, dict[str, Any]]:
        """Return the upstream's status and body, or raise the client's error."""
        check_breakers(self._breakers, key, task_id)
        model = check_access(key, await self._store.model(chat.model), chat.model)
        plan = [c for c in model.plan if c.route_type in key.route_types]
        max_out = chat.max_completion_tokens or chat.max_tokens or model.default_max_output_tokens
        if max_out > model.max_output_tokens:
            raise errors.InvalidRequestError(
                f"'max_tokens' is {max_out}; '{chat.model}' allows at most"
                f" {model.max_output_tokens}.",
                param="max_tokens",
                code="invalid_parameter",
            )
        now = utcnow()
        event = RequestReceived(
            request_id=request_id,
            edge_id=self._edge_id,
            account_id=key.account_id,
            key_id=key.id,
            project_id=key.project_id,
            task_id=task_id,
            user=chat.user,
            catalog_model=chat.model,
            stream=False,
            body=body,
            plan=plan,
            estimated_input_tokens=estimate_input_tokens(chat.messages),
            max_output_tokens=max_out * chat.n,
            deadline_at=now + timedelta(seconds=self._timeout),
        )
        env = make(
            event,
            trace=Trace(request_id=request_id, task_id=task_id),
            occurred_at=now,
            event_id=new_id(),
        )
        with self._replies.expect(request_id) as future:
            await publish_request(
                self._producer,
                key.account_id,
                env,
                f"It may still be served: check GET /v1/receipts/{request_id} before retrying.",
            )
            try:
                reply = await asyncio.wait_for(future, self._timeout + 2)
            except TimeoutError:
                raise errors.DeadlineExceededError(
                    f"No answer within {self._timeout:.0f}s for request {request_id}."
                ) from None
        return _outcome(reply.payload)


def _outcome(payload: Any) -> tuple[int, dict[str, Any]]:
    if isinstance(payload, RequestRejected):
        cls = errors.STATUS_TO_ERROR.get(payload.status, errors.GatewayError)
        raise cls(payload.message, code=payload.code, param=None)
    if isinstance(payload, ReplyFinal):
        if payload.status >= 500:
            error = payload.body.get("error", {}) if isinstance(payload.body, dict) else {}
            cls = errors.STATUS_TO_ERROR.get(payload.status, errors.UpstreamFailedError)
            raise cls(str(error.get("message", "The upstream failed.")), code=error.get("code"))
        return payload.status, payload.body
    raise errors.GatewayError("Unexpected reply from the gateway's pipeline.")
