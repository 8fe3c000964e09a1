"""Executing a route plan.

Try the covered candidates in order, retry what is retryable, record every attempt, answer the
client and tell the ledger which attempt (if any) served.

Event ids are derived from the authorization's id, so a redelivered authorization (the router
crashed before committing its offset) re-emits the same ids and the ledger applies them once.
"""

from __future__ import annotations

import asyncio
import random
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
from tollway.router.adapters import UpstreamResult, call_openai_chat
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from tollway.router.channels import ChannelCache

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per candidate and the base of the jittered exponential backoff."""

    attempts_per_channel: int = 2
    backoff_ms: int = 50


class Router:
    """Runs authorized requests against their plans."""

    def __init__(self, channels: ChannelCache, policy: RetryPolicy) -> None:
        """Call upstreams through ``channels`` under ``policy``."""
        self._channels = channels
        self._policy = policy

    async def execute(self, env: Envelope[RequestAuthorized]) -> list[Outgoing]:
        """Serve one request; return the usage events and the reply, in publishing order."""
        auth = env.payload
        req = auth.request
        attempts: list[AttemptFinished] = []
        served: UpstreamResult | None = None
        last: UpstreamResult | None = None
        # Only candidates whose bucket the ledger held; refused buckets are on the receipt.
        held = auth.held_buckets()
        for candidate in [c for c in req.plan if c.bucket in held]:
            served, last = await self._try_candidate(env, candidate, attempts, last)
            if served is not None or (last is not None and not last.retryable):
                break
        return self._emits(env, attempts, served, last)

    async def _try_candidate(
        self,
        env: Envelope[RequestAuthorized],
        candidate: Candidate,
        attempts: list[AttemptFinished],
        last: UpstreamResult | None,
    ) -> tuple[UpstreamResult | None, UpstreamResult | None]:
        deadline = env.payload.request.deadline_at
        for n in range(self._policy.attempts_per_channel):
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                return None, last
            if n > 0:
                await asyncio.sleep(_backoff(self._policy.backoff_ms, n, last, remaining))
            last = await self._attempt(env, candidate, remaining)
            attempts.append(_attempt_event(env, candidate, len(attempts) + 1, last))
            if last.ok:
                return last, last
            if not last.retryable:
                return None, last
        return None, last

    async def _attempt(
        self, env: Envelope[RequestAuthorized], candidate: Candidate, remaining: float
    ) -> UpstreamResult:
        channel = self._channels.get(candidate.channel_id)
        if channel is None:
            return UpstreamResult(
                outcome="connect_error",
                status=None,
                body=None,
                usage=_zero(),
                latency_ms=0,
                error_class="channel_unavailable",
            )
        timeout = min(remaining, channel.timeout_ms / 1000)
        return await call_openai_chat(
            channel, env.payload.request.body, candidate.upstream_model, timeout
        )

    def _emits(
        self,
        env: Envelope[RequestAuthorized],
        attempts: list[AttemptFinished],
        served: UpstreamResult | None,
        last: UpstreamResult | None,
    ) -> list[Outgoing]:
        auth = env.payload
        req = auth.request
        status, body = _reply_body(req.catalog_model, req.request_id, attempts, served, last)
        if served is None and status >= 500 and auth.refused:
            status, body = _refused_reply(auth)
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
        "price": attempt.candidate.price,
    }


def _derive(cause: Envelope[Any], payload: Payload, salt: str) -> Envelope[Payload]:
    return make(payload, trace=cause.trace, event_id=derived_id(cause.id, salt))


def _zero() -> Usage:
    return Usage()


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
        usage=result.usage,
        upstream_request_id=result.upstream_request_id,
    )


def _reply_body(
    catalog_model: str,
    request_id: str,
    attempts: list[AttemptFinished],
    served: UpstreamResult | None,
    last: UpstreamResult | None,
) -> tuple[int, dict[str, Any]]:
    if served is not None and served.body is not None:
        return 200, {**served.body, "model": catalog_model}
    if last is not None and last.status is not None and not last.retryable and last.body:
        return last.status, last.body  # the upstream's own client error, passed through
    if last is None:
        return 504, _error("The request's deadline passed before any upstream call.", "timeout")
    trail = ", ".join(f"#{a.attempt} {a.candidate.channel} {a.outcome}" for a in attempts)
    return 502, _error(f"Every route failed for request {request_id}: {trail}.", "upstream_failed")


def _refused_reply(auth: RequestAuthorized) -> tuple[int, dict[str, Any]]:
    """Every held route failed and the fallback's bucket was refused: 402 naming the limit."""
    refusal = auth.refused[0]
    message = (
        f"The held routes failed and the fallback to the {refusal.bucket} bucket was refused"
        f" by {refusal.limit}: {refusal.message}"
    )
    return 402, _error(message, "fallback_refused", "insufficient_quota")


def _error(message: str, code: str, kind: str = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
