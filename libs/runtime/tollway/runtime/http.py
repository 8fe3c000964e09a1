"""How every HTTP service is served: uvicorn on uvloop and httptools, no access log.

Every app is wrapped in the same two layers: request latency by route template (Prometheus)
and the caller's trace context (OpenTelemetry), so services need no middleware of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollway.runtime.metrics import HttpMetrics
from tollway.runtime.tracing import HttpTracing

if TYPE_CHECKING:
    from types import FrameType

# Longer than the idle timeout of the clients and load balancers in front (httpx: 5 s, common
# load balancers: 60 s). A server that closes an idle connection first races the client reusing
# it: the request then fails with a bare read error, never reaching the app.
KEEP_ALIVE_SECONDS = 75
# uvicorn's exit status when the server never started (``uvicorn.config.STARTUP_FAILURE``).
STARTUP_FAILURE = 3


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


class QuietServer(uvicorn.Server):
    """uvicorn's server without its ten wake-ups a second while nobody calls it.

    uvicorn's main loop sleeps 100 ms at a time to notice a shutdown request, and refreshes its
    ``date`` header every tenth turn. Here the loop turns once a second (the header's own
    resolution) and a signal wakes it at once, so an idle service costs nothing in between.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        """A server for ``config``; the wake-up is bound to the loop it runs on."""
        super().__init__(config)
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        """Tick once a second (date header, exit check) until told to exit."""
        self._exit, self._loop = asyncio.Event(), asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)
            # on_tick refreshes the date header when the counter is a multiple of ten.
            counter = (counter + 10) % 864_000

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark the server for exit, as uvicorn does, and wake its main loop.

        A signal handler may not touch an asyncio event directly, hence the thread-safe call.
        """
        super().handle_exit(sig, frame)
        if self._loop is not None and self._exit is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._exit.set)


def run_quietly(config: uvicorn.Config) -> None:
    """Serve ``config`` with :class:`QuietServer` until SIGTERM/SIGINT, as ``uvicorn.run`` does.

    Like it, exits with uvicorn's startup-failure status when the server never started (the
    port was taken, the app's lifespan failed).
    """
    server = QuietServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT (the app's lifespan opens and closes its resources)."""
    config = uvicorn.Config(
        HttpMetrics(HttpTracing(app)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=JsonErrorsProtocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    run_quietly(config)
