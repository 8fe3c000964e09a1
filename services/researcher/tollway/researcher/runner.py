"""Running an admitted research run: calls through the edge, progress, cancel, report, receipt.

Calls are sequential inside the run's task envelope. After each call the runner waits for its
final receipt, so progress shows the real spend and the run's receipt is made of the ledger's
own receipts. A cancel is honoured between calls: the call in flight finishes and settles (it
cannot be recalled from the upstream), then the task is closed, which releases anything it still
holds. Every path, including an unexpected error, ends the run with a final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from tollway.researcher import receipt
from tollway.researcher import report as rep
from tollway.researcher.plan import messages

if TYPE_CHECKING:
    from tollway.researcher.admission import Admitted
    from tollway.researcher.edge import Edge, Reply
    from tollway.researcher.market import DataSource
    from tollway.researcher.plan import Call
    from tollway.researcher.store import RunStore

log = structlog.get_logger(__name__)
RECEIPT_WAIT_SECONDS = 30.0
RECEIPT_POLL_SECONDS = 0.05
# A limit (402), a revoked permission (403) or a task the gateway no longer knows (404) ends
# the run; other failures (an upstream outage: 502) leave one section unwritten.
STOPPING = frozenset({402, 403, 404})


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The user cancelled the run."""


class StoppedByLimit(Exception):  # noqa: N818
    """The gateway refused a call for a limit (the envelope or a budget)."""


@dataclass
class Progress:
    """What the run has done so far (for progress events)."""

    calls: int = 0
    tokens: int = 0
    spent: dict[str, int] = field(default_factory=dict)
    drafts: dict[str, str] = field(default_factory=dict)

    def add(self, receipt_body: dict[str, Any] | None) -> None:
        """Count one call's final receipt."""
        self.calls += 1
        if receipt_body is None:
            return
        usage = receipt_body.get("usage") or {}
        self.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        if receipt_body.get("charged_micro"):
            bucket = receipt_body["bucket"]
            self.spent[bucket] = self.spent.get(bucket, 0) + int(receipt_body["charged_micro"])


