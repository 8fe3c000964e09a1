"""asyncpg adapter of runs, calls and progress events (SQL lives here only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import asyncpg

TERMINAL = ("completed", "stopped", "cancelled", "failed")

INSERT_RUN = """
INSERT INTO researcher.runs (id, account_id, topic, tickers, mode, models, status, stage,
    estimate, envelope, task_id)
VALUES ($1, $2, $3, $4, $5, $6, 'running', 'planned', $7, $8, $9)
"""
SELECT_RUN = """
SELECT id, account_id, topic, tickers, mode, models, status, stage, estimate, envelope, task_id,
       error, cancel_requested, ledger_task, created_at, finished_at,
       report_md IS NOT NULL AS has_report
FROM researcher.runs WHERE id = $1 AND account_id = $2
"""
LIST_RUNS = """
SELECT id, topic, tickers, mode, status, stage, task_id, created_at, finished_at
FROM researcher.runs WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""
SET_STAGE = "UPDATE researcher.runs SET stage = $2 WHERE id = $1"
REQUEST_CANCEL = """
UPDATE researcher.runs SET cancel_requested = true
WHERE id = $1 AND account_id = $2 AND status = 'running' RETURNING id
"""
CANCEL_REQUESTED = "SELECT cancel_requested FROM researcher.runs WHERE id = $1"
FINISH_RUN = """
UPDATE researcher.runs SET status = $2, stage = 'done', error = $3, ledger_task = $4,
    report_md = $5, report_pdf = $6, chart_png = $7, finished_at = now()
WHERE id = $1 AND status = 'running'
"""
FAIL_INTERRUPTED = """
UPDATE researcher.runs SET status = 'failed', stage = 'done', error = $1, finished_at = now()
WHERE status = 'running' RETURNING id
"""
INSERT_CALL = """
INSERT INTO researcher.calls (run_id, idx, section, step, model, request_id, http_status, error,
    content, receipt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
SELECT_CALLS = """
SELECT idx, section, step, model, request_id, http_status, error, content, receipt
FROM researcher.calls WHERE run_id = $1 ORDER BY idx
"""
INSERT_EVENT = """
INSERT INTO researcher.events (run_id, seq, type, data)
SELECT $1, COALESCE(max(seq), 0) + 1, $2, $3 FROM researcher.events WHERE run_id = $1
RETURNING seq
"""
SELECT_EVENTS = """
SELECT seq, type, data FROM researcher.events WHERE run_id = $1 AND seq > $2 ORDER BY seq
"""
# A call's text is a prompt of the calls after it: kept only until the report is written.
DROP_RUN_TEXTS = "UPDATE researcher.calls SET content = '' WHERE run_id = $1 AND content <> ''"
DROP_OLD_TEXTS = """
UPDATE researcher.calls c SET content = '' FROM researcher.runs r
WHERE c.run_id = r.id AND r.status <> 'running' AND c.content <> ''
  AND r.finished_at <= now() - make_interval(secs => $1)
"""
# An account's completed runs of one mode and models, newest first, with their calls' final
# receipts: the history an estimate is calibrated from.
PAST_RUNS = """
SELECT extract(epoch FROM r.finished_at - r.created_at)::float8 AS seconds,
       COALESCE((SELECT jsonb_agg(c.receipt ORDER BY c.idx) FROM researcher.calls c
                 WHERE c.run_id = r.id), '[]'::jsonb) AS receipts
FROM researcher.runs r
WHERE r.account_id = $1 AND r.status = 'completed' AND r.mode = $2 AND r.models = $3::jsonb
  AND r.finished_at IS NOT NULL
