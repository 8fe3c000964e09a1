"""Composition root of the researcher.

An HTTP service that will run long multi-call research tasks through the edge like any client.
For now it serves its health and its schema exists.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from litestar import Litestar, Request, get
from pydantic_settings import SettingsConfigDict

from tollway.events.logging import configure_logging
from tollway.events.settings import CommonSettings
from tollway.runtime.http import serve
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = structlog.get_logger(__name__)


class ResearcherSettings(CommonSettings):
    """Where the researcher listens and which edge it calls."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_RESEARCHER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8790
    edge_url: str = "http://127.0.0.1:8787"


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Readiness: Postgres answers."""
    return {"ok": bool(await request.app.state.pool.fetchval("SELECT true"))}


def create_app(settings: ResearcherSettings) -> Litestar:
    """Build the researcher application."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "researcher", "tollway.researcher")
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(route_handlers=[healthz], lifespan=[lifespan])


def main() -> None:
    """Entry point: ``python -m tollway.researcher``."""
    settings = ResearcherSettings()
    configure_logging("researcher", settings.log_level, settings.log_json)
    start_observability("researcher", settings.metrics_port)
    serve(create_app(settings), settings.host, settings.port)
