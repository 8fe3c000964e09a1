"""Protocol adapters: turn a client's request into an upstream call and read the usage back.

Only the OpenAI-compatible chat adapter exists so far; each adapter returns an
:class:`UpstreamResult` whatever happened, so every attempt can be recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from tollway.events.pricing import Usage

if TYPE_CHECKING:
    from tollway.router.channels import Channel

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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

    @property
    def ok(self) -> bool:
        """The upstream answered successfully."""
        return self.outcome == "ok"

    @property
    def retryable(self) -> bool:
        """Worth another try (here or on the next candidate)."""
        return not self.ok and (self.status is None or self.status in RETRYABLE_STATUS)


def openai_usage(body: dict[str, Any]) -> Usage:
    """Read OpenAI ``usage`` (cached input tokens included); zero when absent."""
    raw = body.get("usage") or {}
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
    )


async def call_openai_chat(
    channel: Channel, body: dict[str, Any], upstream_model: str, timeout_s: float
) -> UpstreamResult:
    """POST /chat/completions on an OpenAI-compatible channel."""
    started = time.perf_counter()
    payload = {**body, "model": upstream_model, "stream": False}
    headers = {"authorization": f"Bearer {channel.secret}"}
    try:
        async with channel.slots:
            response = await channel.client.post(
                "/chat/completions", json=payload, headers=headers, timeout=timeout_s
            )
    except httpx.TimeoutException as exc:
        return _failure("timeout", type(exc).__name__, started)
    except httpx.HTTPError as exc:
        return _failure("connect_error", type(exc).__name__, started)
    return _read(response, started)


def _failure(outcome: str, error_class: str, started: float) -> UpstreamResult:
    return UpstreamResult(
        outcome=outcome,
        status=None,
        body=None,
        usage=Usage(),
        latency_ms=_ms(started),
        error_class=error_class,
    )


def _read(response: httpx.Response, started: float) -> UpstreamResult:
    latency = _ms(started)
    upstream_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        return UpstreamResult(
            outcome="protocol_error",
            status=response.status_code,
            body=None,
            usage=Usage(),
            latency_ms=latency,
            error_class="invalid_json",
            upstream_request_id=upstream_id,
        )
    if not isinstance(body, dict):
        body = {"value": body}
    if response.status_code >= 400:
        retry_after = response.headers.get("retry-after")
        return UpstreamResult(
            outcome="http_error",
            status=response.status_code,
            body=body,
            usage=openai_usage(body),
            latency_ms=latency,
            error_class=f"http_{response.status_code}",
            upstream_request_id=upstream_id,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    return UpstreamResult(
        outcome="ok",
        status=response.status_code,
        body=body,
        usage=openai_usage(body),
        latency_ms=latency,
        upstream_request_id=upstream_id,
    )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
