"""How every HTTP service is served: uvicorn on uvloop and httptools, no access log.

Every app is wrapped in the same two layers: request latency by route template (Prometheus)
and the caller's trace context (OpenTelemetry), so services need no middleware of their own.
"""

from __future__ import annotations

from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollway.runtime.metrics import HttpMetrics
from tollway.runtime.tracing import HttpTracing

# Longer than the idle timeout of the clients and load balancers in front (httpx: 5 s, common
# load balancers: 60 s). A server that closes an idle connection first races the client reusing
# it: the request then fails with a bare read error, never reaching the app.
KEEP_ALIVE_SECONDS = 75


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, answering a request it cannot parse in JSON, not text/plain.

    A bare CR, LF or NUL in a header never reaches the app: the parser refuses the request.
    The client still gets the API's error shape (Anthropic's on ``/v1/messages``, else
    OpenAI's). ``send_400_response`` is uvicorn's own hook for exactly this answer.
    """

    def send_400_response(self, msg: str) -> None:
        """Write the 400 in JSON and close the connection, as uvicorn does."""
        url = bytes(getattr(self, "url", b"") or b"")
        error: dict[str, Any] = {"type": "invalid_request_error", "message": msg}
        body = (
            {"type": "error", "error": error}
            if url.startswith(b"/v1/messages")
            else {"error": {**error, "param": None, "code": "invalid_http_request"}}
        )
        raw = orjson.dumps(body)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(raw)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + raw)
        self.transport.close()


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT (the app's lifespan opens and closes its resources)."""
    uvicorn.run(
        HttpMetrics(HttpTracing(app)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=JsonErrorsProtocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
