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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from tollway.events import topics
from tollway.events.envelope import Envelope, Payload, make
from tollway.events.gateway import (
    AttemptFinished,
    Candidate,
    ReplyFinal,
    RequestAuthorized,
    RequestFinished,
    SkippedCandidate,
)
from tollway.events.ids import derived_id
from tollway.events.pricing import Usage
from tollway.events.routing import ChannelHealthChanged
from tollway.router.adapters import call_json
from tollway.router.cancels import Cancels
from tollway.router.health import HealthBoard, HealthPolicy, Transition
from tollway.router.streaming import Sink, StreamAttempt
from tollway.router.upstream import UpstreamResult
from tollway.runtime.bodies import BodyUnavailableError
from tollway.runtime.breakers import request_scopes
from tollway.runtime.metrics import observe_attempt, observe_breaker
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from tollway.events.limits import BreakerTripped
    from tollway.router.channels import Channel, ChannelCache
    from tollway.runtime.bodies import BodyKeys
    from tollway.runtime.breakers import BreakerBoard

    Attempt = Callable[[Channel, Candidate, float], Awaitable[UpstreamResult]]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per candidate and the base of the jittered exponential backoff."""

    attempts_per_channel: int = 2
    backoff_ms: int = 50


@dataclass(slots=True)
class _Run:
    """What one request's execution has produced so far."""

    attempts: list[AttemptFinished] = field(default_factory=list)
    skipped: list[SkippedCandidate] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    served: UpstreamResult | None = None
    last: UpstreamResult | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    stopped_by: BreakerTripped | None = None


