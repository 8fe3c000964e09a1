"""The demo upstream's ASGI app: per-channel provider endpoints and the control API.

Each channel is a base URL ``/<channel>/v1`` serving both dialects (OpenAI chat completions,
responses, embeddings and models; Anthropic messages). A provider request goes: known channel,
known endpoint and method -> counted -> authenticated -> armed fault taken -> rendered ->
latency -> sent. So a request is counted even when it is refused, and only authenticated
inference requests consume faults (``GET /models`` never does, so health probes cannot eat a
test's fault).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from tollway.devstack.upstream import anthropic_api, openai_api, responses_api
from tollway.devstack.upstream.control import CONTROL_PREFIX, handle_control
from tollway.devstack.upstream.protocol import Api, RenderContext, Reply, UpstreamError, error_body
from tollway.devstack.upstream.state import ChannelState, FaultKind, FaultSpec, UpstreamState
from tollway.devstack.upstream.wire import (
    ClientDisconnectedError,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_json,
    send_reply,
    wait_for_disconnect,
)

log = structlog.get_logger(__name__)

DEFAULT_CHANNELS = (
    "openai-direct",
    "openai-pool",
    "openai-backup",
    "openai-pool-backup",
    "anthropic-direct",
    "anthropic-pool",
    "anthropic-backup",
    "anthropic-pool-backup",
)
CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BEARER = "bearer"
API_KEY = "x-api-key"
AUTH_MESSAGES = {
    Api.OPENAI: "You didn't provide an API key (Authorization: Bearer ...).",
    Api.ANTHROPIC: "x-api-key header is required",
}

Render = Callable[[bytes, RenderContext], Reply]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider route: its counter name, method, dialect, renderer and accepted auth."""

    stat: str
    method: str
    api: Api
    render: Render
    auth: frozenset[str]
    faultable: bool = True


ENDPOINTS = {
    "chat/completions": Endpoint(
        "chat_completions", "POST", Api.OPENAI, openai_api.chat_completions, frozenset({BEARER})
    ),
    "responses": Endpoint(
        "responses", "POST", Api.OPENAI, responses_api.responses, frozenset({BEARER})
    ),
    "embeddings": Endpoint(
        "embeddings", "POST", Api.OPENAI, openai_api.embeddings, frozenset({BEARER})
    ),
    # Anthropic SDKs from 2.x send the API key as a bearer token, older ones as x-api-key.
    "messages": Endpoint(
        "messages", "POST", Api.ANTHROPIC, anthropic_api.messages, frozenset({BEARER, API_KEY})
    ),
    "models": Endpoint(
        "models",
        "GET",
        Api.OPENAI,
        openai_api.models,
        frozenset({BEARER, API_KEY}),
        faultable=False,
    ),
}


@dataclass(frozen=True, slots=True)
class Call:
    """An admitted provider request."""

    channel: ChannelState
    channel_name: str
    endpoint: Endpoint
    body: bytes
    request_id: str
    headers: Headers
    receive: Receive
    send: Send


