"""HTTP API of the researcher (thin handlers; errors map to statuses in app.py).

    POST /v1/research                  estimate, check, open the envelope, start (201)
    POST /v1/research/estimate         the same checks and estimate, starting nothing
    GET  /v1/research                  the account's history, newest first
    GET  /v1/research/{id}             the run: status, stage, estimate, envelope
    GET  /v1/research/{id}/events      progress as Server-Sent Events until the run ends
    POST /v1/research/{id}/cancel      stop between calls, close the envelope (202)
    GET  /v1/research/{id}/receipt     every call and totals per bucket next to the ledger's
    GET  /v1/research/{id}/report.md   the report (Markdown), .pdf, and chart.png

Every route takes the user's own gateway key (``Authorization: Bearer``); the account is the
one the gateway says the key belongs to.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from litestar import Request, Response, get, post
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from tollway.researcher import admission, errors, receipt
from tollway.researcher.calibrate import MAX_RUNS, PastRun, past_run
from tollway.researcher.store import TERMINAL, route_prices

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from litestar.datastructures import State

EVENT_POLL_SECONDS = 0.2
MAX_HISTORY = 100


def bearer(request: Request[Any, Any, State]) -> str:
    """The caller's key, or a 401."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise errors.AuthenticationError(
            "Send your Tollway API key as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    return key.strip()


async def account_of(request: Request[Any, Any, State]) -> tuple[str, str]:
    """(key, account id) of the caller, as the gateway sees it."""
    key = bearer(request)
    return key, (await request.app.state.edge.account(key)).account_id


async def owned_run(request: Request[Any, Any, State], run_id: str) -> tuple[str, dict[str, Any]]:
    """The caller's key and run, or a 404 (another account's run is not found either)."""
    key, account_id = await account_of(request)
    run = await request.app.state.store.get(run_id, account_id)
    if run is None:
        raise errors.NotFoundError(f"No research run '{run_id}' for this account.")
    return key, run


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the API shows it."""
    base = f"/v1/research/{run['id']}"
    done = run.get("has_report", False)
    return {
        "id": run["id"],
        "object": "research.run",
        "topic": run["topic"],
        "tickers": list(run["tickers"]),
        "mode": run["mode"],
        "models": run["models"],
        "status": run["status"],
        "stage": run["stage"],
        "error": run.get("error"),
        "task_id": run["task_id"],
        "estimate": run["estimate"],
        "envelope_micro": run["envelope"],
        "created_at": run["created_at"].isoformat(),
        "finished_at": run["finished_at"].isoformat() if run.get("finished_at") else None,
        "links": {
            "events": f"{base}/events",
            "receipt": f"{base}/receipt",
            "report_md": f"{base}/report.md" if done else None,
            "report_pdf": f"{base}/report.pdf" if done else None,
        },
    }


def _past_runs(
    state: State,
) -> Callable[[str, str, dict[str, str]], Awaitable[list[PastRun]]]:
    """The account's completed runs of a mode and models, as calibration reads them.

    Only the account's own: another tenant's runs would tell it their sizes and timings.
    """

    async def load(account_id: str, mode: str, models: dict[str, str]) -> list[PastRun]:
        rows = await state.store.past_runs(account_id, mode, models, MAX_RUNS)
        return [past_run(seconds, receipts) for seconds, receipts in rows]

    return load


@post("/v1/research", status_code=201)
async def start_run(request: Request[Any, Any, State]) -> dict[str, Any]:
    """Estimate, refuse what cannot be paid for, open the envelope and start."""
    key = bearer(request)
    state = request.app.state
    admitted = await admission.admit(
        body=await request.body(),
        key=key,
        edge=state.edge,
        source=state.source,
        route_rows=await route_prices(state.store.pool),
        seconds_per_call=state.seconds_per_call,
        past_runs=_past_runs(state),
    )
    await state.store.create(admitted.run)
    state.runner.start(admitted, key)
    run = await state.store.get(admitted.run["id"], admitted.run["account_id"])
    return run_view(run)


@post("/v1/research/estimate", status_code=200)
async def estimate_run(request: Request[Any, Any, State]) -> dict[str, Any]:
    """What ``POST /v1/research`` would start (same body, same checks), starting nothing."""
    key = bearer(request)
    state = request.app.state
    checked = await admission.check(
        body=await request.body(),
        key=key,
        edge=state.edge,
        source=state.source,
        route_rows=await route_prices(state.store.pool),
        seconds_per_call=state.seconds_per_call,
        past_runs=_past_runs(state),
    )
    return checked.view()


@get("/v1/research")
async def history(request: Request[Any, Any, State], limit: int = 20) -> dict[str, Any]:
    """The account's runs, newest first."""
    _key, account_id = await account_of(request)
    rows = await request.app.state.store.history(account_id, max(1, min(limit, MAX_HISTORY)))
    data = [
        {
            **r,
            "created_at": r["created_at"].isoformat(),
            "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None,
            "tickers": list(r["tickers"]),
        }
        for r in rows
    ]
    return {"object": "list", "data": data}


