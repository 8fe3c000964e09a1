"""The route tree through the admin API: channels, catalog models, routed models and their order.

    channel type (direct | pool) → brand → channel → routed models → primary/backup order

Every mutation writes the router's tables and its row of the edge's audit trail
(``tollway.edge.audit``) in one transaction (with, for a price change, its confirmed command to
the ledger's journal), then announces ``RouteTreeChanged`` on ``router.config`` so routers
reload at once (they also reload on a timer, so a lost announcement delays a change by a second,
never loses it). Channel
secrets are write-only: no answer and no audit row ever contains one, and the row holds them
sealed (AES-GCM under ``TOLLWAY_SECRET_KEYS``, ``tollway.runtime.sealing``); only the router
opens them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from tollway.edge import amounts, audit, errors
from tollway.edge.price_table import price_change, publish_price_change
from tollway.events import topics
from tollway.events.envelope import encode, make
from tollway.events.pricing import UNIT_PATTERN, format_micro, parse_amount
from tollway.events.recon import DEFAULT_COST_PATH, CostPathError, cost_path_segments
from tollway.events.routing import RouteTreeChanged
from tollway.runtime.sealing import ENV as SECRET_KEYS_ENV

if TYPE_CHECKING:
    import asyncpg
    from aiokafka import AIOKafkaProducer

    from tollway.runtime.sealing import KeyRing

log = structlog.get_logger(__name__)

SLUG = r"^[a-z0-9][a-z0-9_.-]{1,63}$"
SELECT_CHANNELS = """
SELECT c.*, h.state, h.reason, h.error_rate, h.changed_at
FROM router.channels c LEFT JOIN router.channel_health h ON h.channel_id = c.id
ORDER BY route_type, brand, name
"""
SELECT_CHANNEL = "SELECT * FROM router.channels WHERE id = $1"
# A change reads what it replaces under the row lock, so the "before" of concurrent changes
# (the audit row's, the price change's ``previous``) is what each one really replaced.
LOCK_CHANNEL = "SELECT * FROM router.channels WHERE id = $1 FOR UPDATE"
SELECT_MODELS = """
SELECT name, description, default_max_output_tokens, max_output_tokens, enabled
FROM router.catalog_models ORDER BY name
"""
SELECT_MODEL = """
SELECT name, description, default_max_output_tokens, max_output_tokens, enabled
FROM router.catalog_models WHERE name = $1
"""
SELECT_ROUTES = """
SELECT catalog_model, channel_id, upstream_model, tier, weight
FROM router.routes ORDER BY catalog_model, tier, weight DESC, channel_id
"""
SELECT_HEALTH_EVENTS = """
SELECT from_state, to_state, reason, error_rate, router_id, occurred_at
FROM router.channel_health_events WHERE channel_id = $1 ORDER BY occurred_at DESC LIMIT 100
"""
ANNOUNCE_SECONDS = 2
M = TypeVar("M", bound="ChannelPatch")
# The router's table may not exist yet when the edge starts first (its migrations run there).
COUNT_SECRETS = """
SELECT CASE WHEN to_regclass('router.channels') IS NULL THEN 0
       ELSE (SELECT count(*) FROM router.channels) END