class DemoUpstream:
    """The ASGI app. ``state`` is exposed so in-process tests can inspect or drive it directly."""

    def __init__(self, state: UpstreamState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        try:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "http" and scope["path"].startswith(CONTROL_PREFIX):
                await handle_control(self.state, scope, receive, send)
            elif scope["type"] == "http":
                await self._provider(scope, receive, send)
        except ClientDisconnectedError:
            return

    async def _provider(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, _, route = scope["path"].strip("/").partition("/v1/")
        endpoint = ENDPOINTS.get(route.rstrip("/"))
        api = endpoint.api if endpoint is not None else Api.OPENAI
        request_id = uuid.uuid4().hex
        headers = _response_headers(api, f"up-{request_id}")
        try:
            body = await read_body(receive)
            channel, endpoint = self._admit(scope, name, endpoint)
            call = Call(channel, name, endpoint, body, request_id, headers, receive, send)
            await _serve(call)
        except UpstreamError as error:
            await send_json(send, error.status, error_body(api, error), (*headers, *error.headers))

    def _admit(
        self, scope: Scope, name: str, endpoint: Endpoint | None
    ) -> tuple[ChannelState, Endpoint]:
        channel = self.state.channels.get(name)
        if channel is None:
            raise UpstreamError(404, f"unknown channel {name!r}")
        if endpoint is None:
            raise UpstreamError(404, f"unknown endpoint {scope['path']}")
        if scope["method"] != endpoint.method:
            raise UpstreamError(405, f"method {scope['method']} not allowed")
        channel.count(endpoint.stat)
        if not _authorized(scope["headers"], endpoint.auth):
            raise UpstreamError(401, AUTH_MESSAGES[endpoint.api])
        return channel, endpoint


async def _serve(call: Call) -> None:
    fault = call.channel.take_fault() if call.endpoint.faultable else None
    if fault is not None:
        log.info(
            "fault_fired",
            channel=call.channel_name,
            kind=str(fault.kind),
            request_id=f"up-{call.request_id}",
        )
    if fault is not None and fault.kind in {FaultKind.STATUS, FaultKind.RATE_LIMIT, FaultKind.HANG}:
        await _preempt(call, fault)
        return
    include_usage = fault is None or fault.kind is not FaultKind.NO_USAGE
    context = RenderContext(
        call.request_id, int(time.time()), include_usage, call.channel.prompt_cache
    )
    reply = call.endpoint.render(call.body, context)
    if call.channel.latency_ms:
        await asyncio.sleep(call.channel.latency_ms / 1000)
    cut_after = (
        fault.after_chunks if fault is not None and fault.kind is FaultKind.CUT_STREAM else None
    )
    delay_s = call.channel.chunk_delay_ms / 1000
    await send_reply(call.send, reply, call.headers, delay_s=delay_s, cut_after=cut_after)


async def _preempt(call: Call, fault: FaultSpec) -> None:
    """Faults that replace the answer entirely: an error status, a 429, or silence."""
    if fault.kind is FaultKind.HANG:
        if await wait_for_disconnect(call.receive, fault.hang_seconds):
            return
        raise UpstreamError(504, "demo fault: hang elapsed")
    if fault.kind is FaultKind.RATE_LIMIT:
        retry_after = ((b"retry-after", str(fault.retry_after).encode()),)
        raise UpstreamError(429, "demo fault: rate limit reached", headers=retry_after)
    raise UpstreamError(fault.status, f"demo fault: status {fault.status}")


def _response_headers(api: Api, upstream_id: str) -> Headers:
    request_id = upstream_id.encode()
    if api is Api.ANTHROPIC:
        return ((b"x-request-id", request_id), (b"request-id", request_id))
    return ((b"x-request-id", request_id),)


def _authorized(raw: Iterable[tuple[bytes, bytes]], accepted: frozenset[str]) -> bool:
    for name, value in raw:
        if name == b"authorization" and BEARER in accepted:
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return True
        elif name == b"x-api-key" and API_KEY in accepted and value.strip():
            return True
    return False


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    channels: Sequence[str] | None = None, latency_ms: int = 0, chunk_delay_ms: int = 0
) -> DemoUpstream:
    """Build the demo upstream for ``channels`` (default: ``DEFAULT_CHANNELS``)."""
    names = list(dict.fromkeys(DEFAULT_CHANNELS if channels is None else channels))
    invalid = [name for name in names if not CHANNEL_NAME.fullmatch(name)]
    if not names or invalid:
        raise ValueError(f"channel names must match {CHANNEL_NAME.pattern}: {invalid or names}")
    endpoints = [endpoint.stat for endpoint in ENDPOINTS.values()]
    state = UpstreamState(
        names, latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms, endpoints=endpoints
    )
    return DemoUpstream(state)
