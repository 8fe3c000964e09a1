"""Publishing a client's command to gw.requests, failing closed when the log does not confirm."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from tollway.edge import errors
from tollway.events import topics
from tollway.events.envelope import Envelope, Trace, encode, make
from tollway.events.gateway import RequestCancelled
from tollway.events.ids import derived_id
from tollway.runtime.tracing import headers_out

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

CONFIRM_SECONDS = 5
log = structlog.get_logger(__name__)


async def publish_request(
    producer: AIOKafkaProducer, account_id: str, envelope: Envelope[Any], next_step: str
) -> None:
    """Send ``envelope`` keyed by account and wait for the broker; else 503 with ``next_step``.

    A timeout is ambiguous (the broker may have the event), so the message never claims that
    nothing happened: it says how to find out or how to retry safely.
    """
    try:
        await asyncio.wait_for(
            producer.send_and_wait(
                topics.REQUESTS,
                value=encode(envelope),
                key=account_id.encode(),
                headers=list(headers_out()),
            ),
            timeout=CONFIRM_SECONDS,
        )
    except Exception as exc:
        raise errors.DependencyDownError(
            f"The event log did not confirm the request within {CONFIRM_SECONDS}s. {next_step}"
        ) from exc


async def publish_cancel(producer: AIOKafkaProducer, request_id: str, account_id: str) -> None:
    """Tell every router that the client of ``request_id`` went away (best effort).

    A lost cancel costs at most the rest of the stream: the router settles what it streamed.
    """
    envelope = make(
        RequestCancelled(request_id=request_id),
        trace=Trace(request_id=request_id),
        event_id=derived_id(request_id, "cancel"),
    )
    try:
        await producer.send_and_wait(
            topics.CANCELS, value=encode(envelope), key=request_id.encode()
        )
    except Exception as exc:  # noqa: BLE001 - logged; the stream still settles what it sent
        log.warning(
            "cancel_not_published",
            request_id=request_id,
            account=account_id,
            error=type(exc).__name__,
        )
