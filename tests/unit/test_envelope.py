"""The envelope's wire format, the type registry and deterministic derived ids."""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tollway.events.envelope import Trace, UnknownEventTypeError, decode, encode, make, to_data
from tollway.events.gateway import Candidate, RequestReceived, TopUpRequested
from tollway.events.ids import derived_id, new_id
from tollway.events.pricing import Price


def _topup() -> TopUpRequested:
    return TopUpRequested(
        account_id="a", bucket="credit", unit="credit", amount_micro=5, idempotency_key="k"
    )


def test_round_trip_keeps_type_payload_and_time() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    env = make(_topup(), trace=Trace(request_id="req_1"), occurred_at=at)

    back = decode(encode(env))

    assert back == env
    assert isinstance(back.payload, TopUpRequested)
    assert back.type == "topup.requested"


def test_unknown_type_is_refused_for_the_dead_letter_topic() -> None:
    raw = orjson.dumps(
        {
            "id": "x",
            "type": "no.such",
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00Z",
            "trace": {},
            "payload": {},
        }
    )
    with pytest.raises(UnknownEventTypeError):
        decode(raw)


def test_malformed_payload_is_a_validation_error() -> None:
    env = orjson.loads(encode(make(_topup())))
    env["payload"]["amount_micro"] = -1
    with pytest.raises(ValidationError):
        decode(orjson.dumps(env))


def test_new_ids_are_unique_uuid7_and_sort_by_time() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_derived_ids_are_deterministic_distinct_and_keep_the_cause_time() -> None:
    cause = new_id("req_")
    first = derived_id(cause, "hold")
    assert first == derived_id(cause, "hold")
    assert first != derived_id(cause, "settle")
    assert uuid.UUID(first).int >> 80 == uuid.UUID(cause.removeprefix("req_")).int >> 80


def test_a_decoded_envelope_encodes_its_whole_payload() -> None:
    env = make(_topup())
    again = decode(encode(env))  # an Envelope[Payload]: the payload is declared as the base
    assert encode(again) == encode(env)
    assert orjson.loads(encode(again))["payload"]["amount_micro"] == 5


_CANDIDATE = Candidate(
    channel_id="c", channel="c", brand="b", route_type="direct", bucket="credit",
    upstream_model="m", price=Price(input=150_000, output=600_000),
)  # fmt: skip
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(), _JSON, max_size=5), name=st.text(min_size=1))
def test_encode_writes_the_bytes_of_the_envelopes_json_data(body: dict, name: str) -> None:
    # encode writes JSON straight from pydantic's serializer; the bytes are those of the data
    # (orjson over to_data), so ids, outbox rows and replayed events stay byte-identical.
    env = make(
        RequestReceived(
            request_id="req_x", edge_id="e", account_id=name, key_id="k", project_id="p",
            catalog_model=name, body=body, plan=[_CANDIDATE], estimated_input_tokens=1,
            max_output_tokens=1, deadline_at=datetime(2026, 1, 2, tzinfo=UTC),
        ),
        trace=Trace(request_id=name),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a serializer fallback warns: none may happen
        assert encode(env) == orjson.dumps(to_data(env))
        decoded = decode(encode(env))
        assert encode(decoded) == orjson.dumps(to_data(decoded)) == encode(env)
