"""Composition root of the researcher.

Settings -> pool, edge client, data source, runner -> Litestar app. At start-up every run a
previous process left ``running`` is failed with a clear reason: the user's key is never
stored, so a run cannot resume without its owner; nothing stays "running" forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException

from tollway.events.logging import configure_logging
from tollway.researcher import api, errors
from tollway.researcher.edge import Edge
from tollway.researcher.market import CsvDataSource
from tollway.researcher.runner import Runner
from tollway.researcher.settings import ResearcherSettings
from tollway.researcher.store import RunStore
from tollway.runtime.db import create_pool
from tollway.runtime.http import serve
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = structlog.get_logger(__name__)
PDF_MODULE = "tollway.researcher.pdf"
INTERRUPTED = (
    "The researcher restarted while this run was in progress. Your API key is never stored, so "
    "the run cannot resume: its calls so far are in the receipt; start a new run to continue."
)


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Readiness: Postgres answers."""
    return {"ok": bool(await request.app.state.store.pool.fetchval("SELECT true"))}


def on_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one place a domain error becomes an HTTP response."""
    assert isinstance(exc, errors.ResearchError)
    return Response(exc.body(), status_code=exc.status)


def framework_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Unknown route, wrong method, a malformed query parameter: the same error shape."""
    detail = exc.detail if isinstance(exc.detail, str) else "Invalid request."
    error = errors.ResearchError(detail, code="invalid_request")
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    body = error.body()
    body["error"]["type"] = kind if exc.status_code < 500 else "api_error"
    return Response(body, status_code=exc.status_code)


def unexpected_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: logged with its type, answered in the same shape, nothing leaked."""
    log.error("unexpected_error", error_type=type(exc).__name__)
    body = errors.ResearchError("Internal error in the researcher; try again.").body()
    return Response(body, status_code=500)


async def _drop_texts(store: RunStore, retention_seconds: float) -> None:
    """Drop ended runs' call texts once past the retention, forever (until cancelled)."""
    while True:
        try:
            dropped = await store.drop_old_texts()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("research_texts_not_dropped", error=type(exc).__name__)
        else:
            if dropped:
                log.info("research_texts_dropped", calls=dropped)
        # With no retention the texts go when their run ends (RunStore.finish): this sweep only
        # catches runs a previous process left, so it need not run every second.
        await asyncio.sleep(
            min(60.0, max(1.0, retention_seconds / 4)) if retention_seconds else 60.0
        )


def create_app(settings: ResearcherSettings) -> Litestar:
    """Build the researcher application."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, name="researcher", min_size=1, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "researcher", "tollway.researcher")
        store = RunStore(pool, settings.prompt_retention_seconds)
        for run_id in await store.fail_interrupted(INTERRUPTED):
            log.warning("research_interrupted", run_id=run_id)
        texts = asyncio.create_task(_drop_texts(store, settings.prompt_retention_seconds))
        edge = Edge(settings.edge_url, settings.edge_timeout_seconds)
        source = CsvDataSource(Path(settings.data_dir) if settings.data_dir else None)
        runner = Runner(store, edge, source)
        app.state.update(
            store=store,
            edge=edge,
            source=source,
            runner=runner,
            seconds_per_call=settings.seconds_per_call,
        )
        # Warm the report renderer (matplotlib, fpdf2) off the event loop, before the first run.
        warm = asyncio.create_task(asyncio.to_thread(importlib.import_module, PDF_MODULE))
        try:
            yield
        finally:
            warm.cancel()
            texts.cancel()
            await runner.shutdown()
            await edge.aclose()
            await pool.close()

    return Litestar(
        route_handlers=[healthz, *api.ROUTES],
        lifespan=[lifespan],
        exception_handlers={
            errors.ResearchError: on_error,
            HTTPException: framework_error,
            Exception: unexpected_error,
        },
    )


def main() -> None:
    """Entry point: ``python -m tollway.researcher``."""
    settings = ResearcherSettings()
    configure_logging("researcher", settings.log_level, settings.log_json)
    start_observability("researcher", settings.metrics_port)
    serve(create_app(settings), settings.host, settings.port)
