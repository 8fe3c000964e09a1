"""Process plumbing shared by the Kafka-driven services: run tasks until a signal arrives."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from typing import TYPE_CHECKING, TypeVar

import structlog
import uvloop  # the runtime's uvicorn[standard] brings it

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Generation 0 is collected after this many net allocations (CPython's default: 700). A consumer
# that decodes, folds and encodes a batch of hundreds of events allocates tens of thousands of
# short-lived objects per batch; at the default it runs the collector hundreds of times a second
# and, every few of those, a full collection that walks all the state it keeps in memory.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Fewer cyclic collections for a service that keeps state in memory (call once, at start).

    Everything alive now (modules, classes, settings) is frozen out of the collector's sight,
    and collections run at :data:`GC_THRESHOLDS`. Memory is still freed by reference counting
    as soon as it is unused; only reference cycles wait a little longer.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a service's main coroutine on uvloop, as uvicorn serves the HTTP services.

    uvloop's loop costs a fraction of the standard one per socket event and callback.
    """
    return uvloop.run(main)


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