"""


class Prices(BaseModel):
    """Prices per 1M tokens as decimal strings of the bucket's unit (``"0.15"``)."""

    input: str
    output: str
    cached_input: str | None = None
    cache_write: str | None = None
    cache_write_1h: str | None = None
    reasoning: str | None = None

    @field_validator(
        "input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning"
    )
    @classmethod
    def _decimal(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The one amount parser: ASCII decimal, no sign, at most the largest single amount.
        if value is not None:
            parse_amount(value, field=f"prices.{info.field_name}", sign="non_negative")
        return value

    def micro(self) -> dict[str, int | None]:
        """Each price in micro-units per 1M tokens (None: the class falls back to input/output)."""
        return {
            name: None if value is None else parse_amount(value, sign="non_negative")
            for name in ("input", "output", *OPTIONAL_PRICES)
            for value in [getattr(self, name)]
        }


class CostPrices(BaseModel):
    """The channel's upstream cost price: decimal strings of ``currency`` (``"0.12"``).

    Per 1M tokens of each class (an unset class falls back like the sell price's), and
    ``per_request`` per upstream call. Operators only: never on a tenant's receipt. Amounts are
    parsed by the one parser when the change is applied (400 ``invalid_amount`` naming
    ``cost.<field>``).
    """

    currency: str = Field(pattern=UNIT_PATTERN)
    input: str
    output: str
    cached_input: str | None = None
    cache_write: str | None = None
    cache_write_1h: str | None = None
    reasoning: str | None = None
    per_request: str | None = None

    def micro(self) -> dict[str, int | str | None]:
        """The ``cost_*`` columns: the currency, and each amount in micro-units."""
        columns: dict[str, int | str | None] = {"cost_currency": self.currency}
        for name in COST_AMOUNTS:
            value = getattr(self, name)
            columns[f"cost_{name}"] = (
                None
                if value is None
                else amounts.amount(value, field=f"cost.{name}", sign="non_negative")
            )
        if columns["cost_per_request"] is None:
            columns["cost_per_request"] = 0
        return columns


class ChannelPatch(BaseModel):
    """Fields an operator may change on a channel (absent = unchanged; ``cost: null`` clears)."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    brand: str | None = Field(default=None, pattern=SLUG)
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)
    adapter: Literal["openai", "anthropic"] | None = None
    secret: str | None = Field(default=None, min_length=1, max_length=4096)
    prices: Prices | None = None
    cost: CostPrices | None = None
    timeout_ms: int | None = Field(default=None, ge=100, le=600_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    enabled: bool | None = None
    # Where the upstream's answer says what a call cost ("" resets to usage.cost).
    reported_cost_path: str | None = None

    @field_validator("reported_cost_path")
    @classmethod
    def _cost_path(cls, value: str | None) -> str | None:
        if value:
            try:
                cost_path_segments(value)
            except CostPathError as exc:
                raise ValueError(f"Invalid value for 'reported_cost_path': {exc}.") from None
        return value


class NewChannel(ChannelPatch):
    """A channel: where a brand's models are served, by which protocol, paid from which bucket."""

    id: str = Field(pattern=SLUG)
    route_type: Literal["direct", "pool"]
    brand: str = Field(pattern=SLUG)
    base_url: str = Field(pattern=r"^https?://\S+$", max_length=2000)
    secret: str = Field(min_length=1, max_length=4096)
    prices: Prices


class ModelPatch(BaseModel):
    """Fields of a catalog model an operator may change."""

    description: str | None = Field(default=None, max_length=500)
    default_max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    enabled: bool | None = None


class NewModel(ModelPatch):
    """A model clients may ask for by name."""

    name: str = Field(pattern=SLUG)


class RouteEntry(BaseModel):
    """One routed model: the channel, its upstream model name, its tier and weight."""

    channel_id: str
    upstream_model: str = Field(min_length=1, max_length=200)
    tier: int = Field(default=0, ge=0, le=9)
    weight: int = Field(default=1, ge=1, le=1000)


class RoutePlan(BaseModel):
    """A catalog model's candidates: tier 0 is primary, 1 backup 1, …; weights split a tier."""

    routes: list[RouteEntry] = Field(max_length=50)


def channel_view(row: Any) -> dict[str, Any]:
    """A channel as the API shows it: prices as decimals, never the secret."""
    return {
        "id": row["id"],
        "name": row["name"],
        "route_type": row["route_type"],
        "brand": row["brand"],
        "bucket": row["bucket"],
        "base_url": row["base_url"],
        "adapter": row["adapter"],
        "prices_per_1m": {
            "input": format_micro(row["price_input"]),
            "output": format_micro(row["price_output"]),
            **{name: _optional_price(row, name) for name in OPTIONAL_PRICES},
        },
        "cost_per_1m": cost_view(row),
        "timeout_ms": row["timeout_ms"],
        "max_concurrency": row["max_concurrency"],
        "enabled": row["enabled"],
        "reported_cost_path": row.get("reported_cost_path") or DEFAULT_COST_PATH,
    }


OPTIONAL_PRICES = ("cached_input", "cache_write", "cache_write_1h", "reasoning")
COST_AMOUNTS = ("input", "output", *OPTIONAL_PRICES, "per_request")
COST_COLUMNS = ("cost_currency", *(f"cost_{name}" for name in COST_AMOUNTS))


def cost_view(row: Any) -> dict[str, str | None] | None:
    """The channel's cost price as decimals of its currency, or None when it has none."""
    if row.get("cost_currency") is None:
        return None
    return {
        "currency": row["cost_currency"],
        **{
            name: None if row[f"cost_{name}"] is None else format_micro(row[f"cost_{name}"])
            for name in COST_AMOUNTS
        },
    }


def _optional_price(row: Any, name: str) -> str | None:
    value = row.get(f"price_{name}")
    return None if value is None else format_micro(value)


def _health(row: Any) -> dict[str, Any]:
    if row["state"] is None:
        return {"state": "closed", "reason": "no failures seen"}
    return {
        "state": row["state"],
        "reason": row["reason"],
        "error_rate": row["error_rate"],
        "since": row["changed_at"].isoformat(),
    }


def channel_columns(data: ChannelPatch) -> dict[str, Any]:
    """The patch as column values (prices in micro-units per 1M tokens).

    A cost price replaces the whole previous one (classes left out fall back again); an
    explicit ``"cost": null`` removes it.
    """
    columns = data.model_dump(exclude_none=True, exclude={"prices", "cost"})
    if data.prices is not None:
        columns.update({f"price_{name}": v for name, v in data.prices.micro().items()})
    if data.cost is not None:
        columns.update(data.cost.micro())
    elif "cost" in data.model_fields_set:
        columns.update(dict.fromkeys(COST_COLUMNS))
    return columns


class SecretsNotConfiguredError(RuntimeError):
    """Channel secrets are stored and no key to seal new ones is configured: do not start."""


async def check_secret_keys(conn: asyncpg.Connection, ring: KeyRing | None) -> None:
    """Refuse to start without a key when channels (each with a sealed secret) exist."""
    stored = await conn.fetchval(COUNT_SECRETS)
    if ring is None and stored:
        raise SecretsNotConfiguredError(
            f"{stored} channel secret(s) are stored but {SECRET_KEYS_ENV} is not set: set it to"
            " the key list they were sealed with (key_id:base64-key, first one seals)."
        )


class RouteTreeStore:
    """Reads and audited writes of the router's tables."""

    def __init__(
        self, pool: asyncpg.Pool, producer: AIOKafkaProducer, ring: KeyRing | None = None
    ) -> None:
        """Write through ``pool``; announce through ``producer``; seal secrets with ``ring``."""
        self._pool = pool
        self._producer = producer
        self._ring = ring

    def sealed(self, data: M, channel_id: str) -> M:
        """``data`` with its secret (if any) sealed for the row of ``channel_id``."""
        if data.secret is None:
            return data
        if self._ring is None:
            raise errors.DependencyDownError(
                f"Channel secrets cannot be stored: {SECRET_KEYS_ENV} is not configured.",
                code="secret_keys_missing",
            )
        sealed = self._ring.seal(data.secret, f"channel:{channel_id}")
        return data.model_copy(update={"secret": sealed})

    async def tree(self) -> dict[str, Any]:
        """The whole tree, with each channel's live circuit state and each model's plan."""
        async with self._pool.acquire() as conn:
            channels = await conn.fetch(SELECT_CHANNELS)
            models = await conn.fetch(SELECT_MODELS)
            routes = await conn.fetch(SELECT_ROUTES)
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for r in routes:
            by_channel.setdefault(r["channel_id"], []).append(
                {k: r[k] for k in ("catalog_model", "upstream_model", "tier", "weight")}
            )
        route_types: dict[str, dict[str, list[dict[str, Any]]]] = {}
        views: dict[str, dict[str, Any]] = {}
        for c in channels:
            view = {**channel_view(c), "health": _health(c), "models": by_channel.get(c["id"], [])}
            views[c["id"]] = view
            route_types.setdefault(c["route_type"], {}).setdefault(c["brand"], []).append(view)
        return {
            "route_types": [
                {
                    "route_type": rt,
                    "brands": [{"brand": b, "channels": chs} for b, chs in brands.items()],
                }
                for rt, brands in route_types.items()
            ],
            "catalog": [_plan(m, routes, views) for m in models],
        }

    async def mutate(
        self, actor: str, action: str, subject: str, change: _Change
    ) -> dict[str, Any]:
        """Apply one change with its audit row in a transaction, then announce it.

        A price change is published to the ledger's journal before the commit: if the log does
        not confirm it, nothing of the change is written (503).
        """
        extra: dict[str, Any] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            before, after = await change(conn)
            audit_id = await audit.record(
                conn, actor, audit.Change(action, subject, before=before, after=after)
            )
            command = price_change(actor, action, audit_id, before, after)
            if command is not None:
                extra["price_event_id"] = await publish_price_change(self._producer, command)
        await self._announce(RouteTreeChanged(action=action, subject=subject, audit_id=audit_id))
        return {**(after or {}), "audit_id": audit_id, **extra}

    async def _announce(self, changed: RouteTreeChanged) -> None:
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topics.ROUTE_CONFIG, value=encode(make(changed)), key=changed.subject.encode()
                ),
                timeout=ANNOUNCE_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001 - routers also reload on a timer
            log.warning("route_change_not_announced", subject=changed.subject, error=repr(exc))

    async def health_history(self, channel_id: str) -> list[dict[str, Any]]:
        """A channel's circuit transitions, newest first."""
        rows = await self._pool.fetch(SELECT_HEALTH_EVENTS, channel_id)
        return [{**dict(r), "occurred_at": r["occurred_at"].isoformat()} for r in rows]


def _plan(model: Any, routes: list[Any], channels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    plan = []
    for r in (r for r in routes if r["catalog_model"] == model["name"]):
        c = channels.get(r["channel_id"], {})
        plan.append(
            {
                "channel_id": r["channel_id"],
                "channel": c.get("name"),
                "route_type": c.get("route_type"),
                "bucket": c.get("bucket"),
                "upstream_model": r["upstream_model"],
                "tier": r["tier"],
                "weight": r["weight"],
                "enabled": c.get("enabled"),
                "health": c.get("health", {}).get("state"),
            }
        )
    return {**dict(model), "plan": plan}


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    _Change = Callable[
        [asyncpg.Connection], Awaitable[tuple[dict[str, Any] | None, dict[str, Any] | None]]
    ]
