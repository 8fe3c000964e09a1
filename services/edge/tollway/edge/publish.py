"""Publishing a client's command to gw.requests, failing closed when the log does not confirm."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tollway.edge import errors
from tollway.events import topics
from tollway.events.envelope import Envelope, encode
from tollway.runtime.tracing import headers_out

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

CONFIRM_SECONDS = 5


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
