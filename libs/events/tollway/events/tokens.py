"""The one token counter for requests: worst-case holds, streams without usage, count_tokens.

Deliberately generous (3 bytes of JSON per token, plus framing per part), so a hold placed on
it covers the input an upstream will bill. The same function counts what the edge received
(to size the hold), what the router actually sent (when an upstream reports no usage), and what
``POST /v1/messages/count_tokens`` answers, so the three never disagree about one body.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import orjson

BYTES_PER_TOKEN = 3
FRAMING_TOKENS = 8

BodyKind = Literal["chat", "messages", "responses", "embeddings"]


def estimate_tokens(content: Any) -> int:
    """A generous count of ``content``'s tokens: its JSON size over 3, plus framing per part."""
    size = len(orjson.dumps(content))
    framing = FRAMING_TOKENS * len(content) if isinstance(content, list) else FRAMING_TOKENS
    return math.ceil(size / BYTES_PER_TOKEN) + framing


def input_tokens(kind: BodyKind, body: dict[str, Any]) -> int:
    """The prompt tokens of a request body of ``kind`` (what an upstream would bill as input)."""
    if kind == "embeddings":
        return estimate_tokens(body.get("input"))
    if kind == "messages":
        return estimate_tokens([body.get("system"), body.get("messages"), body.get("tools")])
    if kind == "responses":
        return estimate_tokens([body.get("instructions"), body.get("input"), body.get("tools")])
    count = estimate_tokens(body.get("messages"))
    return count + estimate_tokens(body["tools"]) if body.get("tools") else count


def kind_of_path(path: str) -> BodyKind:
    """The body kind an upstream path takes (``/chat/completions``, ``/messages``, ...)."""
    for kind, suffix in (
        ("messages", "/messages"),
        ("responses", "/responses"),
        ("embeddings", "/embeddings"),
    ):
        if path.rstrip("/").endswith(suffix):
            return kind  # type: ignore[return-value]
    return "chat"
