"""Telling the ledger's journal that a channel's prices changed (gw.requests, key system:prices).

A route tree change that sets or changes a channel's prices or its upstream cost price becomes one
``PriceTableChangeRequested``, published as the last step of the change's transaction: when the
log does not confirm it, the change rolls back (503) and no price takes effect that the journal
has not heard of. Every price change goes to the one partition of ``system:prices``, so the
ledger numbers a channel's versions in the order the changes were made (they are serialized by
the channel's row lock, held until commit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.edge.publish import publish_request
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.pricing import CostPrice, Price, parse_amount
from tollway.events.routing import PriceTableChangeRequested

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

CHANNEL_ACTIONS = frozenset({"channel.create", "channel.update"})
CLASSES = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
NOT_CHANGED = "The channel was not changed; send the change again."


def _price(view: dict[str, Any]) -> Price:
    # A view shows prices as decimals with six places: parsing them back is exact.
    prices = view["prices_per_1m"]
    optional = ("cached_input", "cache_write", "cache_write_1h", "reasoning")
    return Price(
        input=parse_amount(prices["input"], sign="non_negative"),
        output=parse_amount(prices["output"], sign="non_negative"),
        **{
            k: None if prices.get(k) is None else parse_amount(prices[k], sign="non_negative")
            for k in optional
        },
    )


def _cost(view: dict[str, Any]) -> CostPrice | None:
    # The view's cost price, decimals with six places like the sell prices: exact.
    cost = view.get("cost_per_1m")
    if cost is None:
        return None
    return CostPrice(
        currency=cost["currency"],
        **{
            k: None if cost.get(k) is None else parse_amount(cost[k], sign="non_negative")
            for k in CLASSES
        },
        per_request=parse_amount(cost.get("per_request") or "0", sign="non_negative"),
    )


def price_change(
    actor: str,
    action: str,
    audit_id: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> PriceTableChangeRequested | None:
    """The ledger's command for a change that set or changed prices or cost; None otherwise."""
    if action not in CHANNEL_ACTIONS or after is None:
        return None
    previous = None if before is None else _price(before)
    prices = _price(after)
    previous_cost = None if before is None else _cost(before)
    cost = _cost(after)
    if previous == prices and previous_cost == cost:
        return None
    return PriceTableChangeRequested(
        channel_id=after["id"],
        bucket=after["bucket"],
        previous=previous,
        prices=prices,
        previous_cost=previous_cost,
        cost=cost,
        actor=actor,
        action=action,
        audit_id=audit_id,
    )


async def publish_price_change(
    producer: AIOKafkaProducer, command: PriceTableChangeRequested
) -> str:
    """Publish ``command`` and wait for the broker (else 503); return its event id."""
    envelope = make(command)
    await publish_request(producer, topics.PRICE_TABLE_KEY, envelope, NOT_CHANGED)
    return envelope.id
