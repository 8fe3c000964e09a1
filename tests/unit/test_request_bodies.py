"""Request bodies sealed for the forever-retained topics: what the log carries, and what opens."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from tollway.events.envelope import decode, encode, make
from tollway.events.gateway import Candidate, RequestReceived
from tollway.events.pricing import Price
from tollway.runtime.bodies import BodyUnavailableError, DataKey, open_body, seal_body

PROMPT = "the launch code is 0451"
BODY = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}


def _key(key_id: str = "600s-1") -> DataKey:
    return DataKey(key_id, secrets.token_bytes(32), datetime(2030, 1, 1, tzinfo=UTC))


def _request(**fields: object) -> RequestReceived:
    candidate = Candidate(
        channel_id="c", channel="c", brand="b", route_type="direct", bucket="credit",
        upstream_model="u", price=Price(input=1, output=1),
    )  # fmt: skip
    return RequestReceived(
        request_id="req-1", edge_id="e", account_id="a", key_id="k", project_id="p",
        catalog_model="m", plan=[candidate], estimated_input_tokens=1, max_output_tokens=1,
        deadline_at=datetime(2030, 1, 1, tzinfo=UTC), **fields,
    )  # fmt: skip


def test_the_event_on_the_log_carries_no_prompt_only_the_key_id_and_ciphertext() -> None:
    key = _key()
    event = _request(sealed_body=seal_body(BODY, key, "req-1"))

    raw = encode(make(event))

    assert PROMPT.encode() not in raw
    assert b"600s-1" in raw
    decoded = decode(raw).payload
    assert isinstance(decoded, RequestReceived)
    assert decoded.body == {}
    assert decoded.sealed_body is not None
    assert open_body(decoded.sealed_body, key, "req-1") == BODY


def test_a_body_opens_only_for_its_request_and_with_its_key() -> None:
    key = _key()
    sealed = seal_body(BODY, key, "req-1")

    with pytest.raises(BodyUnavailableError):
        open_body(sealed, key, "req-2")
    with pytest.raises(BodyUnavailableError):
        open_body(sealed, _key(), "req-1")


def test_an_event_written_before_sealing_still_reads_with_its_body() -> None:
    event = _request(body=BODY)

    decoded = decode(encode(make(event))).payload

    assert isinstance(decoded, RequestReceived)
    assert decoded.body == BODY
    assert decoded.sealed_body is None
