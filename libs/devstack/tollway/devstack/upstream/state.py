"""Run-time state of the demo upstream: per-channel latency, armed faults and request counters.

One ``UpstreamState`` belongs to one app and is only touched from its event loop, so it needs no
locks. Faults armed for a channel form a queue: the head fires for its next ``count`` inference
requests, then the next armed fault takes over.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Iterable


class FaultKind(StrEnum):
    """What goes wrong."""

    STATUS = "status"
    RATE_LIMIT = "rate_limit"
    HANG = "hang"
    CUT_STREAM = "cut_stream"
    NO_USAGE = "no_usage"


class FaultSpec(BaseModel):
    """A fault as posted to ``POST /_control/faults``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str
    kind: FaultKind
    status: int = Field(default=500, ge=400, le=599)
    count: int = Field(default=1, ge=1)
    retry_after: int = Field(default=1, ge=0)
    after_chunks: int = Field(default=3, ge=0)
    hang_seconds: float = Field(default=3600.0, gt=0)


class LatencySpec(BaseModel):
    """A latency change as posted to ``POST /_control/latency``; ``channel`` null means all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str | None = None
    latency_ms: int | None = Field(default=None, ge=0)
    chunk_delay_ms: int | None = Field(default=None, ge=0)


class UnknownChannelError(LookupError):
    """A control request named a channel this upstream does not serve."""


@dataclass(slots=True)
class ArmedFault:
    """A fault in a channel's queue and how many more requests it will hit."""

    spec: FaultSpec
    remaining: int


@dataclass(slots=True)
class ChannelState:
    """One channel: its latency, its fault queue and what it has received."""

    latency_ms: int
    chunk_delay_ms: int
    faults: deque[ArmedFault] = field(default_factory=deque)
    requests: Counter[str] = field(default_factory=Counter)
    faults_fired: int = 0
    prompt_cache: set[str] = field(default_factory=set)

    def count(self, endpoint: str) -> None:
        """Record one request received on ``endpoint``."""
        self.requests[endpoint] += 1

    def take_fault(self) -> FaultSpec | None:
        """Return the armed fault for this request, if any, consuming one of its ``count``."""
        if not self.faults:
            return None
        head = self.faults[0]
        head.remaining -= 1
        if head.remaining == 0:
            self.faults.popleft()
        self.faults_fired += 1
        return head.spec


class UpstreamState:
    """Every channel's state, keyed by channel name."""

    def __init__(
        self,
        channels: Iterable[str],
        *,
        latency_ms: int,
        chunk_delay_ms: int,
        endpoints: Iterable[str],
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.channels = {name: ChannelState(latency_ms, chunk_delay_ms) for name in channels}

    def require(self, name: str) -> ChannelState:
        """Return the named channel, or raise ``UnknownChannelError``."""
        try:
            return self.channels[name]
        except KeyError:
            raise UnknownChannelError(name) from None

    def arm(self, spec: FaultSpec) -> int:
        """Queue ``spec`` on its channel; returns how many faults are now queued there."""
        queue = self.require(spec.channel).faults
        queue.append(ArmedFault(spec, spec.count))
        return len(queue)

    def clear_faults(self, name: str | None = None) -> int:
        """Drop the armed faults of one channel (or all); returns how many were dropped."""
        targets = [self.require(name)] if name is not None else list(self.channels.values())
        dropped = sum(len(channel.faults) for channel in targets)
        for channel in targets:
            channel.faults.clear()
        return dropped

    def armed(self) -> dict[str, list[dict[str, Any]]]:
        """List the queued faults per channel, head first."""
        return {
            name: [
                {**armed.spec.model_dump(mode="json"), "remaining": armed.remaining}
                for armed in channel.faults
            ]
            for name, channel in self.channels.items()
        }

    def stats(self) -> dict[str, dict[str, int]]:
        """Count requests received per channel and endpoint, with totals and faults fired."""
        return {name: self._channel_stats(channel) for name, channel in self.channels.items()}

    def _channel_stats(self, channel: ChannelState) -> dict[str, int]:
        counts = {endpoint: channel.requests[endpoint] for endpoint in self.endpoints}
        total = sum(channel.requests.values())
        return {**counts, "total": total, "faults_fired": channel.faults_fired}

    def reset_stats(self) -> None:
        """Zero every counter."""
        for channel in self.channels.values():
            channel.requests.clear()
            channel.faults_fired = 0

    def set_latency(self, spec: LatencySpec) -> None:
        """Apply a latency change to one channel or to all."""
        targets = (
            [self.require(spec.channel)] if spec.channel is not None else self.channels.values()
        )
        for channel in targets:
            if spec.latency_ms is not None:
                channel.latency_ms = spec.latency_ms
            if spec.chunk_delay_ms is not None:
                channel.chunk_delay_ms = spec.chunk_delay_ms
