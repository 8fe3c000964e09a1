"""What a run will do and what it may cost, before it starts (pure).

A mode fixes the sections, their depth (a draft, then a revision that reads the draft, in deep
mode), the model tier of each call and the output cap of each call. The plan is the full list
of calls with their prompts, so the estimate is computed from the very prompts that will be
sent. The upper estimate reproduces the ledger's own worst case per call (generous input count,
full output cap, dearest candidate of the bucket), so a task envelope of that size never
refuses a planned call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import orjson

from tollway.events.pricing import Price, Usage, cost_micro

Mode = Literal["quick", "standard", "deep"]
Tier = Literal["fast", "strong"]
RouteType = Literal["direct", "pool"]
# The part of a draft a revision prompt quotes: bounded, so the estimate stays an upper bound.
DRAFT_QUOTE_CHARS = 1200
DEFAULT_MODELS: dict[Tier, str] = {"fast": "gpt-4o-mini", "strong": "claude-3-5-haiku"}


@dataclass(frozen=True)
class ModeSpec:
    """The shape of a mode."""

    sections: tuple[str, ...]
    revise: bool
    max_tokens: int
    summary_tier: Tier


MODES: dict[Mode, ModeSpec] = {
    "quick": ModeSpec(("overview", "risk"), revise=False, max_tokens=300, summary_tier="fast"),
    "standard": ModeSpec(
        ("overview", "trend", "risk", "outlook"),
        revise=False,
        max_tokens=500,
        summary_tier="strong",
    ),
    "deep": ModeSpec(
        ("overview", "trend", "momentum", "risk", "drawdowns", "outlook"),
        revise=True,
        max_tokens=700,
        summary_tier="strong",
    ),
}


@dataclass(frozen=True)
class Call:
    """One planned model call. ``step`` is ``draft``, ``revise`` or ``summary``."""

    index: int
    section: str
    step: str
    tier: Tier
    model: str
    max_tokens: int


@dataclass(frozen=True)
class Candidate:
    """A route a call may be served by, as far as the estimate cares."""

    route_type: str
    bucket: str
    price: Price


@dataclass(frozen=True)
class BucketRange:
    """What the run may spend from one bucket, in micro-units."""

    bucket: str
    low_micro: int
    high_micro: int


@dataclass(frozen=True)
class Estimate:
    """Calls, tokens, cost range per bucket and duration, before any call."""

    calls: int
    input_tokens: int
    max_output_tokens: int
    buckets: tuple[BucketRange, ...]
    seconds: float
    notes: tuple[str, ...] = field(default=())
    # Per bucket, the worst case of the first call that may draw on it: a cap below it
    # cannot pay for a single call.
    first_call_micro: dict[str, int] = field(default_factory=dict)

    def high(self) -> dict[str, int]:
        """The upper estimate per bucket."""
        return {b.bucket: b.high_micro for b in self.buckets}


def plan_calls(mode: Mode, models: dict[Tier, str]) -> list[Call]:
    """Every call of a run, in order: drafts (and revisions), then the summary."""
    spec = MODES[mode]
    chosen = {**DEFAULT_MODELS, **models}
    steps = ("draft", "revise") if spec.revise else ("draft",)
    calls: list[Call] = []
    for section in spec.sections:
        for step in steps:
            tier: Tier = "strong" if step == "revise" else "fast"
            calls.append(Call(len(calls), section, step, tier, chosen[tier], spec.max_tokens))
    tier = spec.summary_tier
    calls.append(Call(len(calls), "summary", "summary", tier, chosen[tier], spec.max_tokens))
    return calls


def messages(call: Call, topic: str, facts: str, draft: str = "") -> list[dict[str, str]]:
    """The chat messages of one call; every number the model sees comes from ``facts``."""
    system = (
        "You are a careful financial research analyst. Use only the figures given; "
        "do not state any number that is not in them."
    )
    if call.step == "revise":
        task = (
            f"Revise the '{call.section}' section below for accuracy and clarity.\n"
            f"Draft:\n{draft[:DRAFT_QUOTE_CHARS]}"
        )
    elif call.step == "summary":
        task = "Write a short executive summary of the research."
    else:
        task = f"Write the '{call.section}' section of the report."
    user = f"Research topic: {topic}\nFigures:\n{facts}\n\n{task}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def worst_input_tokens(call: Call, topic: str, facts: str) -> int:
    """The ledger's generous input count for this call, quoting a draft of the longest kind."""
    longest = "x" * DRAFT_QUOTE_CHARS if call.step == "revise" else ""
    msgs = messages(call, topic, facts, longest)
    # Each quoted character may take up to 6 bytes in JSON (escapes), hence the margin.
    size = len(orjson.dumps(msgs)) + (5 * DRAFT_QUOTE_CHARS if call.step == "revise" else 0)
    return math.ceil(size / 3) + 8 * len(msgs)


def covered(candidates: list[Candidate], route_types: list[RouteType]) -> list[Candidate]:
    """The candidates a task with ``same_route_type`` fallback may use."""
    allowed = [c for c in candidates if c.route_type in route_types]
    return [c for c in allowed if c.route_type == allowed[0].route_type] if allowed else []


def estimate(  # noqa: PLR0913 - the estimate's inputs are all distinct facts
    calls: list[Call],
    *,
    topic: str,
    facts: str,
    routes: dict[str, list[Candidate]],
    route_types: list[RouteType],
    seconds_per_call: float,
) -> Estimate:
    """Tokens and cost range per bucket.

    Low: the primary route, a quarter of the output cap. High: the ledger's worst case on the
    dearest route of the bucket, for every call.
    """
    low: dict[str, int] = {}
    high: dict[str, int] = {}
    first: dict[str, int] = {}
    inputs = 0
    for call in calls:
        usable = covered(routes.get(call.model, []), route_types)
        if not usable:
            raise LookupError(call.model)
        worst_in = worst_input_tokens(call, topic, facts)
        inputs += worst_in
        likely = Usage(input_tokens=worst_in * 3 // 4, output_tokens=call.max_tokens // 4)
        low[usable[0].bucket] = low.get(usable[0].bucket, 0) + cost_micro(likely, usable[0].price)
        worst = Usage(input_tokens=worst_in, output_tokens=call.max_tokens)
        for bucket in {c.bucket for c in usable}:
            dearest = max(cost_micro(worst, c.price) for c in usable if c.bucket == bucket)
            high[bucket] = high.get(bucket, 0) + dearest
            first.setdefault(bucket, dearest)
    return Estimate(
        calls=len(calls),
        input_tokens=inputs,
        max_output_tokens=sum(c.max_tokens for c in calls),
        buckets=tuple(BucketRange(b, low.get(b, 0), high[b]) for b in sorted(high)),
        seconds=round(len(calls) * seconds_per_call, 1),
        first_call_micro=dict(sorted(first.items())),
    )


def envelope(estimate: Estimate, cap: dict[str, int]) -> dict[str, int]:
    """The task budget per bucket: the user's cap where given, else the upper estimate."""
    return {b: cap.get(b, high) for b, high in estimate.high().items()}


def shortfall(envelope: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """Per bucket, how much the envelope exceeds what the account has available."""
    return {
        b: amount - available.get(b, 0)
        for b, amount in envelope.items()
        if amount > available.get(b, 0)
    }
