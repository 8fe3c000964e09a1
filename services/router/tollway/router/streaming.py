"""One streamed attempt: open the upstream stream, relay it to the client's reply topic, count it.

Frames travel as ``ReplyChunk`` events in the client's dialect (relayed as they are when the
channel speaks it, encoded from deltas when it does not). What the client has received decides
what happens on a failure:

- nothing yet (an error status, a refused connection, a stream that died before its first
  frame): the attempt failed and the plan moves on, invisibly to the client;
- something: the client pays for this attempt. A clean end closes the stream; a cut, an error
  event or the deadline ends it with an error event in the client's dialect (never a clean end
  that looks like success); a client that went away stops the upstream call. The usage is what
  the upstream reported, else counted from the streamed text and marked estimated.

Chunk event ids are derived from the authorization and the sequence number, so a redelivered
authorization re-emits the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.gateway import ReplyChunk, ReplyStreamEnd, RequestAuthorized, SseFrame
from tollway.events.ids import derived_id
from tollway.events.pricing import format_micro
from tollway.router import responses_stream
from tollway.router.adapters import DIALECTS, sent_input_tokens, unsupported
from tollway.router.client_stream import ClientStream, channel_format
from tollway.router.deltas import Done, Failed, Meter
from tollway.router.openai_adapter import UnsupportedEndpointError
from tollway.router.upstream import (
    UpstreamResult,
    error_result,
    failure,
    ms_since,
    open_stream,
    sse_frames,
    upstream_id,
)
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from tollway.events.gateway import Candidate
    from tollway.router.adapters import StreamDecoder
    from tollway.router.channels import Channel
    from tollway.router.upstream import UpstreamCall

Sink = Callable[[Outgoing], Awaitable[None]]


@dataclass(slots=True)
class _Progress:
    """What one streamed attempt has done so far; survives the attempt task's cancellation."""

    meter: Meter
    decoder: StreamDecoder
    client: ClientStream
    started: float = field(default_factory=time.perf_counter)
    sent: int = 0
    ttft_ms: int | None = None
    upstream_id: str | None = None
    clean: bool = False
    error: str | None = None
    refused: UpstreamResult | None = None
    reported_cost_micro: int | None = None


