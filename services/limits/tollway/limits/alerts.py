"""Operational alerts: the rules over channel, route and account windows, and how one goes out.

An alert is published on ``limits.alerts`` through the outbox and, in the same transaction, queued
once for every matching webhook subscription, so a crash neither loses nor doubles a delivery
beyond at-least-once. Each (scope, metric) fires at most once per window of event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.ids import derived_id
from tollway.events.limits import Alert, BudgetThresholdCrossed, breaker_key
from tollway.events.pricing import cost_micro
from tollway.limits import store
from tollway.limits.domain import MINUTE_SECONDS, RatePolicy, mix_shift, rate_breach, spend_metric
from tollway.limits.store import Count
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    import asyncpg

    from tollway.events.gateway import AttemptFinished, RequestFinished

log = structlog.get_logger(__name__)
SERVER_ERROR = 500
TOO_MANY = 429


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The alert rules' thresholds (from settings, fixed at start)."""

    errors: RatePolicy = field(default_factory=lambda: RatePolicy(0.5, 5))
    fallbacks: RatePolicy = field(default_factory=lambda: RatePolicy(0.3, 10))
    route_spend_micro_per_minute: Mapping[str, int] = field(default_factory=dict)
    mix_shift: float = 0.5
    mix_min_requests: int = 20


async def publish(conn: asyncpg.Connection, cause: Envelope[Any], alert: Alert) -> Outgoing:
    """The alert's message, its id derived from its cause; webhook deliveries queued with it."""
    env = make(
        alert,
        trace=cause.trace,
        occurred_at=alert.window_end,
        event_id=derived_id(cause.id, f"alert:{alert.scope}:{alert.scope_id}:{alert.metric}"),
    )
    return await publish_envelope(conn, env)


async def publish_envelope(conn: asyncpg.Connection, env: Envelope[Alert]) -> Outgoing:
    """Publish an alert envelope through the outbox and queue its webhook deliveries."""
    alert = env.payload
    message = Outgoing.of(topics.ALERTS, breaker_key(alert.scope, alert.scope_id), env)
    for subscription_id, scopes in await store.subscribers(conn):
        if scopes and alert.scope not in scopes:
            continue
        delivery = derived_id(env.id, subscription_id)
        await store.add_delivery(conn, delivery, subscription_id, env.id, message.value)
    log.info("alert_raised", scope=alert.scope, scope_id=alert.scope_id, metric=alert.metric)
    return message


def is_failure(p: AttemptFinished) -> bool:
    """The channel failed (the client's own 4xx mistakes do not count against it)."""
    if p.outcome == "ok":
        return False
    if p.outcome != "http_error" or p.status is None:
        return True
    return p.status >= SERVER_ERROR or p.status == TOO_MANY


def attempt_counts(p: AttemptFinished) -> list[Count]:
    """What an attempt adds to the alert windows: the channel's attempts and errors, the mix."""
    channel, rid = p.candidate.channel_id, p.request_id
    failed = is_failure(p)
    counts = [
        Count("channel", channel, "attempts", 1, rid),
        Count("channel", channel, "errors", int(failed), rid if failed else None),
    ]
    if p.outcome == "ok":
        mix = f"mix:{p.candidate.brand}/{p.candidate.upstream_model}"
        counts.append(Count("account", p.account_id, mix, 1, rid))
    return counts


async def on_attempt(
    conn: asyncpg.Connection, env: Envelope[AttemptFinished], policy: AlertPolicy
) -> list[Alert]:
    """Error rate per channel, failures that still burned tokens, provider/model mix.

    Judged after the attempt's :func:`attempt_counts` were added.
    """
    p, at = env.payload, env.occurred_at
    alerts: list[Alert] = []
    if is_failure(p):
        alerts.extend(await _error_rate(conn, p.candidate.channel_id, at, policy.errors))
    if p.outcome != "ok" and p.usage.total_tokens > 0:
        alerts.extend(await _wasted(conn, env))
    if p.outcome == "ok":
        alerts.extend(await _mix(conn, p.account_id, at, policy))
    return alerts


async def _error_rate(
    conn: asyncpg.Connection, channel: str, at: datetime, policy: RatePolicy
) -> list[Alert]:
    window = policy.window_seconds
    total, _ = await store.sums(conn, "channel", channel, "attempts", at, window, window)
    bad, _ = await store.sums(conn, "channel", channel, "errors", at, window, window)
    ratio = rate_breach(total, bad, policy)
    if ratio is None or not await store.claim_alert(
        conn, "channel", channel, "error_rate", at, window
    ):
        return []
    examples = await store.examples(conn, "channel", channel, ["errors"], at)
    return [
        Alert(
            scope="channel",
            scope_id=channel,
            metric="error_rate",
            value=round(ratio, 4),
            threshold=policy.rate,
            window_seconds=window,
            window_end=at,
            severity="critical",
            message=f"Channel {channel}: {bad} of {total} attempts failed in {window}s.",
            example_request_ids=examples,
        )
    ]


async def _wasted(conn: asyncpg.Connection, env: Envelope[AttemptFinished]) -> list[Alert]:
    p, at = env.payload, env.occurred_at
    channel = p.candidate.channel_id
    if not await store.claim_alert(
        conn, "channel", channel, "failed_with_tokens", at, MINUTE_SECONDS
    ):
        return []
    return [
        Alert(
            scope="channel",
            scope_id=channel,
            account_id=p.account_id,
            metric="failed_with_tokens",
            value=p.usage.total_tokens,
            threshold=0,
            window_seconds=MINUTE_SECONDS,
            window_end=at,
            message=(
                f"Channel {channel}: a failed attempt ({p.outcome}) still consumed"
                f" {p.usage.total_tokens} tokens."
            ),
            example_request_ids=[p.request_id],
        )
    ]


