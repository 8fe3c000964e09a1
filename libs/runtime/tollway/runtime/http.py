"""How every HTTP service is served: uvicorn on uvloop and httptools, no access log."""

from __future__ import annotations

from typing import Any

import uvicorn


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT (the app's lifespan opens and closes its resources)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
