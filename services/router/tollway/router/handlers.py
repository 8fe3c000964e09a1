"""Executing a route plan.

Try the covered candidates in order, retry what is retryable, record every attempt, answer the
client and tell the ledger which attempt (if any) served. A streamed request runs the same plan
with streamed attempts (``streaming``): once the client has received a frame, that attempt is
the served one and the plan stops.

Event ids are derived from the authorization's id, so a redelivered authorization (the router
crashed before committing its offset) re-emits the same ids and the ledger applies them once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from tollway.events import topics
from tollway.events.envelope import Envelope, Payload, make
from tollway.events.gateway import (
    AttemptFinished,
    Candidate,
    ReplyFinal,
    RequestAuthorized,
    RequestFinished,
)
from tollway.events.ids import derived_id
from tollway.events.pricing import Usage
from tollway.router.adapters import call_json
from tollway.router.streaming import Sink, StreamAttempt
from tollway.router.upstream import UpstreamResult
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from tollway.router.cancels import Cancels
    from tollway.router.channels import Channel, ChannelCache

Attempt = Callable[["Channel", Candidate, float], Awaitable[UpstreamResult]]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per candidate and the base of the jittered exponential backoff."""

    attempts_per_channel: int = 2
    backoff_ms: int = 50


class Router:
    """Runs authorized requests against their plans."""

    def __init__(self, channels: ChannelCache, policy: RetryPolicy, cancels: Cancels) -> None:
        """Call upstreams through ``channels`` under ``policy``; stop streams on ``cancels``."""
        self._channels = channels
        self._policy = policy
        self._cancels = cancels

    async def execute(self, env: Envelope[RequestAuthorized], sink: Sink) -> list[Outgoing]:
        """Serve one request; stream frames go to ``sink`` as they arrive.

        Returns the usage events and the final reply (when the client got no stream), in
        publishing order.
        """
        req = env.payload.request
        if not req.stream:
            attempts, last = await self._run_plan(env, self._json_attempt(env), asyncio.Event())
            return self._emits(env, attempts, last)
        with self._cancels.watch(req.request_id) as cancelled:
            streamer = StreamAttempt(env, sink, cancelled)
            attempts, last = await self._run_plan(env, streamer.run, cancelled)
        return self._emits(env, attempts, last)

    def _json_attempt(self, env: Envelope[RequestAuthorized]) -> Attempt:
        async def attempt(channel: Channel, candidate: Candidate, limit_s: float) -> UpstreamResult:
            return await call_json(channel, env.payload.request, candidate.upstream_model, limit_s)

        return attempt

    async def _run_plan(
        self, env: Envelope[RequestAuthorized], attempt: Attempt, cancelled: asyncio.Event
    ) -> tuple[list[AttemptFinished], UpstreamResult | None]:
        auth = env.payload
        held = auth.held_buckets()
        attempts: list[AttemptFinished] = []
        last: UpstreamResult | None = None
        for candidate in [c for c in auth.request.plan if c.bucket in held]:
            last = await self._try_candidate(env, candidate, attempt, attempts, last, cancelled)
            if last is not None and (last.served or not last.retryable or cancelled.is_set()):
                break
        return attempts, last

    async def _try_candidate(  # noqa: PLR0913, PLR0917 - the plan loop's state, passed explicitly
        self,
        env: Envelope[RequestAuthorized],
        candidate: Candidate,
        attempt: Attempt,
        attempts: list[AttemptFinished],
        last: UpstreamResult | None,
        cancelled: asyncio.Event,
    ) -> UpstreamResult | None:
        deadline = env.payload.request.deadline_at
        for n in range(self._policy.attempts_per_channel):
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0 or cancelled.is_set():
                return last
            if n > 0:
                await asyncio.sleep(_backoff(self._policy.backoff_ms, n, last, remaining))
            channel = self._channels.get(candidate.channel_id)
            if channel is None:
                last = _unavailable()
            else:
                last = await attempt(channel, candidate, min(remaining, channel.timeout_ms / 1000))
            attempts.append(_attempt_event(env, candidate, len(attempts) + 1, last))
            if last.served or not last.retryable:
                return last
        return last

    def _emits(
        self,
        env: Envelope[RequestAuthorized],
        attempts: list[AttemptFinished],
        last: UpstreamResult | None,
    ) -> list[Outgoing]:
        auth = env.payload
        req = auth.request
        served = last if last is not None and last.served else None
        expired = datetime.now(UTC) >= req.deadline_at
        status, body = _reply_body(req.request_id, attempts, served, last, expired=expired)
        finished = RequestFinished(
            request_id=req.request_id,
            account_id=req.account_id,
            hold_id=auth.hold_id,
            **_served_fields(attempts[-1] if served is not None else None),
            status=status,
            attempts=len(attempts),
        )
        usage = [
            Outgoing.of(topics.USAGE, req.account_id, _derive(env, a, f"attempt:{a.attempt}"))
            for a in attempts
        ]
        usage.append(Outgoing.of(topics.USAGE, req.account_id, _derive(env, finished, "finished")))
        if req.stream and served is not None:
            return usage  # the stream itself was the reply, and it has ended
        reply = ReplyFinal(request_id=req.request_id, status=status, body=body)
        return [
            Outgoing.of(
                topics.replies_topic(req.edge_id), req.request_id, _derive(env, reply, "reply")
            ),
            *usage,
        ]


