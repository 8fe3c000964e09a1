"""The ``/_control/`` API through which a test harness drives the demo upstream.

    GET    /_control/channels            {"channels": [...]}
    GET    /_control/faults              armed faults per channel, head of each queue first
    POST   /_control/faults              arm a fault (body: ``FaultSpec``); 404: unknown channel
    DELETE /_control/faults[?channel=]   clear all armed faults, or one channel's
    GET    /_control/stats               requests received per channel and endpoint
    DELETE /_control/stats               zero the counters
    POST   /_control/latency             change latency (body: ``LatencySpec``)

Errors use the OpenAI error shape, like every client-facing error in Tollway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
import structlog

from tollway.devstack.upstream.protocol import Api, UpstreamError, error_body, parse_body
from tollway.devstack.upstream.state import (
    FaultSpec,
    LatencySpec,
    UnknownChannelError,
    UpstreamState,
)
from tollway.devstack.upstream.wire import Receive, Scope, Send, read_body, send_json

log = structlog.get_logger(__name__)

CONTROL_PREFIX = "/_control/"
Query = dict[str, list[str]]
ControlHandler = Callable[[UpstreamState, Query, bytes], dict[str, Any]]


def list_channels(state: UpstreamState, _query: Query, _body: bytes) -> dict[str, Any]:
    """``GET /_control/channels``."""
    return {"channels": list(state.channels)}


def list_faults(state: UpstreamState, _query: Query, _body: bytes) -> dict[str, Any]:
    """``GET /_control/faults``."""
    return {"faults": state.armed()}


def arm_fault(state: UpstreamState, _query: Query, body: bytes) -> dict[str, Any]:
    """``POST /_control/faults``."""
    spec = parse_body(FaultSpec, body)
    queued = state.arm(spec)
    log.info(
        "fault_armed", channel=spec.channel, kind=str(spec.kind), count=spec.count, queued=queued
    )
    return {"armed": spec.model_dump(mode="json"), "queued": queued}


def clear_faults(state: UpstreamState, query: Query, _body: bytes) -> dict[str, Any]:
    """``DELETE /_control/faults[?channel=NAME]``."""
    channel = query.get("channel", [None])[-1]
    return {"cleared": state.clear_faults(channel)}


def read_stats(state: UpstreamState, _query: Query, _body: bytes) -> dict[str, Any]:
    """``GET /_control/stats``."""
    return {"channels": state.stats()}


def reset_stats(state: UpstreamState, _query: Query, _body: bytes) -> dict[str, Any]:
    """``DELETE /_control/stats``."""
    state.reset_stats()
    return {"channels": state.stats()}


def set_latency(state: UpstreamState, _query: Query, body: bytes) -> dict[str, Any]:
    """``POST /_control/latency``."""
    state.set_latency(parse_body(LatencySpec, body))
    latency = {
        name: {"latency_ms": channel.latency_ms, "chunk_delay_ms": channel.chunk_delay_ms}
        for name, channel in state.channels.items()
    }
    return {"channels": latency}


ROUTES: dict[tuple[str, str], ControlHandler] = {
    ("GET", "/_control/channels"): list_channels,
    ("GET", "/_control/faults"): list_faults,
    ("POST", "/_control/faults"): arm_fault,
    ("DELETE", "/_control/faults"): clear_faults,
    ("GET", "/_control/stats"): read_stats,
    ("DELETE", "/_control/stats"): reset_stats,
    ("POST", "/_control/latency"): set_latency,
}


async def handle_control(state: UpstreamState, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one control request."""
    body = await read_body(receive)
    try:
        payload = _dispatch(state, scope, body)
    except UpstreamError as error:
        await send_json(send, error.status, error_body(Api.OPENAI, error))
        return
    await send_json(send, 200, orjson.dumps(payload))


def _dispatch(state: UpstreamState, scope: Scope, body: bytes) -> dict[str, Any]:
    route = (scope["method"], scope["path"].rstrip("/"))
    handler = ROUTES.get(route)
    if handler is None:
        raise UpstreamError(404, f"no control route {route[0]} {route[1]}")
    query = parse_qs(scope.get("query_string", b"").decode())
    try:
        return handler(state, query, body)
    except UnknownChannelError as exc:
        raise UpstreamError(404, f"unknown channel {exc.args[0]!r}", param="channel") from None