class StreamAttempt:
    """Runs one streamed attempt of a request and publishes its frames through ``sink``."""

    def __init__(
        self,
        env: Envelope[RequestAuthorized],
        sink: Sink,
        cancelled: asyncio.Event,
    ) -> None:
        """Relay ``env``'s stream through ``sink`` until done or ``cancelled``."""
        self._env = env
        self._req = env.payload.request
        self._sink = sink
        self._cancelled = cancelled
        self.seq = 0  # frames published across attempts: only one attempt ever sends any
        self._candidate: Candidate | None = None

    async def run(self, channel: Channel, candidate: Candidate, timeout_s: float) -> UpstreamResult:
        """Stream from ``channel``; the result says whether the client got anything."""
        dialect = DIALECTS[channel.adapter]
        self._candidate = candidate
        started = time.perf_counter()
        try:
            call = dialect.build_call(self._req, candidate.upstream_model, channel.secret)
        except UnsupportedEndpointError as exc:
            return unsupported(exc, started)
        sent = sent_input_tokens(call)
        meter = Meter(sent, self._req.max_output_tokens)
        client = ClientStream(self._req, channel.adapter, sent)
        native_responses = channel_format(self._req, channel.adapter) == "responses"
        decoder = responses_stream.Decoder() if native_responses else dialect.decoder()
        progress = _Progress(meter, decoder, client, started)
        work = asyncio.create_task(self._relay(channel, call, progress, timeout_s))
        failed = await self._until_done_or_cancelled(work, progress)
        if progress.refused is not None:
            return progress.refused
        if progress.sent == 0 and not progress.clean:
            # Nothing reached the client: a plain failed attempt, the plan may move on.
            if self._cancelled.is_set():
                return failure("protocol_error", "client_disconnected", progress.started)
            reason = "upstream_stream_error" if progress.error else "stream_cut"
            return failed or failure("protocol_error", reason, progress.started)
        return await self._conclude(progress, client, failed)

    async def _until_done_or_cancelled(
        self, work: asyncio.Task[None], progress: _Progress
    ) -> UpstreamResult | None:
        waiter = asyncio.create_task(self._cancelled.wait())
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not work.done():
            work.cancel()  # leaving the stream's context closes the upstream connection
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return None
        exc = work.exception()
        if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
            return failure("timeout", type(exc).__name__, progress.started)
        if isinstance(exc, httpx.HTTPError):
            return failure("connect_error", type(exc).__name__, progress.started)
        if isinstance(exc, (ValueError, orjson.JSONDecodeError)):
            return failure("protocol_error", "invalid_stream", progress.started)
        if exc is not None:
            raise exc
        return None

    async def _relay(
        self, channel: Channel, call: UpstreamCall, progress: _Progress, timeout_s: float
    ) -> None:
        async with asyncio.timeout(timeout_s), open_stream(channel, call, timeout_s) as response:
            progress.upstream_id = upstream_id(response)
            if response.status_code >= 400:
                body = await response.aread()
                progress.refused = error_result(response, _json(body), progress.started)
                return
            reader = channel.cost_reader
            async for frame in sse_frames(response):
                reported = reader.event(frame.data)
                if reported is not None:  # the last value the stream reports wins
                    progress.reported_cost_micro = reported
                deltas = progress.decoder.decode(frame)
                for delta in deltas:
                    progress.meter.see(delta)
                out = progress.client.frames(frame, deltas)
                if any(isinstance(d, Done) for d in deltas):
                    progress.clean = True
                    await self._finish(out, progress)
                    return
                failed = next((d for d in deltas if isinstance(d, Failed)), None)
                if failed is not None:
                    progress.error = failed.message
                    return
                if out:
                    await self._chunk(out, progress)

    async def _finish(self, frames: list[SseFrame], progress: _Progress) -> None:
        """A clean end: the last event states the charge, as the ledger will settle it."""
        candidate = self._candidate
        if candidate is None:
            await self._end(frames, ok=True)
            return
        auth = self._env.payload
        charged = auth.charge_for(progress.meter.usage(), candidate.price, candidate.bucket)
        cost = cost_fields(self._req.request_id, charged, candidate.bucket)
        await self._end(
            progress.client.with_cost(frames, cost), ok=True, cost=(charged, candidate.bucket)
        )

    async def _chunk(self, frames: list[SseFrame], progress: _Progress) -> None:
        if progress.ttft_ms is None:
            progress.ttft_ms = ms_since(progress.started)
        chunk = ReplyChunk(request_id=self._req.request_id, seq=self.seq, frames=frames)
        await self._publish(chunk, f"chunk:{self.seq}")
        progress.sent += 1

    async def _end(
        self,
        frames: list[SseFrame],
        *,
        ok: bool,
        code: str | None = None,
        cost: tuple[int, str] | None = None,
    ) -> None:
        end = ReplyStreamEnd(
            request_id=self._req.request_id,
            seq=self.seq,
            frames=frames,
            ok=ok,
            error_code=code,
            cost_micro=None if cost is None else cost[0],
            bucket=None if cost is None else cost[1],
        )
        await self._publish(end, "stream_end")

    async def _publish(self, payload: ReplyChunk | ReplyStreamEnd, salt: str) -> None:
        env = make(payload, trace=self._env.trace, event_id=derived_id(self._env.id, salt))
        self.seq += 1
        await self._sink(
            Outgoing.of(topics.replies_topic(self._req.edge_id), self._req.request_id, env)
        )

    async def _conclude(
        self, progress: _Progress, client: ClientStream, failed: UpstreamResult | None
    ) -> UpstreamResult:
        """The client got part or all of this attempt: it is the served one, whatever happened."""
        outcome, error_class = "ok", None
        if self._cancelled.is_set() and not progress.clean:
            error_class = "client_disconnected"
        elif not progress.clean:
            outcome = failed.outcome if failed is not None else "protocol_error"
            error_class = failed.error_class if failed is not None else "stream_cut"
            if progress.error is not None:
                error_class = "upstream_stream_error"
            message = f"The upstream stream failed ({error_class}) after it had started."
            await self._end(
                client.error(message, "upstream_stream_failed"), ok=False, code=error_class
            )
        return UpstreamResult(
            outcome=outcome,
            status=200,
            body=None,
            usage=progress.meter.usage(),
            latency_ms=ms_since(progress.started),
            error_class=error_class,
            upstream_request_id=progress.upstream_id,
            ttft_ms=progress.ttft_ms,
            delivered=True,
            reported_cost_micro=progress.reported_cost_micro,
        )


def cost_fields(request_id: str, charged: int, bucket: str) -> dict[str, Any]:
    """The charge as every answer states it: decimal in the bucket's unit, and micro-units."""
    return {
        "request_id": request_id,
        "cost": format_micro(charged),
        "cost_micro": charged,
        "bucket": bucket,
    }


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": {"message": raw[:200].decode("utf-8", "replace")}}
