"""The AsyncAPI document covers every event and the committed copy is current."""

from __future__ import annotations

from pathlib import Path

import orjson

from tollway.events import topics
from tollway.events.asyncapi import document, render
from tollway.events.catalog import CHANNELS, topics_of
from tollway.events.envelope import registered_types

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_every_registered_event_travels_on_a_documented_topic() -> None:
    homeless = [t for t in registered_types() if not topics_of(t)]
    assert not homeless, (
        f"event types on no topic: {homeless}; add them to tollway/events/catalog.py"
        " and run `make asyncapi`"
    )


def test_the_catalog_names_only_registered_events() -> None:
    known = set(registered_types())
    assert not [t for c in CHANNELS for t in c.events if t not in known]


def test_every_core_topic_is_documented() -> None:
    documented = {c.address for c in CHANNELS}
    core = {s.name for s in topics.core_topics() if not s.name.endswith(topics.DLQ_SUFFIX)}
    assert core <= documented


def test_each_message_points_at_an_envelope_schema_of_its_type() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    for event_type, message in doc["components"]["messages"].items():
        schema = schemas[message["payload"]["$ref"].rsplit("/", 1)[1]]
        assert set(schema["required"]) >= {"id", "type", "occurred_at", "payload"}, event_type


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_bytes() == render(), (
        "docs/asyncapi.json is stale: run `make asyncapi` and commit it"
    )


def test_rendering_is_deterministic() -> None:
    assert render() == render()
    assert orjson.loads(render())["asyncapi"] == "3.0.0"