def order_candidates(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """Tiers in order (primary, backup 1, …); inside a tier, a weighted random order."""
    ordered: list[Candidate] = []
    for tier in sorted({c.tier for c in candidates}):
        pool = [c for c in candidates if c.tier == tier]
        while pool:
            pick = rng.choices(range(len(pool)), weights=[c.weight for c in pool])[0]
            ordered.append(pool.pop(pick))
    return ordered


@dataclass(frozen=True, slots=True)
class Circuits:
    """Channel health wiring: the board, who this router is, where transitions are kept."""

    board: HealthBoard = field(default_factory=lambda: HealthBoard(HealthPolicy()))
    router_id: str = "router"
    on_change: Callable[[Envelope[ChannelHealthChanged]], Awaitable[None]] | None = None


class Router:
    """Runs authorized requests against their plans."""

    def __init__(  # noqa: PLR0913, PLR0917 - a composition-root constructor
        self,
        channels: ChannelCache,
        policy: RetryPolicy,
        circuits: Circuits | None = None,
        rng: random.Random | None = None,
        cancels: Cancels | None = None,
        breakers: BreakerBoard | None = None,
        bodies: BodyKeys | None = None,
    ) -> None:
        """Call upstreams through ``channels`` under ``policy``, skipping open circuits.

        ``cancels`` flags streams whose client went away; ``breakers`` stop a runaway key,
        project, task or account before its next attempt.
        """
        self._channels = channels
        self._policy = policy
        self._circuits = circuits or Circuits()
        self.health = self._circuits.board
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not crypto
        self._cancels = cancels or Cancels()
        self._breakers = breakers
        self._bodies = bodies

    def _breaker_stops(self, env: Envelope[RequestAuthorized], run: _Run) -> bool:
        # Checked before every attempt: a breaker that trips while requests wait in
        # gw.authorized stops them before they reach an upstream.
        if self._breakers is None:
            return False
        req = env.payload.request
        scopes = request_scopes(req.account_id, req.key_id, req.project_id, req.task_id)
        run.stopped_by = self._breakers.open_for(scopes, datetime.now(UTC))
        return run.stopped_by is not None

    async def execute(
        self, env: Envelope[RequestAuthorized], sink: Sink | None = None
    ) -> list[Outgoing]:
        """Serve one request; return the usage events and the reply, in publishing order.

        A stream's frames go to ``sink`` as they arrive; its reply is the stream itself.
        """
        opened = await self._opened(env)
        if opened is None:
            return self._emits(env, _Run())  # its body is gone: past delivery, 504
        env = opened
        req = env.payload.request
        if not req.stream or sink is None:
            return await self._run_plan(env, _Run(), self._json_attempt(env))
        with self._cancels.watch(req.request_id) as cancelled:
            run = _Run(cancelled=cancelled)
            return await self._run_plan(env, run, StreamAttempt(env, sink, cancelled).run)

    async def _opened(self, env: Envelope[RequestAuthorized]) -> Envelope[RequestAuthorized] | None:
        """The authorization with its request body in clear, in memory only.

        None once the key that sealed it is deleted (the request is past delivery).
        """
        req = env.payload.request
        if req.sealed_body is None:
            return env
        if self._bodies is None:
            log.error("request_body_sealed_without_keys")
            return None
        try:
            body = await self._bodies.open(req.sealed_body, req.request_id)
        except BodyUnavailableError as exc:
            log.warning("request_body_unavailable", reason=str(exc))
            return None
        except (OSError, asyncpg.PostgresError) as exc:
            # Fail closed: no upstream call without the body; the hold is released.
            log.warning("request_body_key_unreadable", error=type(exc).__name__)
            return None
        request = req.model_copy(update={"body": body, "sealed_body": None})
        payload = env.payload.model_copy(update={"request": request})
        return env.model_copy(update={"payload": payload})

    def _json_attempt(self, env: Envelope[RequestAuthorized]) -> Attempt:
        async def attempt(channel: Channel, candidate: Candidate, limit_s: float) -> UpstreamResult:
            return await call_json(channel, env.payload.request, candidate.upstream_model, limit_s)

        return attempt

    async def _run_plan(
        self, env: Envelope[RequestAuthorized], run: _Run, attempt: Attempt
    ) -> list[Outgoing]:
        auth = env.payload
        # Only candidates whose bucket the ledger held; refused buckets are on the receipt.
        held = auth.held_buckets()
        covered = [c for c in auth.request.plan if c.bucket in held]
        for candidate in order_candidates(covered, self._rng):
            admitted, moved = self.health.admit(candidate.channel_id, time.monotonic())
            run.transitions.extend([moved] if moved else [])
            if not admitted:
                run.skipped.append(
                    SkippedCandidate(
                        channel_id=candidate.channel_id,
                        channel=candidate.channel,
                        reason="circuit_open",
                    )
                )
                continue
            await self._try_candidate(env, candidate, run, attempt)
            if run.served is not None or run.cancelled.is_set():
                break
            if run.last is not None and not run.last.retryable:
                break
        return self._emits(env, run) + await self._health_events(run.transitions)

    async def _try_candidate(
        self, env: Envelope[RequestAuthorized], candidate: Candidate, run: _Run, attempt: Attempt
    ) -> None:
        deadline = env.payload.request.deadline_at
        for n in range(self._policy.attempts_per_channel):
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0 or run.cancelled.is_set() or self._breaker_stops(env, run):
                return
            if n > 0:
                await asyncio.sleep(_backoff(self._policy.backoff_ms, n, run.last, remaining))
            channel = await self._channels.lookup(candidate.channel_id)
            if channel is None:
                run.last = result = _unavailable()
            else:
                limit = min(remaining, channel.timeout_ms / 1000)
                run.last = result = await attempt(channel, candidate, limit)
            observe_attempt(
                candidate.channel, candidate.route_type, result.outcome, result.latency_ms
            )
            run.attempts.append(_attempt_event(env, candidate, len(run.attempts) + 1, result))
            # A client error (400 from upstream) says nothing about the channel's health.
            healthy = result.served or not result.retryable
            moved = self.health.record(
                candidate.channel_id, ok=healthy, latency_ms=result.latency_ms, now=time.monotonic()
            )
            run.transitions.extend([moved] if moved else [])
            if result.served:
                run.served = result
                return
            if not result.retryable or self.health.state(candidate.channel_id) == "open":
                return

    async def _health_events(self, transitions: list[Transition]) -> list[Outgoing]:
        out = []
        for t in transitions:
            channel = self._channels.get(t.channel_id)
            changed = ChannelHealthChanged(
                channel_id=t.channel_id,
                channel=channel.name if channel else t.channel_id,
                router_id=self._circuits.router_id,
                from_state=t.from_state,
                to_state=t.to_state,
                reason=t.reason,
                error_rate=t.error_rate,
                samples=t.samples,
                p50_latency_ms=t.p50_latency_ms,
                cool_down_seconds=t.cool_down_seconds,
            )
            log.warning("channel_circuit_changed", **changed.model_dump())
            observe_breaker(changed.channel, t.from_state, t.to_state)
            health_env = make(changed)
            if self._circuits.on_change is not None:
                await self._circuits.on_change(health_env)
            out.append(Outgoing.of(topics.CHANNEL_HEALTH, t.channel_id, health_env))
        return out

    def _emits(self, env: Envelope[RequestAuthorized], run: _Run) -> list[Outgoing]:
        auth = env.payload
        req = auth.request
        attempts = run.attempts
        expired = datetime.now(UTC) >= req.deadline_at
        status, body = _reply_body(req.request_id, run, expired=expired)
        if run.served is None and status in {502, 503} and auth.refused:
            # The held routes failed in time; the refused bucket could have served: say so.
            # (Past the deadline no route could have, and the 504 stands.)
            status, body = _refused_reply(auth)
        finished = RequestFinished(
            request_id=req.request_id,
            account_id=req.account_id,
            hold_id=auth.hold_id,
            **_served_fields(attempts[-1] if run.served is not None else None),
            status=status,
            attempts=len(attempts),
            skipped=run.skipped,
            key_id=req.key_id,
            project_id=req.project_id,
            catalog_model=req.catalog_model,
            fallbacks=len(run.skipped)
            + max(0, len({a.candidate.channel_id for a in attempts}) - 1),
            stopped_by=_stopped_by(run),
        )
        usage = [
            Outgoing.of(topics.USAGE, req.account_id, _derive(env, a, f"attempt:{a.attempt}"))
            for a in attempts
        ]
        usage.append(Outgoing.of(topics.USAGE, req.account_id, _derive(env, finished, "finished")))
        if req.stream and run.served is not None:
            return usage  # the stream itself was the reply, and it has ended
        charged = None
        if run.served is not None:
            served = attempts[-1]
            charged = auth.charge_for(served.usage, served.candidate.price, served.candidate.bucket)
        reply = ReplyFinal(
            request_id=req.request_id,
            status=status,
            body=body,
            cost_micro=charged,
            bucket=attempts[-1].candidate.bucket if run.served is not None else auth.bucket,
        )
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
        reported_cost_micro=result.reported_cost_micro,
        reported_cost_currency=_cost_currency(candidate, result),
        delivered=result.delivered,
        key_id=req.key_id,
        project_id=req.project_id,
        catalog_model=req.catalog_model,
    )