@get("/v1/research/{run_id:str}")
async def get_run(request: Request[Any, Any, State], run_id: str) -> dict[str, Any]:
    """One run."""
    _key, run = await owned_run(request, run_id)
    return run_view(run)


@post("/v1/research/{run_id:str}/cancel", status_code=202)
async def cancel_run(request: Request[Any, Any, State], run_id: str) -> dict[str, Any]:
    """Ask the run to stop; it closes its envelope and ends as ``cancelled``."""
    _key, run = await owned_run(request, run_id)
    if not await request.app.state.store.request_cancel(run_id, run["account_id"]):
        raise errors.ConflictError(f"Run '{run_id}' already ended ({run['status']}).")
    request.app.state.runner.cancel(run_id)
    return {"id": run_id, "object": "research.run", "status": "cancelling"}


@get("/v1/research/{run_id:str}/receipt")
async def run_receipt(request: Request[Any, Any, State], run_id: str) -> dict[str, Any]:
    """Every call and the totals per bucket, with the ledger's own view of the task."""
    key, run = await owned_run(request, run_id)
    calls = await request.app.state.store.calls(run_id)
    ledger = await request.app.state.edge.task(key, run["task_id"])
    return receipt.build(run, calls, ledger)


@get("/v1/research/{run_id:str}/events")
async def run_events(request: Request[Any, Any, State], run_id: str) -> ServerSentEvent:
    """Progress until the run ends (resumable with ``Last-Event-ID``)."""
    _key, run = await owned_run(request, run_id)
    store = request.app.state.store
    after = int(request.headers.get("last-event-id", "0") or 0)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        seen = after
        while True:
            for e in await store.events(run_id, seen):
                seen = e["seq"]
                yield ServerSentEventMessage(
                    data=orjson.dumps(e["data"]).decode(), event=e["type"], id=seen
                )
                if e["type"] == "finished":
                    return
            current = await store.get(run_id, run["account_id"])
            if current["status"] in TERMINAL and not await store.events(run_id, seen):
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)

    return ServerSentEvent(stream())


async def _artifact(request: Request[Any, Any, State], run_id: str, column: str) -> Any:
    _key, run = await owned_run(request, run_id)
    value = await request.app.state.store.artifact(run_id, run["account_id"], column)
    if value is None:
        raise errors.NotFoundError(
            f"Run '{run_id}' has no report yet ({run['status']}, {run['stage']}): follow "
            f"/v1/research/{run_id}/events until it finishes.",
            code="report_not_ready",
        )
    return value


@get("/v1/research/{run_id:str}/report.md")
async def report_md(request: Request[Any, Any, State], run_id: str) -> Response[str]:
    """The Markdown report."""
    body = await _artifact(request, run_id, "report_md")
    return Response(body, media_type="text/markdown; charset=utf-8")


@get("/v1/research/{run_id:str}/report.pdf")
async def report_pdf(request: Request[Any, Any, State], run_id: str) -> Response[bytes]:
    """The PDF report."""
    body = await _artifact(request, run_id, "report_pdf")
    return Response(bytes(body), media_type="application/pdf")


@get("/v1/research/{run_id:str}/chart.png")
async def chart_png(request: Request[Any, Any, State], run_id: str) -> Response[bytes]:
    """The report's chart."""
    body = await _artifact(request, run_id, "chart_png")
    return Response(bytes(body), media_type="image/png")


ROUTES = [
    start_run,
    estimate_run,
    history,
    get_run,
    cancel_run,
    run_receipt,
    run_events,
    report_md,
    report_pdf,
    chart_png,
]
