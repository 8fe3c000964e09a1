"""A user's longer work: task envelopes and research runs.

Tasks can be opened, followed and closed; research runs started, watched live, and their report
downloaded.

Tasks go through the client API's own functions (``tollway.edge.tasks``), so an envelope opened
here is published and owned exactly like one opened with ``POST /v1/tasks``. Research runs are
the researcher's: these pages reach its API with the user's key (``tollway.edge.ui.research``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide

# Litestar reads handler signatures at run time: these types must be importable then.
from litestar.response import (
    Redirect,
    Stream,
    Template,
)
from pydantic import ValidationError

from tollway.edge import errors, tasks
from tollway.edge import limits_store as ls
from tollway.edge.auth import check_key
from tollway.edge.listing import refuse_nul
from tollway.edge.ui.guards import SessionParam, form, page, sessions, user_session

if TYPE_CHECKING:
    from tollway.edge.ui.research import ResearchClient

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
REPORTS = {"report.md": "text/markdown; charset=utf-8", "report.pdf": "application/pdf"}


def _research(request: Request[Any, Any, Any]) -> ResearchClient:
    client: ResearchClient = request.app.state.ui_research
    return client


def _invalid(exc: ValidationError) -> errors.InvalidRequestError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "form"
    return errors.InvalidRequestError(f"{field}: {first['msg']}", param=field)


def _run_id(run_id: str) -> str:
    refuse_nul(run_id=run_id)
    if not run_id.replace("_", "").replace("-", "").isalnum() or len(run_id) > 100:
        raise errors.NotFoundError(f"No research run '{run_id}' for this account.")
    return run_id


def _run_body(fields: dict[str, str]) -> dict[str, Any]:
    """A research run's body from the dashboard's form (estimate and start send the same)."""
    body: dict[str, Any] = {"topic": fields.get("topic", ""), "mode": fields.get("mode", "")}
    if fields.get("ticker"):
        body["ticker"] = fields["ticker"]
    return body


async def _research_page(
    request: Request[Any, Any, Any], session: SessionParam, **extra: Any
) -> Template:
    client = _research(request)
    key = sessions(request).kept_key(session)
    runs: list[dict[str, Any]] = []
    if client.configured and key is not None:
        runs = (await client.json("GET", "/v1/research", key))["data"]
    return page(
        "research.html",
        session,
        nav="research",
        configured=client.configured,
        locked=key is None,
        runs=runs,
        **extra,
    )


class WorkPages(Controller):
    """Tasks and research runs of a signed-in user."""

    path = "/ui"
    dependencies = {"session": Provide(user_session)}  # noqa: RUF012

    @get("/tasks")
    async def task_list(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """The account's task envelopes, newest first, and a form to open one."""
        account_id = session.user_key.account_id
        rows = await ls.account_tasks(request.app.state.pool, account_id, 50)
        buckets = await request.app.state.store.balances(account_id)
        return page("tasks.html", session, nav="tasks", tasks=rows, buckets=buckets)

    @post("/tasks")
    async def open_task(self, request: Request[Any, Any, Any], session: SessionParam) -> Redirect:
        """Open an envelope with a budget for each bucket given an amount."""
        fields = await form(request)
        budgets = [
            {"bucket": name.removeprefix("budget_"), "amount": amount}
            for name, amount in fields.items()
            if name.startswith("budget_") and amount
        ]
        try:
            data = tasks.NewTask(
                name=fields.get("name", ""),
                budgets=budgets,
                fallback=fields.get("fallback") or "any",
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        opened = await tasks.open_task_for(request, session.user_key, data)
        return Redirect(path=f"/ui/tasks/{opened['id']}", status_code=303)

    @get("/tasks/{task_id:str}")
    async def task(
        self, request: Request[Any, Any, Any], session: SessionParam, task_id: str
    ) -> Template:
        """A task's receipt: calls, tokens, cost per bucket, what is left, what stopped it."""
        pool = request.app.state.pool
        account_id = session.user_key.account_id
        await tasks.require_task(pool, task_id, account_id)
        view = await tasks.task_view(pool, account_id, task_id)
        return page("task.html", session, nav="tasks", task=view)

    @post("/tasks/{task_id:str}/close")
    async def close_task(
        self, request: Request[Any, Any, Any], session: SessionParam, task_id: str
    ) -> Redirect:
        """Close the envelope: further calls are refused, in-flight ones settle."""
        await tasks.require_task(request.app.state.pool, task_id, session.user_key.account_id)
        await tasks.close_task_for(request, session.user_key, task_id)
        return Redirect(path=f"/ui/tasks/{task_id}", status_code=303)

    @get("/research")
    async def research(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """The account's research runs and a form to estimate one."""
        return await _research_page(request, session)

    @post("/research/estimate")
    async def estimate(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """The run's estimate (nothing starts) and a Start button for exactly that run."""
        body = _run_body(await form(request))
        estimate = await _research(request).json(
            "POST", "/v1/research/estimate", _key(request, session), json=body
        )
        balances = await request.app.state.store.balances(session.user_key.account_id)
        units = {b["bucket"]: b["unit"] for b in balances}
        return await _research_page(request, session, estimate=estimate, draft=body, units=units)

    @post("/research/unlock")
    async def unlock(self, request: Request[Any, Any, Any], session: SessionParam) -> Redirect:
        """Give this instance the session's key again (it keeps keys in memory only)."""
        secret = (await form(request)).get("api_key", "")
        key = await check_key(request.app.state.store, secret) if secret else None
        if key is None or key.id != session.user_key.id:
            raise errors.AuthenticationError("Enter the API key you signed in with.")
        sessions(request).keep_key(session.digest, secret)
        return Redirect(path="/ui/research", status_code=303)

    @post("/research")
    async def start(self, request: Request[Any, Any, Any], session: SessionParam) -> Redirect:
        """Start a run; the researcher estimates it and refuses what cannot be paid for."""
        body = _run_body(await form(request))
        run = await _research(request).json(
            "POST", "/v1/research", _key(request, session), json=body
        )
        return Redirect(path=f"/ui/research/{run['id']}", status_code=303)

    @get("/research/{run_id:str}")
    async def run(
        self, request: Request[Any, Any, Any], session: SessionParam, run_id: str
    ) -> Template:
        """One run: its estimate, live progress while it runs, its receipt and report after."""
        client, key = _research(request), _key(request, session)
        run = await client.json("GET", f"/v1/research/{_run_id(run_id)}", key)
        receipt = None
        if run["status"] != "running":
            receipt = await client.json("GET", f"/v1/research/{run_id}/receipt", key)
        return page("run.html", session, nav="research", run=run, receipt=receipt)

    @get("/research/{run_id:str}/events")
    async def events(
        self, request: Request[Any, Any, Any], session: SessionParam, run_id: str
    ) -> Stream:
        """The run's progress events, relayed as server-sent events."""
        client, key = _research(request), _key(request, session)
        await client.json("GET", f"/v1/research/{_run_id(run_id)}", key)  # 404 if not ours
        relay = client.stream(f"/v1/research/{run_id}/events", key)
        return Stream(relay, media_type="text/event-stream", headers=SSE_HEADERS)

    @get("/research/{run_id:str}/{name:str}")
    async def report(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,
        run_id: str,
        name: Literal["report.md", "report.pdf"],
    ) -> Response[bytes]:
        """Download the report (Markdown or PDF)."""
        response = await _research(request).call(
            "GET", f"/v1/research/{_run_id(run_id)}/{name}", _key(request, session)
        )
        if response.status_code != 200:
            raise errors.NotFoundError(f"Run '{run_id}' has no report (yet).")
        disposition = f'attachment; filename="research-{run_id}-{name}"'
        return Response(
            response.content,
            media_type=REPORTS[name],
            headers={"content-disposition": disposition},
        )

    @post("/research/{run_id:str}/cancel")
    async def cancel(
        self, request: Request[Any, Any, Any], session: SessionParam, run_id: str
    ) -> Redirect:
        """Ask the run to stop between calls."""
        await _research(request).json(
            "POST", f"/v1/research/{_run_id(run_id)}/cancel", _key(request, session)
        )
        return Redirect(path=f"/ui/research/{run_id}", status_code=303)


def _key(request: Request[Any, Any, Any], session: SessionParam) -> str:
    key = sessions(request).kept_key(session)
    if key is None:
        raise errors.AuthenticationError(
            "This gateway instance no longer holds your key for research: enter it again on the"
            " Research page."
        )
    return key
