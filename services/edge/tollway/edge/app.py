"""Composition root of the edge: settings -> pool, producer, reply hub -> Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from tollway.edge import (
    admin,
    api,
    audit,
    budgets,
    errors,
    generation,
    inputs,
    ledger_admin,
    ledger_corrections,
    limits_admin,
    margins_admin,
    recon_admin,
    rerates,
    research_proxy,
    selfservice,
    tasks,
    topups,
    ui,
)
from tollway.edge.calls import CallService
from tollway.edge.replies import ReplyHub
from tollway.edge.route_admin import RouteTreeController
from tollway.edge.route_tree import RouteTreeStore, check_secret_keys
from tollway.edge.settings import EdgeSettings
from tollway.edge.store import EdgeStore
from tollway.events import topics
from tollway.events.logging import configure_logging
from tollway.runtime.bodies import BodyKeys
from tollway.runtime.breakers import BreakerView
from tollway.runtime.db import create_pool
from tollway.runtime.http import serve
from tollway.runtime.kafka import ensure_topics, new_producer
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations
from tollway.runtime.sealing import KeyRing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)


class RequestIdMiddleware(ASGIMiddleware):
    """Give every request an id and echo it as ``x-request-id`` on every response."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Stamp the id into scope state and the response headers."""
        request_id = api.new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                raw = request_id.encode()
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", raw),
                    (b"x-tollway-request-id", raw),
                ]
            await send(message)

        # Every log line written while serving this request carries its id (and its task's).
        context = {"request_id": request_id}
        task_id = dict(scope.get("headers", ())).get(api.TASK_HEADER.encode())
        if task_id:
            context["task_id"] = task_id.decode("latin-1")
        with structlog.contextvars.bound_contextvars(**context):
            await next_app(scope, receive, send_with_id)


