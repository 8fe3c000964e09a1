"""Deterministic content for the demo upstream: words, token counts, tool arguments, vectors.

Every value is a pure function of the request (model, messages, choice index), so one request
always yields the same text and the same usage and tests can assert exact numbers. Token counts
stand in for a real tokenizer: ceil(chars / 4) per text, 4 more per message, 85 per image part.
One emitted piece (a word with its leading space, or four characters of tool arguments) is one
output token, so the number of stream deltas equals the reported output tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

VOCABULARY = (
    "amber", "anchor", "arrow", "autumn", "basin", "beacon", "birch", "bridge",
    "canyon", "cedar", "cinder", "cloud", "comet", "coral", "delta", "dune",
    "ember", "fable", "fern", "field", "fjord", "flint", "forest", "garden",
    "glacier", "granite", "harbor", "hazel", "horizon", "island", "ivory", "jasper",
    "lagoon", "lantern", "maple", "meadow", "mesa", "mirror", "nectar", "oasis",
    "orchard", "pebble", "pine", "prairie", "quartz", "quill", "raven", "reef",
    "ridge", "river", "saffron", "sierra", "spruce", "summit", "thistle", "tide",
    "timber", "valley", "velvet", "willow", "winter", "yarrow", "zenith", "zephyr",
)  # fmt: skip
MIN_WORDS = 20
MAX_WORDS = 60
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 85
IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
MAX_SCHEMA_DEPTH = 6


class Finish(StrEnum):
    """Why generation stopped, before each protocol names it its own way."""

    END = "end"
    STOP_SEQUENCE = "stop_sequence"
    LENGTH = "length"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Output:
    """What the model emits: ``pieces`` are the stream deltas, one output token each."""

    pieces: tuple[str, ...]
    finish: Finish
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        """The whole emitted text (the concatenation of the stream deltas)."""
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        """Output tokens billed for this output."""
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the caller offered: its name and its JSON schema for arguments."""

    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """The caller's tool choice: ``mode`` is auto, none, required or named (with ``name``)."""

    mode: str = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the demo model decided to make."""

    call_id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """Arguments as the JSON text a model would emit."""
        return json.dumps(self.arguments, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Turn:
    """The assistant's answer to one choice: text, or a tool call whose arguments are the output."""

    output: Output
    tool: ToolCall | None = None


def seed_of(*parts: Any) -> int:
    """Hash the canonical JSON of ``parts`` (sorted keys: key order is moot) to a 64-bit seed."""
    canonical = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return int.from_bytes(hashlib.sha256(canonical).digest()[:8], "big")


def approx_tokens(text: str) -> int:
    """Tokens of a text under the four-characters-per-token approximation."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def content_tokens(content: Any) -> int:
    """Tokens of a message content: a string, a list of parts, or any JSON value."""
    if content is None:
        return 0
    if isinstance(content, str):
        return approx_tokens(content)
    if isinstance(content, list):
        return sum(_part_tokens(part) for part in content)
    return approx_tokens(orjson.dumps(content).decode())


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return content_tokens(part)
    kind = part.get("type")
    if kind in IMAGE_PART_TYPES:
        return IMAGE_TOKENS
    if kind == "tool_result":
        return content_tokens(part.get("content"))
    if kind == "tool_use":
        return content_tokens(part.get("input", {}))
    text = part.get("text")
    return approx_tokens(text) if isinstance(text, str) else content_tokens(dict(part))


def prompt_tokens(messages: Iterable[dict[str, Any]], extras: Iterable[Any] = ()) -> int:
    """Input tokens: per message its content, tool calls and overhead; plus system and tools."""
    total = sum(
        MESSAGE_OVERHEAD_TOKENS
        + content_tokens(message.get("content"))
        + content_tokens(message.get("tool_calls"))
        for message in messages
    )
    return total + sum(content_tokens(extra) for extra in extras)


def text_of(content: Any) -> str:
    """Return the plain text of a content: the string itself or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def last_user_text(messages: Sequence[dict[str, Any]]) -> str | None:
    """Return the final message's text if a user wrote it; ``None`` after a tool result."""
    last = messages[-1]
    return text_of(last.get("content")) if last.get("role") == "user" else None


def prose(seed: int) -> str:
    """Between MIN_WORDS and MAX_WORDS vocabulary words, as one sentence."""
    rng = random.Random(seed)  # noqa: S311 - determinism, not secrecy
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(MIN_WORDS, MAX_WORDS))]
    return " ".join(words).capitalize() + "."


