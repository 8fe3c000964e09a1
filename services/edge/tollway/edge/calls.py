"""The model-call use case: authorize the model, publish the request, await the answer.

The edge never calls an upstream itself: the request becomes a ``RequestReceived`` event, the
ledger places a hold (or rejects), the router answers on this instance's reply topic, in one
reply or, for a stream, in chunks relayed by ``relay``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from tollway.edge import errors
from tollway.edge.breakers import check_breakers
from tollway.edge.publish import publish_cancel, publish_request
from tollway.edge.relay import relay_stream
from tollway.events.envelope import Trace, make, utcnow
from tollway.events.gateway import ReplyChunk, ReplyFinal, RequestReceived, RequestRejected
from tollway.events.ids import new_id
from tollway.events.pricing import format_micro
from tollway.runtime.bodies import BodyUnavailableError, seal_body

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiokafka import AIOKafkaProducer

    from tollway.edge.chat import ClientCall
    from tollway.edge.replies import ReplyHub
    from tollway.edge.store import EdgeStore, KeyInfo, ModelInfo
    from tollway.events.envelope import Envelope, Payload
    from tollway.runtime.bodies import BodyKeys, DataKey
    from tollway.runtime.breakers import BreakerBoard


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


def output_budget(call: ClientCall, model: ModelInfo) -> int:
    """The output tokens to hold for: the asked maximum (or the model's default), times ``n``."""
    max_out = model.default_max_output_tokens if call.max_tokens is None else call.max_tokens
    if max_out > model.max_output_tokens:
        raise errors.InvalidRequestError(
            f"'max_tokens' is {max_out}; '{call.model}' allows at most {model.max_output_tokens}.",
            param="max_tokens",
            code="invalid_parameter",
        )
    return max_out * call.choices


class CallService:
    """Turns a validated call into events and waits for its answer."""

    def __init__(  # noqa: PLR0913, PLR0917 - a composition-root constructor
        self,
        store: EdgeStore,
        producer: AIOKafkaProducer,
        replies: ReplyHub,
        edge_id: str,
        timeout_seconds: float,
        breakers: BreakerBoard,
        bodies: BodyKeys,
    ) -> None:
        """Wire the service; request bodies are sealed under ``bodies``' current key."""
        self._breakers = breakers
        self._bodies = bodies
        self._store = store
        self._producer = producer
        self._replies = replies
        self._edge_id = edge_id
        self._timeout = timeout_seconds
        self._background: set[asyncio.Task[None]] = set()

    async def complete(
        self, key: KeyInfo, call: ClientCall, task_id: str | None, request_id: str
    ) -> Answer:
        """Return the answer and its charge, or raise the client's error."""
        env = await self._request(key, call, task_id, request_id)
        with self._replies.expect(request_id) as inbox:
            await self._publish(key, env, request_id)
            reply = await self._first(inbox, request_id)
        bucket = env.payload.plan[0].bucket
        try:
            status, body = _outcome(reply.payload)
        except errors.GatewayError as exc:
            # Nothing was served, nothing is charged: the answer says so too.
            exc.headers = {**cost_headers(0, bucket), **exc.headers}
            raise
        payload = reply.payload
        assert isinstance(payload, ReplyFinal)  # _outcome raised for anything else
        return Answer(status, body, payload.cost_micro or 0, payload.bucket or bucket)

    async def stream(
        self, key: KeyInfo, call: ClientCall, task_id: str | None, request_id: str
    ) -> AsyncIterator[bytes]:
        """Wait for the stream's first chunk (or raise the error that came instead), then relay.

        The HTTP status is only decided once the first reply is in: a refusal or a failure before
        the first byte is an ordinary error response, not a broken stream.
        """
        env = await self._request(key, call, task_id, request_id)
        stack = contextlib.ExitStack()
        inbox = stack.enter_context(self._replies.expect(request_id))
        try:
            await self._publish(key, env, request_id)
            first = await self._first(inbox, request_id)
            _must_be_chunk(first.payload)
        except BaseException:
            stack.close()
            raise
        deadline = asyncio.get_running_loop().time() + self._timeout + 2
        return relay_stream(
            stack, inbox, first, call.protocol, deadline, lambda: self._cancel(key, request_id)
        )

    async def _request(
        self, key: KeyInfo, call: ClientCall, task_id: str | None, request_id: str
    ) -> Envelope[RequestReceived]:
        check_breakers(self._breakers, key, task_id)
        model = check_access(key, await self._store.model(call.model), call.model)
        now = utcnow()
        event = RequestReceived(
            request_id=request_id,
            edge_id=self._edge_id,
            account_id=key.account_id,
            key_id=key.id,
            project_id=key.project_id,
            task_id=task_id,
            user=call.user,
            protocol=call.protocol,
            endpoint=call.endpoint,
            catalog_model=call.model,
            stream=call.stream,
            # Never in clear on the log: gw.requests and gw.authorized are kept forever.
            sealed_body=seal_body(call.body, await self._body_key(), request_id),
            plan=[c for c in model.plan if c.route_type in key.route_types],
            estimated_input_tokens=call.input_estimate,
            max_output_tokens=output_budget(call, model),
            deadline_at=now + timedelta(seconds=self._timeout),
        )
        trace = Trace(request_id=request_id, task_id=task_id)
        return make(event, trace=trace, occurred_at=now, event_id=new_id())

    async def _body_key(self) -> DataKey:
        """The epoch key (cached: the database is asked once per epoch); 503 when unreachable."""
        try:
            return await self._bodies.current()
        except (OSError, asyncpg.PostgresError, BodyUnavailableError):
            raise errors.DependencyDownError(
                "The gateway cannot protect the request body right now; retry shortly.",
                code="body_key_unavailable",
            ) from None

    async def _publish(self, key: KeyInfo, env: Envelope[RequestReceived], request_id: str) -> None:
        await publish_request(
            self._producer,
            key.account_id,
            env,
            f"It may still be served: check GET /v1/receipts/{request_id} before retrying.",
        )

    async def _first(
        self, inbox: asyncio.Queue[Envelope[Payload]], request_id: str
    ) -> Envelope[Payload]:
        try:
            return await asyncio.wait_for(inbox.get(), self._timeout + 2)
        except TimeoutError:
            raise errors.DeadlineExceededError(
                f"No answer within {self._timeout:.0f}s for request {request_id}."
            ) from None

    def _cancel(self, key: KeyInfo, request_id: str) -> None:
        """The client left mid-stream: tell every router, in the background (we are unwinding)."""
        task = asyncio.create_task(self._publish_cancel(key, request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_cancel(self, key: KeyInfo, request_id: str) -> None:
        await publish_cancel(self._producer, request_id, key.account_id)


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer and what settling it charges, in micro-units of ``bucket``'s unit."""

    status: int
    body: dict[str, Any]
    cost_micro: int
    bucket: str


def cost_headers(cost: int, bucket: str) -> dict[str, str]:
    """The charge of an answer as headers: decimal in the bucket's unit, and the bucket."""
    return {"x-tollway-cost": format_micro(cost), "x-tollway-bucket": bucket}


def _must_be_chunk(payload: Any) -> None:
    """A stream starts with a chunk; anything else is the error that came instead."""
    if not isinstance(payload, ReplyChunk):
        _outcome(payload)
        raise errors.GatewayError("The stream ended before it started.")


def _outcome(payload: Any) -> tuple[int, dict[str, Any]]:
    if isinstance(payload, RequestRejected):
        cls = errors.STATUS_TO_ERROR.get(payload.status, errors.GatewayError)
        raise cls(payload.message, code=payload.code, param=None, limit=payload.limit)
    if isinstance(payload, ReplyFinal):
        if payload.status >= 400:
            raise _upstream_error(payload)
        return payload.status, payload.body
    raise errors.GatewayError("Unexpected reply from the gateway's pipeline.")


def _upstream_error(reply: ReplyFinal) -> errors.GatewayError:
    """An error answer, re-spoken in the client's dialect by the one error table."""
    raw = reply.body.get("error") if isinstance(reply.body, dict) else None
    error = raw if isinstance(raw, dict) else {}
    message = str(error.get("message") or "The upstream refused the request.")
    cls = errors.STATUS_TO_ERROR.get(reply.status)
    if cls is None:
        cls = errors.UpstreamFailedError if reply.status >= 500 else errors.InvalidRequestError
    code = error.get("code")
    limit = error.get("limit")
    return cls(
        message,
        code=code if isinstance(code, str) else None,
        param=error.get("param"),
        limit=limit if isinstance(limit, str) else None,
    )