def _cost_currency(candidate: Candidate, result: UpstreamResult) -> str | None:
    """The reported cost is in the channel's cost currency (unknown without a cost price)."""
    if result.reported_cost_micro is None or candidate.cost is None:
        return None
    return candidate.cost.currency


def _reply_body(request_id: str, run: _Run, *, expired: bool) -> tuple[int, dict[str, Any]]:
    served, last = run.served, run.last
    if served is not None:
        return _served_reply(request_id, served)
    if run.stopped_by is not None:
        return 429, _breaker_error(run.stopped_by)
    if last is not None and last.status is not None and not last.retryable and last.body:
        return last.status, last.body  # the upstream's own client error, passed through
    if last is None and run.skipped:
        names = ", ".join(s.channel for s in run.skipped)
        message = (
            f"Every route for request {request_id} is temporarily out of service (circuit open:"
            f" {names}). Retry in a few seconds."
        )
        return 503, _error(message, "channels_unavailable")
    trail = ", ".join(
        f"#{a.attempt} {a.candidate.channel} {a.error_class or a.outcome}"
        f" (upstream request {a.upstream_request_id or 'none'})"
        for a in run.attempts
    )
    if last is None or (expired and last.outcome == "timeout"):
        message = f"The deadline of request {request_id} passed. Attempts: {trail or 'none'}."
        return 504, _error(message, "deadline_exceeded")
    return 502, _error(f"Every route failed for request {request_id}: {trail}.", "upstream_failed")


def _served_reply(request_id: str, served: UpstreamResult) -> tuple[int, dict[str, Any]]:
    if served.delivered and served.outcome != "ok":
        # A stream that broke after it started: the client saw an error event, not a clean end.
        message = f"The upstream stream of request {request_id} failed ({served.error_class})."
        return 502, _error(message, "upstream_stream_failed")
    return 200, served.body or {}  # already in the client's dialect, under the catalog name


def _stopped_by(run: _Run) -> str | None:
    tripped = run.stopped_by
    return None if tripped is None else f"breaker:{tripped.scope}:{tripped.name}"


def _breaker_error(tripped: BreakerTripped) -> dict[str, Any]:
    message = (
        f"Breaker '{tripped.name}' is open on {tripped.scope} '{tripped.scope_id}':"
        f" {tripped.reason}."
    )
    error = {"message": message, "type": "rate_limit_error", "param": None, "code": "breaker_open"}
    return {"error": error}


def _refused_reply(auth: RequestAuthorized) -> tuple[int, dict[str, Any]]:
    """Every held route failed and the fallback's bucket was refused: 402 naming the limit."""
    refusal = auth.refused[0]
    message = (
        f"The held routes failed and the fallback to the {refusal.bucket} bucket was refused"
        f" by {refusal.limit}: {refusal.message}"
    )
    body = _error(message, "fallback_refused", "insufficient_quota")
    body["error"]["limit"] = refusal.limit
    return 402, body


def _error(message: str, code: str, kind: str = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
