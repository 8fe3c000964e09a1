"""The receipt contract (tollway.events.receipt): what the ledger opens, and what readers get."""

from __future__ import annotations

from datetime import UTC, datetime

from tollway.events.envelope import make
from tollway.events.gateway import Candidate, RequestReceived
from tollway.events.pricing import Price
from tollway.events.receipt import Receipt
from tollway.ledger import receipts

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CANDIDATE = Candidate(
    channel_id="c1",
    channel="direct-1",
    brand="b",
    route_type="direct",
    bucket="credit",
    upstream_model="m-1",
    price=Price(input=1, output=2),
    tier=2,
)


def _request() -> RequestReceived:
    return RequestReceived(
        request_id="req_1",
        edge_id="e",
        account_id="acct",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=[CANDIDATE],
        estimated_input_tokens=1,
        max_output_tokens=1,
        deadline_at=AT,
        task_id="t1",
        stream=True,
    )


def test_an_opened_receipt_has_the_shape_the_edge_serves() -> None:
    body = receipts.opened(make(_request(), occurred_at=AT), "credit", "usd")
    assert body == {
        "request_id": "req_1",
        "created_at": "2026-05-01T12:00:00+00:00",
        "account_id": "acct",
        "key_id": "k",
        "project_id": "p",
        "task_id": "t1",
        "user": None,
        "protocol": "openai",
        "endpoint": "chat",
        "stream": True,
        "requested_model": "m",
        "plan": [
            {
                "channel": "direct-1",
                "brand": "b",
                "route_type": "direct",
                "bucket": "credit",
                "upstream_model": "m-1",
                "tier": 2,
            }
        ],
        "status": "received",
        "bucket": "credit",
        "unit": "usd",
        "hold": None,
        "attempts": [],
        "retries": 0,
        "fallback": False,
        "served_by": None,
        "usage": None,
        "usage_estimated": False,
        "charged_micro": 0,
        "cost_micro": 0,
        "balance_after_micro": None,
        "limit": None,
        "final_status": None,
        "error": None,
    }


def test_a_settled_receipt_validates_with_the_fields_its_story_added() -> None:
    body = receipts.opened(make(_request(), occurred_at=AT), "credit", "usd")
    receipts.hold_placed(body, "hold_1", 500)
    body["refunds"] = [{"event_id": "e1", "amount": 3}]
    receipt = Receipt.model_validate(body)
    assert receipt.hold is not None
    assert receipt.hold.held_micro == 500
    assert receipt.model_extra == {"refunds": [{"event_id": "e1", "amount": 3}]}
    assert receipt.model_dump(mode="json") == body
