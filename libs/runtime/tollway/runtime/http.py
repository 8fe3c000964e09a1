"""How every HTTP service is served: uvicorn on uvloop and httptools, no access log.

Every app is wrapped in the same two layers: request latency by route template (Prometheus)
and the caller's trace context (OpenTelemetry), so services need no middleware of their own.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from tollway.runtime.metrics import HttpMetrics
from tollway.runtime.tracing import HttpTracing

# Longer than the idle timeout of the clients and load balancers in front (httpx: 5 s, common
# load balancers: 60 s). A server that closes an idle connection first races the client reusing
# it: the request then fails with a bare read error, never reaching the app.
KEEP_ALIVE_SECONDS = 75


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT (the app's lifespan opens and closes its resources)."""
    uvicorn.run(
        HttpMetrics(HttpTracing(app)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