def _served_fields(attempt: AttemptFinished | None) -> dict[str, Any]:
    if attempt is None:
        return {}
    return {
        "served_attempt": attempt.attempt,
        "served_channel_id": attempt.candidate.channel_id,
        "served_bucket": attempt.candidate.bucket,
        "usage": attempt.usage,
        "usage_estimated": attempt.usage_estimated,
        "price": attempt.candidate.price,
    }


def _derive(cause: Envelope[Any], payload: Payload, salt: str) -> Envelope[Payload]:
    return make(payload, trace=cause.trace, event_id=derived_id(cause.id, salt))


def _unavailable() -> UpstreamResult:
    return UpstreamResult(
        outcome="connect_error",
        status=None,
        body=None,
        usage=Usage(),
        latency_ms=0,
        error_class="channel_unavailable",
    )


def _backoff(base_ms: int, n: int, last: UpstreamResult | None, remaining: float) -> float:
    if last is not None and last.retry_after is not None:
        return min(last.retry_after, remaining)
    delay = base_ms / 1000 * (2 ** (n - 1))
    return min(random.uniform(delay / 2, delay), remaining)  # noqa: S311 - jitter, not crypto


def _attempt_event(
    env: Envelope[RequestAuthorized], candidate: Candidate, number: int, result: UpstreamResult
) -> AttemptFinished:
    req = env.payload.request
    return AttemptFinished(
        request_id=req.request_id,
        account_id=req.account_id,
        attempt=number,
        candidate=candidate,
        outcome=result.outcome,
        status=result.status,
        error_class=result.error_class,
        latency_ms=result.latency_ms,
        ttft_ms=result.ttft_ms,
        usage=result.usage,
        usage_estimated=result.usage.estimated,
        upstream_request_id=result.upstream_request_id,
    )


def _reply_body(
    request_id: str,
    attempts: list[AttemptFinished],
    served: UpstreamResult | None,
    last: UpstreamResult | None,
    *,
    expired: bool,
) -> tuple[int, dict[str, Any]]:
    if served is not None:
        return 200, served.body or {}
    if last is not None and last.status is not None and not last.retryable and last.body:
        return last.status, last.body  # the upstream's own client error, passed through
    trail = ", ".join(
        f"#{a.attempt} {a.candidate.channel} {a.error_class or a.outcome}"
        f" (upstream request {a.upstream_request_id or 'none'})"
        for a in attempts
    )
    if last is None or (expired and last.outcome == "timeout"):
        message = f"The deadline of request {request_id} passed. Attempts: {trail or 'none'}."
        return 504, _error(message, "deadline_exceeded")
    return 502, _error(f"Every route failed for request {request_id}: {trail}.", "upstream_failed")


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
