"""What a streamed answer is made of, whatever the dialect: the common language of the adapters.

An upstream stream is decoded into these deltas by its channel's adapter; a client stream is
encoded from them by the client's adapter (when the two dialects differ) and the meter counts
them, so a stream the upstream never reported usage for can still be settled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tollway.events.pricing import Usage

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Started:
    """The upstream opened its answer."""


@dataclass(frozen=True, slots=True)
class Text:
    """Output text of choice ``index``."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    """Choice ``index`` begins tool call number ``tool``."""

    index: int
    tool: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    """A piece of the JSON arguments of tool call ``tool``."""

    index: int
    tool: int
    json: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Choice ``index`` ended; ``reason`` in OpenAI's vocabulary (stop, length, tool_calls)."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class UsageSeen:
    """Token counts the upstream reported (None: not in this frame)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None

    @classmethod
    def of(cls, usage: Usage, *, output: bool = True) -> UsageSeen:
        """Everything ``usage`` says (its output side only when ``output``)."""
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens if output else None,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens if output else None,
        )


@dataclass(frozen=True, slots=True)
class Done:
    """The upstream ended its answer cleanly."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The upstream reported an error inside the stream."""

    message: str


Delta = Started | Text | ToolStart | ToolArgs | Finished | UsageSeen | Done | Failed


@dataclass(slots=True)
class Meter:
    """Counts a stream: the usage the upstream reported, else an estimate from what was sent.

    The estimate counts output from the streamed text (four characters a token, rounded up),
    capped by the request's max output tokens; its input side is counted from the request
    actually sent upstream, with the counter the worst-case hold uses.
    """

    estimated_input_tokens: int
    max_output_tokens: int
    chars: int = 0
    frames: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def see(self, delta: Delta) -> None:
        """Count one delta."""
        if isinstance(delta, Text):
            self.chars += len(delta.text)
        elif isinstance(delta, ToolArgs):
            self.chars += len(delta.json)
        elif isinstance(delta, ToolStart):
            self.chars += len(delta.name)
        elif isinstance(delta, UsageSeen):
            self.input_tokens = _newer(self.input_tokens, delta.input_tokens)
            self.output_tokens = _newer(self.output_tokens, delta.output_tokens)
            self.cached_input_tokens = delta.cached_input_tokens or self.cached_input_tokens
            self.cache_write_tokens = delta.cache_write_tokens or self.cache_write_tokens
            self.cache_write_1h_tokens = delta.cache_write_1h_tokens or self.cache_write_1h_tokens
            self.reasoning_tokens = delta.reasoning_tokens or self.reasoning_tokens

    @property
    def estimated(self) -> bool:
        """The upstream never reported the output tokens."""
        return self.output_tokens is None

    def usage(self) -> Usage:
        """Reported usage, or the estimate (marked ``estimated``)."""
        counted = min(math.ceil(self.chars / CHARS_PER_TOKEN), self.max_output_tokens)
        input_tokens = (
            self.estimated_input_tokens if self.input_tokens is None else self.input_tokens
        )
        return Usage(
            input_tokens=input_tokens,
            output_tokens=counted if self.output_tokens is None else self.output_tokens,
            cached_input_tokens=min(self.cached_input_tokens, input_tokens),
            cache_write_tokens=self.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens,
            estimated=self.estimated,
        )


def _newer(old: int | None, new: int | None) -> int | None:
    return old if new is None else new