def gateway_error(request: Request[Any, Any, Any], exc: errors.GatewayError) -> Response[Any]:
    """The one place a domain error becomes an HTTP response, in the route's dialect."""
    body = errors.body_for(exc, request.url.path)
    return Response(body, status_code=exc.status, headers=exc.headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Framework errors (unknown route, wrong method, bad admin body) in the same shape."""
    cls = errors.STATUS_TO_ERROR.get(exc.status_code, errors.InvalidRequestError)
    detail = exc.detail if isinstance(exc.detail, str) else "Invalid request."
    extra = getattr(exc, "extra", None)
    if extra:
        detail = f"{detail}: {_described(extra)}"
    body = errors.body_for(cls(detail, param=_invalid_field(extra)), request.url.path)
    return Response(body, status_code=exc.status_code)


def _described(extra: Any) -> str:
    """``group_by: Expected one of ...`` per problem: words, never a Python repr of the list."""
    if not isinstance(extra, list):
        return str(extra)
    parts = []
    for item in extra:
        if isinstance(item, dict):
            key, message = item.get("key"), str(item.get("message") or "invalid value")
            parts.append(f"{key}: {message}" if key else message)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def _invalid_field(extra: Any) -> str | None:
    """The first field a validation error names, as ``routes[0].channel_id``."""
    if not isinstance(extra, list) or not extra or not isinstance(extra[0], dict):
        return None
    key = extra[0].get("key")
    if not isinstance(key, str) or not key:
        return None
    parts = key.split(".")
    return parts[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])


def value_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A value Postgres or a date cannot hold (a number or instant out of range): the client's.

    Every endpoint validates what it stores before it publishes anything, so this only ever
    answers a read or a check; it is logged, as the validation it stands in for is missing.
    """
    # Not the message: it may quote the value.
    log.warning("value_out_of_range", path=request.url.path, error=type(exc).__name__)
    error = errors.InvalidRequestError(
        "A value in the request is out of range or not acceptable.", code="invalid_value"
    )
    return Response(errors.body_for(error, request.url.path), status_code=error.status)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with the request id, answer in the client's shape, leak nothing."""
    request_id = request.scope.get("state", {}).get("request_id")
    log.error(
        "unhandled_error",
        request_id=request_id,
        path=request.url.path,
        error=type(exc).__name__,
        exc_info=exc,
    )
    error = errors.GatewayError(f"Internal error; quote request id {request_id}.")
    body = errors.body_for(error, request.url.path)
    return Response(body, status_code=500)


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Readiness: Postgres answers and the reply topic is being read."""
    state = request.app.state
    checks = {"replies": bool(state.replies.ready), "breakers": bool(state.breakers.ready)}
    try:
        checks["postgres"] = await state.pool.fetchval("SELECT true")
    except (OSError, asyncpg.PostgresError):
        checks["postgres"] = False
    ok = all(checks.values())
    return Response(
        {"ok": ok, "checks": checks, "edge_id": state.settings.edge_id},
        status_code=200 if ok else 503,
    )


# Served at /schema (openapi.json, openapi.yaml, and viewers). Admin endpoints take the admin
# token as a bearer token; client endpoints take an API key the same way.
OPENAPI = OpenAPIConfig(
    title="Tollway edge",
    version="1",
    use_handler_docstrings=True,
    components=Components(
        security_schemes={
            "bearer": SecurityScheme(
                type="http",
                scheme="bearer",
                description="An API key (tw-…) for /v1; the admin token for /admin/v1.",
            )
        }
    ),
    security=[{"bearer": []}],
)


def create_app(settings: EdgeSettings) -> Litestar:
    """Build the edge application; resources open in the lifespan."""
    ring = KeyRing.optional(settings.secret_keys.get_secret_value())

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url, name="edge", min_size=2, max_size=settings.pool_size
        )
        async with pool.acquire() as conn:
            await apply_migrations(conn, "edge", "tollway.edge")
            await apply_migrations(conn, "bodykeys", "tollway.runtime")
            await check_secret_keys(conn, ring)
        reply_topic = topics.replies_topic(settings.edge_id)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [
                *topics.core_topics(settings.topic_partitions),
                topics.reply_topic_spec(settings.edge_id),
            ],
        )
        producer = new_producer(settings.kafka_bootstrap_servers, settings.edge_id)
        await producer.start()
        replies = ReplyHub(settings.kafka_bootstrap_servers, reply_topic)
        await replies.start()
        breakers = BreakerView(settings.kafka_bootstrap_servers)
        await breakers.start()
        store = EdgeStore(pool, settings.cache_ttl_seconds)
        epoch = settings.body_key_epoch_seconds
        bodies = BodyKeys(pool, epoch, settings.body_retention)
        sweeper = asyncio.create_task(bodies.run_sweeper(min(30.0, epoch)))
        app.state.update(
            settings=settings,
            pool=pool,
            producer=producer,
            replies=replies,
            breakers=breakers,
            store=store,
            admin_token=settings.admin_token,
            route_tree=RouteTreeStore(pool, producer, ring),
            calls=CallService(
                store,
                producer,
                replies,
                settings.edge_id,
                settings.request_timeout_seconds,
                breakers.board,
                bodies,
            ),
        )
        log.info("edge_started", edge_id=settings.edge_id, port=settings.port)
        try:
            yield
        finally:
            sweeper.cancel()
            await breakers.stop()
            await replies.stop()
            await producer.stop()
            await pool.close()

    return Litestar(
        route_handlers=[
            api.chat_completions,
            api.embeddings,
            api.messages,
            api.responses,
            api.stored_response,
            api.count_tokens,
            api.receipt,
            api.balance,
            generation.generation,
            tasks.open_task,
            tasks.list_tasks,
            tasks.task_receipt,
            tasks.close_task,
            research_proxy.forward_research,
            selfservice.list_models,
            selfservice.retrieve_model,
            selfservice.list_receipts,
            selfservice.usage,
            healthz,
            admin.AdminController,
            topups.TopUpController,
            ledger_admin.LedgerAdminController,
            ledger_corrections.LedgerCorrectionsController,
            margins_admin.MarginsController,
            rerates.RerateController,
            budgets.BudgetController,
            limits_admin.LimitsAdminController,
            recon_admin.ReconAdminController,
            RouteTreeController,
            audit.AuditController,
            ui.router(settings),
        ],
        openapi_config=OPENAPI,
        template_config=ui.TEMPLATES,
        lifespan=[lifespan, ui.lifespan],
        middleware=[RequestIdMiddleware(), inputs.InputGuardMiddleware(settings.max_body_bytes)],
        exception_handlers={
            errors.GatewayError: gateway_error,
            HTTPException: http_error,
            asyncpg.DataError: value_error,
            OverflowError: value_error,
            Exception: unexpected_error,
        },
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )


def main() -> None:
    """Entry point: ``python -m tollway.edge``."""
    settings = EdgeSettings()
    configure_logging("edge", settings.log_level, settings.log_json)
    start_observability("edge", settings.metrics_port)
    serve(create_app(settings), settings.host, settings.port)
