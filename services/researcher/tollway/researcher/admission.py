"""Before a run starts: plan, estimate, check the money, open the task envelope.

Nothing is recorded and no call is made unless every check passes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from tollway.events.ids import new_id
from tollway.events.pricing import AmountError, Price, format_micro, parse_amount
from tollway.researcher import calibrate, errors, indicators, plan
from tollway.researcher import report as rep

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tollway.researcher.edge import Edge
    from tollway.researcher.market import DataSource

    # An account's newest completed runs of a mode and models: what estimates learn from.
    PastRuns = Callable[[str, str, dict[str, str]], Awaitable[list[calibrate.PastRun]]]

TICKER = re.compile(r"\b[A-Z]{2,6}\b")


class Models(BaseModel):
    """Optional model choice per tier."""

    fast: str | None = Field(default=None, min_length=1, max_length=256)
    strong: str | None = Field(default=None, min_length=1, max_length=256)


class NewRun(BaseModel):
    """``POST /v1/research``."""

    topic: str = Field(min_length=1, max_length=500)
    ticker: str | None = Field(default=None, pattern=r"^[A-Za-z]{1,10}$")
    mode: plan.Mode = "quick"
    models: Models = Field(default_factory=Models)
    cap: dict[str, str] = Field(default_factory=dict, max_length=8)
    route_types: list[Literal["direct", "pool"]] = Field(default=["direct"], min_length=1)


@dataclass(frozen=True)
class Admitted:
    """A run ready to execute: its plan, figures and the recorded run row."""

    run: dict[str, Any]
    calls: list[plan.Call]
    figures: list[indicators.Figures]


def parse(body: bytes) -> NewRun:
    """Validate the body; the first problem becomes a 400 naming the field."""
    try:
        return NewRun.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_parameter"
        ) from None


def tickers(req: NewRun, source: DataSource) -> list[str]:
    """The explicit ticker, else the known tickers the topic names; else a 400 listing them."""
    known = source.tickers()
    if req.ticker is not None:
        if req.ticker.upper() not in known:
            raise errors.InvalidRequestError(
                f"Unknown ticker '{req.ticker}': known tickers are {', '.join(known)}.",
                param="ticker",
                code="unknown_ticker",
            )
        return [req.ticker.upper()]
    words = list(dict.fromkeys(TICKER.findall(req.topic)))
    named = [t for t in words if t in known]
    if named:
        return named
    # A topic the data source has nothing on is refused before anything is spent, rather
    # than answered with a report on other companies.
    missing = f" (no data for {', '.join(words)})" if words else ""
    raise errors.InvalidRequestError(
        f"The topic names no ticker this data source has{missing}: {source.description} has"
        f" {', '.join(known)}. Name one of them in the topic or pass 'ticker'.",
        param="topic",
        code="unknown_topic",
    )


def caps(req: NewRun) -> dict[str, int]:
    """The user's caps in micro-units."""
    out: dict[str, int] = {}
    for bucket, amount in req.cap.items():
        field = f"cap.{bucket}"
        try:
            out[bucket] = parse_amount(amount, field=field)
        except AmountError as exc:
            raise errors.InvalidRequestError(str(exc), param=field, code="invalid_amount") from None
    return out


def candidates(rows: list[dict[str, Any]]) -> dict[str, list[plan.Candidate]]:
    """Route rows grouped by catalog model, in plan order."""
    out: dict[str, list[plan.Candidate]] = {}
    for r in rows:
        price = Price(
            input=r["price_input"], output=r["price_output"], cached_input=r["price_cached_input"]
        )
        out.setdefault(r["catalog_model"], []).append(
            plan.Candidate(r["route_type"], r["bucket"], price)
        )
    return out


def check_models(calls: list[plan.Call], allowed: list[str]) -> None:
    """Every model of the plan is one the key may call, or a 400 naming those it may not."""
    refused = sorted({c.model for c in calls} - set(allowed))
    if refused:
        may = ", ".join(sorted(allowed)) or "none"
        raise errors.InvalidRequestError(
            f"This key may not call {', '.join(refused)}, which this run's plan uses (it may"
            f" call: {may}). Choose models it may call with 'models.fast' and 'models.strong'.",
            param="models",
            code="model_not_allowed",
        )


def check_route_types(req: NewRun, key_route_types: tuple[str, ...] | None) -> None:
    """The run's route types are ones the key may use, or a 400 saying which it may use."""
    if key_route_types is None:
        return
    refused = [t for t in req.route_types if t not in key_route_types]
    if refused:
        may = ", ".join(key_route_types) or "none"
        raise errors.InvalidRequestError(
            f"This key may not use {', '.join(refused)} routes, which this run asks for (it may"
            f" use: {may}). Set 'route_types' to route types this key may use.",
            param="route_types",
            code="route_type_not_allowed",
        )


