"""How every HTTP service is served: uvicorn on uvloop and httptools, no access log.

Every app is wrapped in the same two layers: request latency by route template (Prometheus)
and the caller's trace context (OpenTelemetry), so services need no middleware of their own.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from tollway.runtime.metrics import HttpMetrics
from tollway.runtime.tracing import HttpTracing


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
    )
