"""Delivering alerts to webhook subscribers: signed POSTs, retried with backoff.

Deliveries are rows written with their alert (see ``alerts.publish``). The dispatcher claims due
rows with ``FOR UPDATE SKIP LOCKED`` (several limits instances share the work), posts each with
a fresh timestamped signature and a delivery id that never changes, and records the outcome in
the same row: delivered, retried later (exponential backoff) or given up after N attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import structlog

from tollway.events.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    subscription_secret,
)

log = structlog.get_logger(__name__)

CLAIM_DUE = """
SELECT d.delivery_id, d.subscription_id, d.body, d.attempts, w.url
FROM limits.webhook_deliveries d JOIN edge.webhooks w ON w.id = d.subscription_id
WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= $1
  AND w.disabled_at IS NULL
ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED
"""
MARK_DELIVERED = """
UPDATE limits.webhook_deliveries SET delivered_at = $2, attempts = attempts + 1, last_error = NULL
WHERE delivery_id = $1
"""
MARK_RETRY = """
UPDATE limits.webhook_deliveries
SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
    failed_at = CASE WHEN $4::boolean THEN $5::timestamptz ELSE NULL END
WHERE delivery_id = $1
"""
NEXT_DUE = """
SELECT min(next_attempt_at) FROM limits.webhook_deliveries
WHERE delivered_at IS NULL AND failed_at IS NULL
"""
OK_STATUSES = range(200, 300)
# Nothing due and nothing written: look again after this long anyway (another instance's
# deliveries, a subscription re-enabled).
IDLE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard to try."""

    signing_key: str
    max_attempts: int = 8
    timeout_seconds: float = 5.0
    backoff_seconds: float = 0.5


def backoff(policy: DeliveryPolicy, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: doubling, capped at ten minutes."""
    return float(min(policy.backoff_seconds * 2**attempts, 600.0))


class WebhookDispatcher:
    """Posts due deliveries until cancelled."""

    def __init__(self, pool: asyncpg.Pool, policy: DeliveryPolicy) -> None:
        """Deliver rows from ``pool`` under ``policy``."""
        self._pool = pool
        self._policy = policy
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Look for due deliveries now (new alerts were committed)."""
        self._wake.set()

    async def run(self, idle_seconds: float = 0.5) -> None:
        """Deliver what is due; then sleep until the next retry is due or :meth:`kick`.

        ``idle_seconds`` is the shortest sleep, so a failing subscriber is not polled hot.
        """
        if not self._policy.signing_key:
            log.warning("webhooks_disabled", reason="TOLLWAY_WEBHOOK_SIGNING_KEY is not set")
            await asyncio.Event().wait()  # returning would stop the whole service
        async with httpx.AsyncClient(timeout=self._policy.timeout_seconds) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except (OSError, httpx.HTTPError, asyncpg.PostgresError) as exc:
                    log.warning("webhook_dispatch_failed", error=type(exc).__name__)
                    sent = 0
                if sent == 0:
                    await self._sleep(idle_seconds)

    async def _sleep(self, shortest: float) -> None:
        self._wake.clear()
        try:
            due = await self._pool.fetchval(NEXT_DUE)
        except (OSError, asyncpg.PostgresError):
            due = None
            wait = shortest
        else:
            wait = IDLE_SECONDS
        if due is not None:
            wait = (due - datetime.now(UTC)).total_seconds()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(IDLE_SECONDS, max(shortest, wait)))

    async def deliver_due(self, client: httpx.AsyncClient, batch: int = 50) -> int:
        """Post one batch of due deliveries; return how many were attempted."""
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                rows = await conn.fetch(CLAIM_DUE, now, batch)
            except Exception as exc:
                if type(exc).__name__ == "UndefinedTableError":
                    return 0
                raise
            results = await asyncio.gather(*(self._post(client, r) for r in rows))
            for row, error in zip(rows, results, strict=True):
                await self._record(conn, row, error)
        return len(rows)

    async def _post(self, client: httpx.AsyncClient, row: Any) -> str | None:
        body = bytes(row["body"])
        secret = subscription_secret(self._policy.signing_key, row["subscription_id"])
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            DELIVERY_HEADER: row["delivery_id"],
            EVENT_HEADER: "limits.alert",
        }
        try:
            response = await client.post(row["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if response.status_code in OK_STATUSES else f"HTTP {response.status_code}"

    async def _record(self, conn: asyncpg.Connection, row: Any, error: str | None) -> None:
        now = datetime.now(UTC)
        if error is None:
            await conn.execute(MARK_DELIVERED, row["delivery_id"], now)
            log.info("webhook_delivered", delivery_id=row["delivery_id"])
            return
        attempts = row["attempts"] + 1
        give_up = attempts >= self._policy.max_attempts
        retry_at = now + timedelta(seconds=backoff(self._policy, attempts))
        await conn.execute(MARK_RETRY, row["delivery_id"], retry_at, error, give_up, now)
        log.warning("webhook_failed", delivery_id=row["delivery_id"], error=error, given_up=give_up)