async def _mix(
    conn: asyncpg.Connection, account_id: str, at: datetime, policy: AlertPolicy
) -> list[Alert]:
    recent, before = await store.mix(conn, "account", account_id, at, MINUTE_SECONDS)
    enough = min(sum(recent.values()), sum(before.values())) >= policy.mix_min_requests
    shift = mix_shift(recent, before) if enough else 0.0
    if shift < policy.mix_shift or not await store.claim_alert(
        conn, "account", account_id, "model_mix_shift", at, MINUTE_SECONDS
    ):
        return []
    top = max(recent, key=lambda k: recent[k]).removeprefix("mix:")
    return [
        Alert(
            scope="account",
            scope_id=account_id,
            account_id=account_id,
            metric="model_mix_shift",
            value=round(shift, 4),
            threshold=policy.mix_shift,
            window_seconds=MINUTE_SECONDS,
            window_end=at,
            message=f"Account {account_id}: provider/model mix moved (now mostly {top}).",
        )
    ]


def finished_counts(p: RequestFinished) -> list[Count]:
    """What a finished request adds to its route's windows: requests, fallbacks, spend."""
    route = p.catalog_model
    if route is None:
        return []
    fell_back = p.fallbacks > 0
    counts = [
        Count("route", route, "requests", 1, p.request_id),
        Count("route", route, "fallbacks", int(fell_back), p.request_id if fell_back else None),
    ]
    if p.served and p.price is not None and p.served_bucket is not None:
        spent = cost_micro(p.usage, p.price)
        counts.append(Count("route", route, spend_metric(p.served_bucket), spent, p.request_id))
    return counts


async def on_finished(
    conn: asyncpg.Connection, env: Envelope[RequestFinished], policy: AlertPolicy
) -> list[Alert]:
    """Fallback frequency and spend per route (the catalog model's route plan).

    Judged after the request's :func:`finished_counts` were added.
    """
    p, at = env.payload, env.occurred_at
    route = p.catalog_model
    if route is None:
        return []
    alerts = await _fallback_rate(conn, route, at, policy.fallbacks) if p.fallbacks > 0 else []
    if p.served and p.price is not None and p.served_bucket is not None:
        alerts.extend(await _route_spend(conn, env, route, p.served_bucket, policy))
    return alerts


async def _fallback_rate(
    conn: asyncpg.Connection, route: str, at: datetime, policy: RatePolicy
) -> list[Alert]:
    window = policy.window_seconds
    total, _ = await store.sums(conn, "route", route, "requests", at, window, window)
    fell, _ = await store.sums(conn, "route", route, "fallbacks", at, window, window)
    ratio = rate_breach(total, fell, policy)
    if ratio is None or not await store.claim_alert(
        conn, "route", route, "fallback_rate", at, window
    ):
        return []
    return [
        Alert(
            scope="route",
            scope_id=route,
            metric="fallback_rate",
            value=round(ratio, 4),
            threshold=policy.rate,
            window_seconds=window,
            window_end=at,
            message=f"Route {route}: {fell} of {total} requests fell back in {window}s.",
            example_request_ids=await store.examples(conn, "route", route, ["fallbacks"], at),
        )
    ]


async def _route_spend(
    conn: asyncpg.Connection,
    env: Envelope[RequestFinished],
    route: str,
    bucket: str,
    policy: AlertPolicy,
) -> list[Alert]:
    p, at = env.payload, env.occurred_at
    assert p.price is not None
    metric = spend_metric(bucket)
    limit = policy.route_spend_micro_per_minute.get(bucket)
    if limit is None:
        return []
    spent, _ = await store.sums(conn, "route", route, metric, at, MINUTE_SECONDS, MINUTE_SECONDS)
    if spent <= limit or not await store.claim_alert(
        conn, "route", route, f"{metric}_per_minute", at, MINUTE_SECONDS
    ):
        return []
    return [
        Alert(
            scope="route",
            scope_id=route,
            metric=f"{metric}_per_minute",
            value=spent,
            threshold=limit,
            window_seconds=MINUTE_SECONDS,
            window_end=at,
            message=f"Route {route} spent {spent} micro-units of {bucket} in the last minute.",
            example_request_ids=await store.examples(conn, "route", route, [metric], at),
        )
    ]


def on_budget(env: Envelope[BudgetThresholdCrossed]) -> Alert:
    """A soft (or hard) budget crossed 50/80/100 %: the ledger decided, ops are told."""
    p = env.payload
    return Alert(
        scope="budget",
        scope_id=p.budget_id,
        account_id=p.account_id,
        metric="budget_percent",
        value=p.percent,
        threshold=p.percent,
        window_seconds=0,
        window_end=env.occurred_at,
        severity="critical" if p.percent >= 100 else "warning",
        message=(
            f"Budget {p.name!r} ({p.scope} {p.scope_id}, {p.mode}) is at {p.percent}%:"
            f" {p.spent} of {p.amount} {p.unit}."
        ),
        example_request_ids=[p.cause_id],
    )
