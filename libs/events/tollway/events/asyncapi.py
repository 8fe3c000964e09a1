"""The AsyncAPI 3.0 document of every topic and event, generated from the contracts.

``python -m tollway.events.asyncapi [--out docs/asyncapi.json]`` (``make asyncapi``). The
document is a pure function of ``catalog.CHANNELS``, ``topics.core_topics()`` and the registered
payload models, so regenerating it is deterministic and a test compares it with the committed file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from tollway.events import topics
from tollway.events.catalog import CHANNELS, REPLIES_ADDRESS, Channel
from tollway.events.envelope import Envelope, registered_types

REF = "#/components/schemas/{model}"
TRACE_HEADERS_SCHEMA = {
    "type": "object",
    "description": "W3C trace context of the request, when the client sent one (OpenTelemetry).",
    "properties": {"traceparent": {"type": "string"}, "tracestate": {"type": "string"}},
}


def _topic_config(address: str) -> dict[str, Any]:
    specs = {s.name: s for s in topics.core_topics()}
    spec = specs.get(address) or (
        topics.reply_topic_spec("{edge_id}") if address == REPLIES_ADDRESS else None
    )
    if spec is None:
        return {}
    if spec.compacted:
        return {"cleanup.policy": ["compact"]}
    return {"cleanup.policy": ["delete"], "retention.ms": spec.retention_ms}


def _channel(channel: Channel) -> dict[str, Any]:
    body: dict[str, Any] = {
        "address": channel.address,
        "summary": channel.summary,
        "description": f"Partition key: {channel.key}.",
        "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in channel.events},
        "bindings": {"kafka": {"topicConfiguration": _topic_config(channel.address)}},
    }
    if channel.address == REPLIES_ADDRESS:
        body["parameters"] = {"edge_id": {"description": "The edge instance that owns the topic."}}
    return body


def _operations() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for channel in CHANNELS:
        ref = {"$ref": f"#/channels/{_channel_id(channel)}"}
        messages = [
            {"$ref": f"#/channels/{_channel_id(channel)}/messages/{t}"} for t in channel.events
        ]
        for service in channel.publishers:
            ops[f"{service}.send.{_channel_id(channel)}"] = {
                "action": "send",
                "channel": ref,
                "messages": messages,
            }
        for service in channel.subscribers:
            ops[f"{service}.receive.{_channel_id(channel)}"] = {
                "action": "receive",
                "channel": ref,
                "messages": messages,
            }
    return ops  # fmt: skip


def _channel_id(channel: Channel) -> str:
    return channel.address.replace("{edge_id}", "edge_id").rstrip(".")


def _messages_and_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type, cls in sorted(registered_types().items()):
        schema = Envelope[cls].model_json_schema(ref_template=REF)  # type: ignore[valid-type]
        schemas.update(schema.pop("$defs", {}))
        name = f"{cls.__name__}Envelope"
        schemas[name] = schema | {"title": name}
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        messages[event_type] = {
            "name": event_type,
            "title": cls.__name__,
            "summary": summary,
            "contentType": "application/json",
            "headers": TRACE_HEADERS_SCHEMA,
            "payload": {"$ref": REF.format(model=name)},
            "x-tollway-version": cls.VERSION,
        }
    return messages, dict(sorted(schemas.items()))


def document() -> dict[str, Any]:
    """The whole AsyncAPI document as plain data."""
    messages, schemas = _messages_and_schemas()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tollway events",
            "version": "1",
            "description": (
                "Every Kafka topic of Tollway and the events on it. Each message is an envelope "
                "(id, type, version, occurred_at, trace, payload) serialized as JSON; consumers "
                "deduplicate by id. Poison messages go to <topic>.dlq with an x-dlq-reason header."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {_channel_id(c): _channel(c) for c in CHANNELS},
        "operations": _operations(),
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> bytes:
    """The document as stable, indented JSON (what is committed)."""
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to ``--out`` (default: standard output)."""
    parser = argparse.ArgumentParser(prog="python -m tollway.events.asyncapi", description=__doc__)
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.out is None:
        sys.stdout.buffer.write(render())
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
