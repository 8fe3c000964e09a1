"""One upstream HTTP exchange, whatever the dialect: a JSON call or an opened SSE stream.

Every call returns an :class:`UpstreamResult` whatever happened (a body, or a classified
failure), so every attempt can be recorded. The channel's concurrency cap is held for the whole
exchange, a stream included.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tollway.events.gateway import SseFrame
from tollway.events.pricing import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tollway.router.channels import Channel

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """What one attempt produced: a response body or a classified failure."""

    outcome: str
    status: int | None
    body: dict[str, Any] | None
    usage: Usage
    latency_ms: int
    error_class: str | None = None
    upstream_request_id: str | None = None
    retry_after: float | None = None
    ttft_ms: int | None = None
    delivered: bool = False
    # What the upstream said the attempt cost (micro-units of the channel's cost currency).
    reported_cost_micro: int | None = None

    @property
    def ok(self) -> bool:
        """The upstream answered successfully."""
        return self.outcome == "ok"

    @property
    def served(self) -> bool:
        """The client received (part of) this attempt's answer, so it pays for this attempt."""
        return self.ok or self.delivered

    @property
    def retryable(self) -> bool:
        """Worth another try (here or on the next candidate)."""
        return not self.served and (self.status is None or self.status in RETRYABLE_STATUS)


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """A request ready to send: path under the channel's base URL, JSON body, headers."""

    path: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def failure(outcome: str, error_class: str, started: float, **extra: Any) -> UpstreamResult:
    """A failed attempt without a usable body."""
    return UpstreamResult(
        outcome=outcome,
        status=extra.pop("status", None),
        body=extra.pop("body", None),
        usage=Usage(),
        latency_ms=ms_since(started),
        error_class=error_class,
        **extra,
    )


async def post_json(channel: Channel, call: UpstreamCall, timeout_s: float) -> httpx.Response:
    """POST and read the whole answer, under the channel's concurrency cap."""
    async with channel.slots:
        return await channel.client.post(
            call.path, json=call.payload, headers=call.headers, timeout=timeout_s
        )


@contextlib.asynccontextmanager
async def open_stream(
    channel: Channel, call: UpstreamCall, timeout_s: float
) -> AsyncIterator[httpx.Response]:
    """Open a streamed POST; leaving the block closes the connection (cancels the upstream)."""
    async with (
        channel.slots,
        channel.client.stream(
            "POST", call.path, json=call.payload, headers=call.headers, timeout=timeout_s
        ) as response,
    ):
        yield response


def error_result(response: httpx.Response, body: Any, started: float) -> UpstreamResult:
    """An HTTP error status from the upstream, with its retry-after when given."""
    retry_after = response.headers.get("retry-after")
    return UpstreamResult(
        outcome="http_error",
        status=response.status_code,
        body=body if isinstance(body, dict) else {"value": body},
        usage=Usage(),
        latency_ms=ms_since(started),
        error_class=f"http_{response.status_code}",
        upstream_request_id=upstream_id(response),
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def upstream_id(response: httpx.Response) -> str | None:
    """The provider's request id (OpenAI: x-request-id, Anthropic: request-id)."""
    found: str | None = response.headers.get("x-request-id") or response.headers.get("request-id")
    return found


async def sse_frames(response: httpx.Response) -> AsyncIterator[SseFrame]:
    """Parse a server-sent event stream into frames (``event`` and the joined ``data``)."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseFrame(event=event, data="\n".join(data))
            event, data = None, []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield SseFrame(event=event, data="\n".join(data))


def ms_since(started: float) -> int:
    """Whole milliseconds since ``started`` (a perf_counter reading)."""
    return int((time.perf_counter() - started) * 1000)