def check_money(
    estimate: plan.Estimate, cap: dict[str, int], available: dict[str, int]
) -> dict[str, int]:
    """The envelope, or a 400/402 that says what is missing and what to do."""
    unknown = sorted(set(cap) - set(estimate.high()))
    if unknown:
        raise errors.InvalidRequestError(
            f"This run spends nothing from {', '.join(unknown)}; cap only "
            f"{', '.join(estimate.high())}.",
            param=f"cap.{unknown[0]}",
        )
    for bucket, amount in sorted(cap.items()):
        one_call = estimate.first_call_micro.get(bucket, 0)
        if amount < one_call:
            raise errors.InvalidRequestError(
                f"cap.{bucket} is {format_micro(amount)}, but one call of this run may cost up"
                f" to {format_micro(one_call)} (its worst case: the full output cap on the"
                f" dearest route), so the run could not make a single call. Set 'cap.{bucket}'"
                f" to at least {format_micro(one_call)}.",
                param=f"cap.{bucket}",
                code="cap_below_one_call",
            )
    envelope = plan.envelope(estimate, cap)
    short = plan.shortfall(envelope, available)
    if short:
        missing = ", ".join(
            f"{b}: needs {format_micro(envelope[b])}, has {format_micro(available.get(b, 0))}"
            for b in sorted(short)
        )
        raise errors.InsufficientBudgetError(
            f"The balance cannot cover this run's upper estimate ({missing}). Top up, choose a "
            "smaller mode, or set a lower 'cap' per bucket (the run then stops at the cap)."
        )
    return envelope


@dataclass(frozen=True)
class Checked:
    """A run every check passed, before anything is recorded or opened."""

    req: NewRun
    tickers: list[str]
    figures: list[indicators.Figures]
    calls: list[plan.Call]
    estimate: plan.Estimate
    account_id: str
    envelope: dict[str, int]
    expected: calibrate.Expected

    def view(self) -> dict[str, Any]:
        """What ``POST /v1/research/estimate`` answers: the run as it would start."""
        return {
            "object": "research.estimate",
            "topic": self.req.topic,
            "tickers": self.tickers,
            "mode": self.req.mode,
            "models": {c.tier: c.model for c in self.calls},
            "estimate": estimate_view(self.estimate, self.expected),
            "envelope_micro": self.envelope,
        }


async def check(  # noqa: PLR0913 - the composition root passes each dependency
    *,
    body: bytes,
    key: str,
    edge: Edge,
    source: DataSource,
    route_rows: list[dict[str, Any]],
    seconds_per_call: float,
    past_runs: PastRuns | None = None,
) -> Checked:
    """Every check of a run, with no side effect: the estimate, or the error that stops it."""
    req = parse(body)
    chosen = tickers(req, source)
    figures = [indicators.compute(t, source.bars(t)) for t in chosen]
    models: dict[plan.Tier, str] = {}
    if req.models.fast:
        models["fast"] = req.models.fast
    if req.models.strong:
        models["strong"] = req.models.strong
    calls = plan.plan_calls(req.mode, models)
    account = await edge.account(key)
    check_route_types(req, account.route_types)
    try:
        est = plan.estimate(
            calls,
            topic=req.topic,
            facts=rep.facts(figures),
            routes=candidates(route_rows),
            route_types=req.route_types,
            seconds_per_call=seconds_per_call,
        )
    except LookupError as exc:
        raise errors.InvalidRequestError(
            f"Model '{exc.args[0]}' has no {'/'.join(req.route_types)} route in the catalog.",
            param="models",
            code="model_not_found",
        ) from None
    check_models(calls, await edge.models(key))
    envelope = check_money(est, caps(req), account.available)
    past = (
        []
        if past_runs is None
        else await past_runs(account.account_id, req.mode, run_models(calls))
    )
    expected = calibrate.calibrate(est, past)
    return Checked(req, chosen, figures, calls, est, account.account_id, envelope, expected)


def run_models(calls: list[plan.Call]) -> dict[str, str]:
    """The model of each tier, as a run records it."""
    return {c.tier: c.model for c in calls}


async def admit(  # noqa: PLR0913 - the composition root passes each dependency
    *,
    body: bytes,
    key: str,
    edge: Edge,
    source: DataSource,
    route_rows: list[dict[str, Any]],
    seconds_per_call: float,
    past_runs: PastRuns | None = None,
) -> Admitted:
    """Everything before the first call; raises before any side effect when a check fails."""
    checked = await check(
        body=body,
        key=key,
        edge=edge,
        source=source,
        route_rows=route_rows,
        seconds_per_call=seconds_per_call,
        past_runs=past_runs,
    )
    req = checked.req
    run_id = "run_" + new_id()
    task_id = await edge.open_task(
        key, f"research {run_id}", checked.envelope, list(req.route_types)
    )
    run = {
        "id": run_id,
        "account_id": checked.account_id,
        "topic": req.topic,
        "tickers": checked.tickers,
        "mode": req.mode,
        "models": run_models(checked.calls),
        "estimate": estimate_view(checked.estimate, checked.expected),
        "envelope": checked.envelope,
        "task_id": task_id,
    }
    return Admitted(run, checked.calls, checked.figures)


def estimate_view(est: plan.Estimate, expected: calibrate.Expected | None = None) -> dict[str, Any]:
    """The estimate as the API shows it: the plan's bounds, then the expected figures.

    ``buckets`` (low, high) and ``duration_seconds`` are the plan's; ``expected`` the p50/p90
    calibrated from past runs, or the plan's own range, as ``basis`` says.
    """
    expected = expected or calibrate.static(est)
    return {
        **asdict(est),
        "buckets": [asdict(b) for b in est.buckets],
        "duration_seconds": est.seconds,
        "basis": expected.basis,
        "expected": expected.view(),
    }