class Runner:
    """Executes runs in this process, one asyncio task each."""

    def __init__(self, store: RunStore, edge: Edge, source: DataSource) -> None:
        self._store = store
        self._edge = edge
        self._source = source
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, asyncio.Event] = {}

    def start(self, admitted: Admitted, key: str) -> None:
        """Run in the background; the key lives only in this task's memory."""
        run_id = admitted.run["id"]
        self._cancels[run_id] = asyncio.Event()
        task = asyncio.create_task(self._run(admitted, key), name=f"research-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._forget(run_id))

    def _forget(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._cancels.pop(run_id, None)

    def cancel(self, run_id: str) -> None:
        """Wake the run if it runs here (the stored flag covers other instances)."""
        event = self._cancels.get(run_id)
        if event is not None:
            event.set()

    async def shutdown(self) -> None:
        """Stop every run this process is executing; they fail as interrupted."""
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, admitted: Admitted, key: str) -> None:
        run = admitted.run
        log.info("research_started", run_id=run["id"], mode=run["mode"], task_id=run["task_id"])
        started = time.monotonic()
        progress = Progress()
        status, error = "completed", None
        try:
            await self._store.stage(run["id"], "researching")
            for call in admitted.calls:
                await self._check_cancel(run["id"])
                await self._call(admitted, key, call, progress)
        except Cancelled:
            status, error = "cancelled", "Cancelled by the user."
        except StoppedByLimit as exc:
            status, error = "stopped", str(exc)
        except Exception as exc:  # any failure must still end the run
            log.exception("research_failed", run_id=run["id"])
            status, error = "failed", f"The run failed: {type(exc).__name__}: {exc}"
        await self._finish(admitted, key, status, error)
        log.info(
            "research_finished",
            run_id=run["id"],
            status=status,
            calls=progress.calls,
            seconds=round(time.monotonic() - started, 2),
        )

    async def _check_cancel(self, run_id: str) -> None:
        event = self._cancels.get(run_id)
        if (event is not None and event.is_set()) or await self._store.cancel_requested(run_id):
            raise Cancelled

    async def _call(self, admitted: Admitted, key: str, call: Call, progress: Progress) -> None:
        run = admitted.run
        facts = rep.facts(admitted.figures)
        msgs = messages(call, run["topic"], facts, progress.drafts.get(call.section, ""))
        await self._store.event(
            run["id"],
            "call_started",
            {"index": call.index, "section": call.section, "step": call.step, "model": call.model},
        )
        reply = await self._edge.chat(
            key,
            run["task_id"],
            {"model": call.model, "messages": msgs, "max_tokens": call.max_tokens},
        )
        body = await self._final_receipt(key, reply.request_id)
        progress.add(body)
        await self._store.add_call(run["id"], _call_row(call, reply, body))
        if reply.status == 200:
            progress.drafts[call.section] = reply.text
        await self._store.event(run["id"], "call_finished", _progress_view(call, reply, progress))
        if reply.status in STOPPING:
            raise StoppedByLimit(f"The gateway refused a call: {reply.error}")

    async def _final_receipt(self, key: str, request_id: str | None) -> dict[str, Any] | None:
        if request_id is None:
            return None
        deadline = time.monotonic() + RECEIPT_WAIT_SECONDS
        while time.monotonic() < deadline:
            body = await self._edge.receipt(key, request_id)
            if body is not None:
                return body
            await asyncio.sleep(RECEIPT_POLL_SECONDS)
        log.warning("receipt_not_final", request_id=request_id)
        return None

    async def _finish(self, admitted: Admitted, key: str, status: str, error: str | None) -> None:
        run = admitted.run
        outcome: dict[str, Any] = {"error": error}
        try:
            await self._store.stage(run["id"], "reporting")
            await self._edge.close_task(key, run["task_id"])
            calls = await self._store.calls(run["id"])
            outcome["ledger_task"] = await self._edge.task(key, run["task_id"])
            # Rendering is CPU-bound: off the event loop, so progress streams keep flowing.
            artifacts = await asyncio.to_thread(self._artifacts, admitted, calls, status, error)
            outcome.update(artifacts)
        except Exception as exc:  # the run must end even if reporting fails
            log.exception("research_report_failed", run_id=run["id"])
            status = "failed"
            outcome["error"] = f"{error or ''} The report could not be written: {exc}".strip()
        await self._store.finish(run["id"], status, outcome)

    def _artifacts(
        self, admitted: Admitted, calls: list[dict[str, Any]], status: str, error: str | None
    ) -> dict[str, Any]:
        # Imported here: matplotlib and fpdf2 cost seconds at import; start-up should not wait.
        from tollway.researcher import pdf  # noqa: PLC0415

        run, figures = admitted.run, admitted.figures
        sections = _sections(calls)
        title = f"Research: {run['topic']} ({run['mode']})"
        totals = receipt.totals(calls)
        spent = receipt.cost_lines(totals)
        why = rep.outcome(status, error, spent)
        series = {t: self._source.bars(t) for t in run["tickers"]}
        chart = pdf.chart_png(series)
        return {
            "report_md": rep.markdown(
                title, figures, sections, spent, self._source.description, outcome=why
            ),
            "report_pdf": pdf.render(
                title,
                figures,
                sections=sections,
                chart=chart,
                cost_rows=receipt.cost_rows(totals),
                source=self._source.description,
                outcome=why,
            ),
            "chart_png": chart,
        }


def _sections(calls: list[dict[str, Any]]) -> list[rep.Section]:
    """The last successful text of each section, in plan order."""
    texts: dict[str, str] = {}
    for c in calls:
        if c["http_status"] == 200:
            texts[c["section"]] = c["content"]
        else:
            texts.setdefault(c["section"], f"(not written: {c['error']})")
    return [rep.Section(name, text) for name, text in texts.items()]


def _call_row(call: Call, reply: Reply, body: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "idx": call.index,
        "section": call.section,
        "step": call.step,
        "model": call.model,
        "request_id": reply.request_id,
        "http_status": reply.status,
        "error": reply.error or None,
        "content": reply.text,
        "receipt": body,
    }


def _progress_view(call: Call, reply: Reply, progress: Progress) -> dict[str, Any]:
    return {
        "index": call.index,
        "section": call.section,
        "step": call.step,
        "model": call.model,
        "status": reply.status,
        "request_id": reply.request_id,
        "calls": progress.calls,
        "tokens": progress.tokens,
        "spent_micro": dict(progress.spent),
    }
