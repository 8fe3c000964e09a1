"""Channel health: a rolling window of outcomes and a circuit breaker per channel.

    closed ──(error rate ≥ threshold over ≥ min_samples, or N failures in a row)──▶ open
    open ──(cool-down passed)──▶ half_open: one probe at a time
    half_open ──(probe ok)──▶ closed        half_open ──(probe failed)──▶ open (longer cool-down)

Pure: ``now`` (monotonic seconds) comes in as an argument, so every transition is a function of
the outcomes recorded and the time they were recorded at. The router records each attempt and
asks :meth:`HealthBoard.admit` before the next one; a channel whose circuit is open is left out
of the plan, so no request is served by it until a probe succeeds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a circuit opens and how long it stays open."""

    window_seconds: float = 30.0
    min_samples: int = 10
    error_rate: float = 0.5
    consecutive_failures: int = 5
    cool_down_seconds: float = 5.0
    max_cool_down_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Transition:
    """A circuit changed state: published as an event and kept for the admin API."""

    channel_id: str
    from_state: CircuitState
    to_state: CircuitState
    reason: str
    error_rate: float
    samples: int
    p50_latency_ms: int
    cool_down_seconds: float


@dataclass(slots=True)
class ChannelHealth:
    """One channel's window and circuit."""

    state: CircuitState = "closed"
    outcomes: deque[tuple[float, bool, int]] = field(default_factory=deque)
    failures_in_a_row: int = 0
    opened_at: float = 0.0
    cool_down: float = 0.0
    probing: bool = False
    probe_started: float = 0.0

    def trim(self, now: float, window: float) -> None:
        """Forget outcomes older than the window."""
        while self.outcomes and self.outcomes[0][0] < now - window:
            self.outcomes.popleft()

    def error_rate(self) -> float:
        """Share of failed outcomes in the window (0 when empty)."""
        if not self.outcomes:
            return 0.0
        return sum(1 for _, ok, _ in self.outcomes if not ok) / len(self.outcomes)

    def p50_latency_ms(self) -> int:
        """Median latency of the window's outcomes."""
        latencies = sorted(ms for _, _, ms in self.outcomes)
        return latencies[len(latencies) // 2] if latencies else 0


class HealthBoard:
    """Every channel's health, decided by one policy."""

    def __init__(self, policy: HealthPolicy) -> None:
        """Judge channels by ``policy``."""
        self.policy = policy
        self._channels: dict[str, ChannelHealth] = {}

    def _health(self, channel_id: str) -> ChannelHealth:
        return self._channels.setdefault(channel_id, ChannelHealth())

    def state(self, channel_id: str) -> CircuitState:
        """The circuit's current state."""
        return self._health(channel_id).state

    def admit(self, channel_id: str, now: float) -> tuple[bool, Transition | None]:
        """May an attempt go to this channel now? Opens a half-open probe when cool-down ended."""
        h = self._health(channel_id)
        if h.state == "closed":
            return True, None
        if h.state == "open" and now - h.opened_at >= h.cool_down:
            h.probing, h.probe_started = True, now
            return True, self._move(channel_id, h, "half_open", "cool-down passed: probing")
        # One probe at a time; a probe that never reported back (its request was cancelled)
        # is given up on after a cool-down so the circuit cannot stay half-open forever.
        if h.state == "half_open" and (not h.probing or now - h.probe_started >= h.cool_down):
            h.probing, h.probe_started = True, now
            return True, None
        return False, None

    def record(
        self, channel_id: str, *, ok: bool, latency_ms: int, now: float
    ) -> Transition | None:
        """Count one attempt's outcome; return the transition it caused, if any."""
        h = self._health(channel_id)
        h.outcomes.append((now, ok, latency_ms))
        h.trim(now, self.policy.window_seconds)
        h.failures_in_a_row = 0 if ok else h.failures_in_a_row + 1
        if h.state == "half_open":
            h.probing = False
            if ok:
                h.outcomes.clear()
                h.cool_down = 0.0
                return self._move(channel_id, h, "closed", "probe succeeded")
            return self._open(channel_id, h, now, "probe failed")
        if h.state == "closed" and not ok:
            reason = self._trip_reason(h)
            if reason is not None:
                return self._open(channel_id, h, now, reason)
        return None

    def _trip_reason(self, h: ChannelHealth) -> str | None:
        p = self.policy
        if h.failures_in_a_row >= p.consecutive_failures:
            return f"{h.failures_in_a_row} failures in a row"
        if len(h.outcomes) >= p.min_samples and h.error_rate() >= p.error_rate:
            return f"error rate {h.error_rate():.0%} over {len(h.outcomes)} attempts"
        return None

    def _open(self, channel_id: str, h: ChannelHealth, now: float, reason: str) -> Transition:
        p = self.policy
        h.opened_at = now
        h.cool_down = min(max(h.cool_down * 2, p.cool_down_seconds), p.max_cool_down_seconds)
        return self._move(channel_id, h, "open", reason)

    def _move(self, channel_id: str, h: ChannelHealth, to: CircuitState, reason: str) -> Transition:
        before, h.state = h.state, to
        return Transition(
            channel_id=channel_id,
            from_state=before,
            to_state=to,
            reason=reason,
            error_rate=round(h.error_rate(), 4),
            samples=len(h.outcomes),
            p50_latency_ms=h.p50_latency_ms(),
            cool_down_seconds=h.cool_down,
        )

    def snapshot(self) -> dict[str, CircuitState]:
        """Every known channel's state."""
        return {cid: h.state for cid, h in self._channels.items()}
