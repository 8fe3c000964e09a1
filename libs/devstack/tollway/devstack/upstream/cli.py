"""Command line of the demo upstream: ``python -m tollway.devstack.upstream``.

Flags win over the environment (``TOLLWAY_DEMO_CHANNELS``, ``TOLLWAY_DEMO_LATENCY_MS``,
``TOLLWAY_DEMO_STREAM_CHUNK_DELAY_MS``); with neither, every default channel is served.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from typing import TYPE_CHECKING

import structlog
import uvicorn

from tollway.devstack.upstream.app import DEFAULT_CHANNELS, create_app
from tollway.devstack.upstream.wire import UpstreamCutError
from tollway.events.logging import configure_logging
from tollway.runtime.http import run_quietly

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = structlog.get_logger(__name__)

ENV_CHANNELS = "TOLLWAY_DEMO_CHANNELS"
ENV_LATENCY = "TOLLWAY_DEMO_LATENCY_MS"
ENV_CHUNK_DELAY = "TOLLWAY_DEMO_STREAM_CHUNK_DELAY_MS"


class DeliberateCutFilter(logging.Filter):
    """Drops uvicorn's traceback for a ``cut_stream`` fault: the cut is the point, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except those carrying an ``UpstreamCutError``."""
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamCutError))


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse flags, taking defaults from ``environ``."""
    parser = argparse.ArgumentParser(prog="python -m tollway.devstack.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--channels", default=environ.get(ENV_CHANNELS, ""), help="comma-separated")
    parser.add_argument("--latency-ms", type=int, default=int(environ.get(ENV_LATENCY, "0")))
    parser.add_argument(
        "--chunk-delay-ms", type=int, default=int(environ.get(ENV_CHUNK_DELAY, "0"))
    )
    return parser.parse_args(argv)


def channel_list(raw: str) -> list[str]:
    """Channel names from a comma-separated list; the defaults when it is empty."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    return names or list(DEFAULT_CHANNELS)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the demo upstream until interrupted."""
    args = parse_args(argv, os.environ)
    configure_logging("demo-upstream")
    channels = channel_list(args.channels)
    app = create_app(channels, latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop=loop,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    # After Config: it (re)configures uvicorn's loggers.
    logging.getLogger("uvicorn.error").addFilter(DeliberateCutFilter())
    log.info("demo_upstream_starting", host=args.host, port=args.port, channels=channels, loop=loop)
    run_quietly(config)  # no 100 ms tick while idle
