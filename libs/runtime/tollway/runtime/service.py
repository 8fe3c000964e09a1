"""Process plumbing shared by the Kafka-driven services: run tasks until a signal arrives."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

import structlog
import uvloop  # the runtime's uvicorn[standard] brings it

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

log = structlog.get_logger(__name__)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop, as uvicorn serves the HTTP services.

    uvloop's loop costs a fraction of the standard one per socket event and callback.
    """
    uvloop.run(main)


async def run_until_signalled(*coros: Coroutine[Any, Any, None]) -> None:
    """Run ``coros`` as tasks; stop them all on SIGTERM/SIGINT or when any of them fails."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(c) for c in coros]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception()]
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    log.info("service_stopped")