ORDER BY r.finished_at DESC, r.id DESC LIMIT $4
"""
SELECT_ARTIFACT = "SELECT {column} FROM researcher.runs WHERE id = $1 AND account_id = $2"
ARTIFACTS = frozenset({"report_md", "report_pdf", "chart_png"})


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("models", "estimate", "envelope", "ledger_task", "receipt", "data"):
        if isinstance(out.get(key), str):
            out[key] = orjson.loads(out[key])
    return out


class RunStore:
    """Runs, calls and events in the researcher schema."""

    def __init__(self, pool: asyncpg.Pool, text_retention_seconds: float = 0.0) -> None:
        """Runs in ``pool``; call texts are dropped ``text_retention_seconds`` after a run ends."""
        self.pool = pool
        self.text_retention_seconds = text_retention_seconds

    async def create(self, run: dict[str, Any]) -> None:
        """Record a new run and its first event, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                INSERT_RUN,
                run["id"],
                run["account_id"],
                run["topic"],
                run["tickers"],
                run["mode"],
                _json(run["models"]),
                _json(run["estimate"]),
                _json(run["envelope"]),
                run["task_id"],
            )
            await conn.execute(INSERT_EVENT, run["id"], "planned", _json(run["estimate"]))

    async def get(self, run_id: str, account_id: str) -> dict[str, Any] | None:
        """One run of this account."""
        row = await self.pool.fetchrow(SELECT_RUN, run_id, account_id)
        return None if row is None else _row(row)

    async def history(self, account_id: str, limit: int) -> list[dict[str, Any]]:
        """The account's runs, newest first."""
        return [dict(r) for r in await self.pool.fetch(LIST_RUNS, account_id, limit)]

    async def event(self, run_id: str, kind: str, data: dict[str, Any]) -> int:
        """Append a progress event; its sequence number is its SSE id."""
        seq: int = await self.pool.fetchval(INSERT_EVENT, run_id, kind, _json(data))
        return seq

    async def stage(self, run_id: str, stage: str) -> None:
        """Move the run to a new stage and say so."""
        await self.pool.execute(SET_STAGE, run_id, stage)
        await self.event(run_id, "stage", {"stage": stage})

    async def events(self, run_id: str, after: int) -> list[dict[str, Any]]:
        """Events after ``after``."""
        return [_row(r) for r in await self.pool.fetch(SELECT_EVENTS, run_id, after)]

    async def request_cancel(self, run_id: str, account_id: str) -> bool:
        """Flag a running run for cancellation; False when it is not running."""
        return await self.pool.fetchval(REQUEST_CANCEL, run_id, account_id) is not None

    async def cancel_requested(self, run_id: str) -> bool:
        """True once a cancel was asked for."""
        return bool(await self.pool.fetchval(CANCEL_REQUESTED, run_id))

    async def add_call(self, run_id: str, call: dict[str, Any]) -> None:
        """Record one finished call with its final receipt."""
        await self.pool.execute(
            INSERT_CALL,
            run_id,
            call["idx"],
            call["section"],
            call["step"],
            call["model"],
            call["request_id"],
            call["http_status"],
            call["error"],
            call["content"],
            None if call["receipt"] is None else _json(call["receipt"]),
        )

    async def calls(self, run_id: str) -> list[dict[str, Any]]:
        """The run's calls in order."""
        return [_row(r) for r in await self.pool.fetch(SELECT_CALLS, run_id)]

    async def finish(self, run_id: str, status: str, outcome: dict[str, Any]) -> None:
        """Close the run with its report and the ledger's view of its task, then say so."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                FINISH_RUN,
                run_id,
                status,
                outcome.get("error"),
                _json(outcome.get("ledger_task")),
                outcome.get("report_md"),
                outcome.get("report_pdf"),
                outcome.get("chart_png"),
            )
            data = {"status": status, "error": outcome.get("error")}
            await conn.execute(INSERT_EVENT, run_id, "finished", _json(data))
            if self.text_retention_seconds <= 0:
                await conn.execute(DROP_RUN_TEXTS, run_id)

    async def drop_old_texts(self) -> int:
        """Drop the call texts of every run that ended more than the retention ago."""
        result = await self.pool.execute(DROP_OLD_TEXTS, self.text_retention_seconds)
        return int(result.split()[-1])

    async def fail_interrupted(self, reason: str) -> list[str]:
        """Fail every run left running by a previous process; their ids."""
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(FAIL_INTERRUPTED, reason)]
            for run_id in ids:
                data = {"status": "failed", "error": reason}
                await conn.execute(INSERT_EVENT, run_id, "finished", _json(data))
        return ids

    async def past_runs(
        self, account_id: str, mode: str, models: dict[str, str], limit: int
    ) -> list[tuple[float, list[dict[str, Any] | None]]]:
        """(seconds, receipts) of the account's newest completed runs of this mode and models."""
        rows = await self.pool.fetch(PAST_RUNS, account_id, mode, _json(models), limit)
        out: list[tuple[float, list[dict[str, Any] | None]]] = []
        for r in rows:
            receipts = r["receipts"]
            out.append(
                (
                    float(r["seconds"]),
                    orjson.loads(receipts) if isinstance(receipts, str) else receipts,
                )
            )
        return out

    async def artifact(self, run_id: str, account_id: str, column: str) -> Any:
        """The stored report, PDF or chart (None until the run finished)."""
        if column not in ARTIFACTS:
            raise ValueError(column)
        return await self.pool.fetchval(SELECT_ARTIFACT.format(column=column), run_id, account_id)


SELECT_ROUTES = """
SELECT r.catalog_model, c.route_type, c.bucket, c.price_input, c.price_output,
       c.price_cached_input
FROM router.routes r JOIN router.channels c ON c.id = r.channel_id
JOIN router.catalog_models m ON m.name = r.catalog_model
WHERE c.enabled AND m.enabled
ORDER BY r.catalog_model, r.tier, r.weight DESC, c.name
"""


async def route_prices(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every enabled route with its channel's prices, in plan order.

    The router's table, read only: the estimate must price calls the way the ledger holds them.
    """
    return [dict(r) for r in await pool.fetch(SELECT_ROUTES)]