def json_text(seed: int, schema: dict[str, Any] | None) -> str:
    """Write a JSON object: shaped by ``schema`` when given, else a fixed answer shape."""
    rng = random.Random(seed)  # noqa: S311 - determinism, not secrecy
    value = sample(schema, rng) if schema else {"answer": prose(seed), "score": rng.randint(1, 9)}
    return json.dumps(value, sort_keys=True)


def split_pieces(text: str) -> tuple[str, ...]:
    """Split text into word deltas that concatenate back to exactly ``text``."""
    if not text:
        return ()
    head, *rest = text.split(" ")
    return (head, *(" " + word for word in rest))


def shape(text: str, stops: Sequence[str], max_tokens: int | None) -> Output:
    """Cut ``text`` at the first stop sequence, then at ``max_tokens`` pieces."""
    hits = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    matched = min(hits)[1] if hits else None
    pieces = split_pieces(text[: text.find(matched)] if matched else text)
    if max_tokens is not None and len(pieces) > max_tokens:
        return Output(pieces[:max_tokens], Finish.LENGTH)
    return Output(pieces, Finish.STOP_SEQUENCE if matched else Finish.END, matched)


def choose_tool(
    tools: Sequence[ToolSpec], choice: ToolChoice, user_text: str | None
) -> ToolSpec | None:
    """Pick the tool to call, if any: forced by ``choice``, or wanted as the user said weather.

    Raises ``LookupError`` when ``choice`` names a tool that was not offered.
    """
    if not tools or choice.mode == "none":
        return None
    if choice.name is not None:
        named = next((tool for tool in tools if tool.name == choice.name), None)
        if named is None:
            raise LookupError(choice.name)
        return named
    wants = choice.mode == "required" or "weather" in (user_text or "").lower()
    weather = (tool for tool in tools if "weather" in tool.name.lower())
    return next(weather, tools[0]) if wants else None


def tool_turn(tool: ToolSpec, seed: int) -> Turn:
    """Call ``tool`` with arguments sampled from its schema."""
    rng = random.Random(seed)  # noqa: S311 - determinism, not secrecy
    arguments = sample(tool.schema or {"type": "object"}, rng)
    call = ToolCall(f"{seed:016x}", tool.name, arguments if isinstance(arguments, dict) else {})
    text = call.arguments_json
    pieces = tuple(text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN))
    return Turn(Output(pieces, Finish.TOOL), call)


def sample(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """Make up a value satisfying the simple parts of a JSON schema (types, enum, const)."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((name for name in kind if name != "null"), "null")
    return _SAMPLERS.get(kind, _sample_null)(schema, rng, depth)


def _sample_object(schema: dict[str, Any], rng: random.Random, depth: int) -> Any:
    properties = schema.get("properties") or {}
    return {key: sample(properties[key], rng, depth + 1) for key in sorted(properties)}


def _sample_array(schema: dict[str, Any], rng: random.Random, depth: int) -> Any:
    return [sample(schema.get("items") or {}, rng, depth + 1)]


def _sample_null(_schema: dict[str, Any], _rng: random.Random, _depth: int) -> Any:
    return None


_SAMPLERS: dict[str, Callable[[dict[str, Any], random.Random, int], Any]] = {
    "object": _sample_object,
    "array": _sample_array,
    "string": lambda _schema, rng, _depth: rng.choice(VOCABULARY),
    "integer": lambda _schema, rng, _depth: rng.randint(1, 100),
    "number": lambda _schema, rng, _depth: round(rng.uniform(0, 100), 2),
    "boolean": lambda _schema, rng, _depth: rng.random() < 0.5,
}


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """Make a unit vector of ``dimensions`` floats keyed on model and text."""
    rng = random.Random(seed_of(model, text))  # noqa: S311 - determinism, not secrecy
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]


def pack_base64(vector: Sequence[float]) -> str:
    """Encode as OpenAI's ``encoding_format=base64`` does: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")
REASONING_PER_OUTPUT_TOKEN = 2


def is_reasoning_model(model: str) -> bool:
    """A model that thinks before it answers (the o-series, gpt-5, or '...reasoning...')."""
    return model.startswith(REASONING_MODEL_PREFIXES) or "reasoning" in model


def reasoning_tokens(model: str, visible: int, limit: int | None) -> int:
    """Hidden reasoning tokens billed with the output: twice the visible ones, within ``limit``."""
    if not is_reasoning_model(model):
        return 0
    wanted = REASONING_PER_OUTPUT_TOKEN * visible
    return wanted if limit is None else max(0, min(wanted, limit - visible))


def cache_key(*parts: Any) -> str:
    """A stable key of a prompt prefix (sorted-key JSON, hashed)."""
    return f"{seed_of(*parts):016x}"
