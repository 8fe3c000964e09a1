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
from tollway.runtime.breakers import request_scopes
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from tollway.events.limits import BreakerTripped
    from tollway.router.channels import ChannelCache
    from tollway.runtime.breakers import BreakerBoard

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per candidate and the base of the jittered exponential backoff."""

    attempts_per_channel: int = 2
    backoff_ms: int = 50


class Router:
    """Runs authorized requests against their plans."""

    def __init__(
        self, channels: ChannelCache, policy: RetryPolicy, breakers: BreakerBoard | None = None
    ) -> None:
        """Call upstreams through ``channels`` under ``policy``, never past an open breaker."""
        self._channels = channels
        self._policy = policy
        self._breakers = breakers

    def _open_breaker(self, env: Envelope[RequestAuthorized]) -> BreakerTripped | None:
        # Checked before every attempt: a breaker that trips while requests wait in
        # gw.authorized stops them before they reach an upstream.
        if self._breakers is None:
            return None
        req = env.payload.request
        scopes = request_scopes(req.account_id, req.key_id, req.project_id, req.task_id)
        return self._breakers.open_for(scopes, datetime.now(UTC))

    async def execute(self, env: Envelope[RequestAuthorized]) -> list[Outgoing]:
        """Serve one request; return the usage events and the reply, in publishing order."""
        auth = env.payload
        req = auth.request
        attempts: list[AttemptFinished] = []
        served: UpstreamResult | None = None
        last: UpstreamResult | None = None
        for candidate in [c for c in req.plan if c.bucket == auth.bucket]:
            served, last = await self._try_candidate(env, candidate, attempts, last)
            if served is not None or (last is not None and not last.retryable):
                break
            if self._open_breaker(env) is not None:
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
            if remaining <= 0 or self._open_breaker(env) is not None:
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
        tripped = self._open_breaker(env) if served is None else None
        if tripped is not None:
            status, body = 429, _breaker_error(tripped)
        finished = RequestFinished(
            request_id=req.request_id,
            account_id=req.account_id,
            hold_id=auth.hold_id,
            **_served_fields(attempts[-1] if served is not None else None),
            status=status,
            attempts=len(attempts),
            key_id=req.key_id,
            project_id=req.project_id,
            catalog_model=req.catalog_model,
            fallbacks=max(0, len({a.candidate.channel_id for a in attempts}) - 1),
            stopped_by=f"breaker:{tripped.scope}:{tripped.name}" if tripped else None,
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
        key_id=req.key_id,
        project_id=req.project_id,
        catalog_model=req.catalog_model,
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


def _breaker_error(tripped: BreakerTripped) -> dict[str, Any]:
    message = (
        f"Breaker '{tripped.name}' is open on {tripped.scope} '{tripped.scope_id}':"
        f" {tripped.reason}."
    )
    return {
        "error": {
            "message": message,
            "type": "rate_limit_error",
            "param": None,
            "code": "breaker_open",
        }
    }


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
