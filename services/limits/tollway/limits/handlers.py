"""The limits consumer's use cases: count usage into windows, trip breakers, raise alerts.

Called by the exactly-once consumer inside its batch transaction, on gw.requests (operators'
velocity limits), gw.usage (attempts and finished requests), ledger.events (budget thresholds)
and limits.breakers (operators' resets). Everything is judged at the event's own time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from tollway.events.gateway import AttemptFinished, RequestFinished
from tollway.events.limits import BreakerReset, BudgetThresholdCrossed, VelocityLimitSet
from tollway.events.pricing import cost_micro
from tollway.limits import alerts, breakers, store
from tollway.limits.alerts import AlertPolicy
from tollway.limits.domain import (
    MINUTE_SECONDS,
    RECENT_SECONDS,
    TOKENS,
    Limits,
    RelativePolicy,
    fold_baseline,
    spend_metric,
    velocity_trip,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.limits import Alert
    from tollway.runtime.consumer import Record
    from tollway.runtime.outbox import Outgoing

log = structlog.get_logger(__name__)

PRUNE_EVERY = timedelta(minutes=1)  # of event time
HANDLED = (AttemptFinished, RequestFinished, BudgetThresholdCrossed, VelocityLimitSet, BreakerReset)


@dataclass(frozen=True, slots=True)
class VelocityPolicy:
    """Defaults for scopes without an operator's own thresholds, and the relative rule."""

    defaults: Limits = field(
        default_factory=lambda: Limits(tokens_per_minute=2_000_000, relative_factor=10)
    )
    relative: RelativePolicy = field(default_factory=RelativePolicy)
    scopes: tuple[str, ...] = ("key", "project", "task")


@dataclass
class LimitsHandler:
    """Applies records in order; returns breaker records and alerts to publish after commit."""

    velocity: VelocityPolicy = field(default_factory=VelocityPolicy)
    alert_policy: AlertPolicy = field(default_factory=AlertPolicy)
    _pruned: datetime | None = field(default=None, init=False)

    async def __call__(self, conn: asyncpg.Connection, records: Sequence[Record]) -> list[Outgoing]:
        """Apply each record once (duplicates by event id are skipped)."""
        out: list[Outgoing] = []
        latest = None
        for record in records:
            env = record.envelope
            # Most of gw.requests and ledger.events is not ours: skip it without a write.
            if not isinstance(env.payload, HANDLED):
                continue
            if not await store.mark_applied(conn, env.id, env.occurred_at):
                continue
            out.extend(await self._apply(conn, env))
            latest = env.occurred_at if latest is None else max(latest, env.occurred_at)
        if latest is not None and (self._pruned is None or latest - self._pruned >= PRUNE_EVERY):
            # Windows are bounded in their queries; pruning only keeps the tables small.
            await store.prune(conn, latest)
            self._pruned = latest
        return out

    async def _apply(self, conn: asyncpg.Connection, env: Envelope[Any]) -> list[Outgoing]:
        p = env.payload
        found: list[Alert] = []
        out: list[Outgoing] = []
        if isinstance(p, AttemptFinished):
            tokens = p.usage.total_tokens
            scopes = self._scopes(env)
            counts = [
                *self._counts(scopes, TOKENS, tokens, p.request_id),
                *alerts.attempt_counts(p),
            ]
            await store.add_all(conn, env.occurred_at, counts)
            out.extend(await self._velocity(conn, env, scopes, TOKENS, tokens, found))
            found.extend(await alerts.on_attempt(conn, env, self.alert_policy))
        elif isinstance(p, RequestFinished):
            metric, spent = TOKENS, 0
            if p.served and p.price is not None and p.served_bucket is not None:
                metric, spent = spend_metric(p.served_bucket), cost_micro(p.usage, p.price)
            scopes = self._scopes(env)
            counts = [
                *self._counts(scopes, metric, spent, p.request_id),
                *alerts.finished_counts(p),
            ]
            await store.add_all(conn, env.occurred_at, counts)
            out.extend(await self._velocity(conn, env, scopes, metric, spent, found))
            found.extend(await alerts.on_finished(conn, env, self.alert_policy))
        elif isinstance(p, BudgetThresholdCrossed):
            found.append(alerts.on_budget(env))
        elif isinstance(p, VelocityLimitSet):
            await store.save_limits(conn, p.model_dump())
        elif isinstance(p, BreakerReset) and p.reason == "operator":
            await breakers.apply_operator_reset(conn, p)
        out.extend([await alerts.publish(conn, env, a) for a in found])
        return out

    def _scopes(self, env: Envelope[Any]) -> list[store.Scope]:
        """The velocity scopes a usage event counts against, with their ids."""
        p = env.payload
        ids = {"key": p.key_id, "project": p.project_id, "task": env.trace.task_id}
        ids["account"] = p.account_id
        return [(s, i) for s in self.velocity.scopes if (i := ids.get(s)) is not None]

    @staticmethod
    def _counts(
        scopes: list[store.Scope], metric: str, amount: int, request_id: str
    ) -> list[store.Count]:
        if amount <= 0:
            return []
        return [store.Count(s, i, metric, amount, request_id) for s, i in scopes]

    async def _velocity(  # noqa: PLR0913, PLR0917 - the event, its scopes and what it counted
        self,
        conn: asyncpg.Connection,
        env: Envelope[Any],
        scopes: list[store.Scope],
        metric: str,
        amount: int,
        found: list[Alert],
    ) -> list[Outgoing]:
        """Judge each scope the event counted against; trip the breakers it pushed over.

        Runs after :meth:`_counts` were added: one query per kind of row for all scopes.
        """
        p, at = env.payload, env.occurred_at
        if amount <= 0 or not scopes:
            return []
        windows = await store.sums_all(conn, scopes, metric, at, MINUTE_SECONDS, RECENT_SECONDS)
        rows = await store.limits_rows(conn, scopes)
        folded = {}
        if metric == TOKENS:
            prior = await store.baselines(conn, scopes, metric)
            folded = {k: fold_baseline(prior.get(k), at, amount) for k in scopes}
            await store.save_baselines(conn, metric, folded)
        out: list[Outgoing] = []
        for scope, scope_id in scopes:
            limits = resolve(self.velocity.defaults, rows.get((scope, scope_id)))
            minute, recent = windows[(scope, scope_id)]
            verdict = velocity_trip(
                metric,
                minute,
                recent,
                limits,
                folded.get((scope, scope_id)),
                self.velocity.relative,
            )
            if verdict is None:
                continue
            tripped = await breakers.trip(
                conn, env, scope, scope_id, p.account_id, verdict, limits.cooldown_seconds
            )
            if tripped is not None:
                out.append(breakers.breaker_message(tripped[0]))
                found.append(tripped[1])
        return out


def resolve(defaults: Limits, row: Mapping[str, Any] | None) -> Limits:
    """An operator's thresholds over the defaults (a ``None`` keeps the default)."""
    if row is None:
        return defaults
    spend = {**defaults.spend_micro_per_minute, **(row.get("spend_micro_per_minute") or {})}
    return Limits(
        tokens_per_minute=row.get("tokens_per_minute") or defaults.tokens_per_minute,
        spend_micro_per_minute=spend,
        relative_factor=row.get("relative_factor") or defaults.relative_factor,
        cooldown_seconds=row.get("cooldown_seconds") or defaults.cooldown_seconds,
    )
