"""The researcher's HTTP API as the dashboard reaches it: with the signed-in user's own key.

The researcher runs a user's calls through the gateway with that user's key, so it takes the
key on every route; the dashboard passes the session's key (see ``sessions``) and never shows
it. Where the edge has no ``TOLLWAY_EDGE_RESEARCHER_URL`` the pages say research is not set up.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import httpx

from tollway.edge import errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A progress stream stays open for the whole run.
STREAM_TIMEOUT = httpx.Timeout(None, connect=5.0)


class ResearchClient:
    """Async client of the researcher (or a stand-in that says it is not configured)."""

    def __init__(self, base_url: str) -> None:
        """Reach the researcher at ``base_url`` (empty: research is not configured)."""
        self.configured = bool(base_url)
        self._http = httpx.AsyncClient(base_url=base_url or "http://unset.invalid", timeout=TIMEOUT)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        """One request with the user's key; 503 when the researcher does not answer."""
        if not self.configured:
            raise errors.DependencyDownError("Research is not configured on this gateway.")
        headers = {"authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        try:
            return await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.DependencyDownError(
                f"The researcher did not answer ({type(exc).__name__}); try again shortly."
            ) from None

    async def json(self, method: str, path: str, key: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON answer; the researcher's own error message as the matching gateway error."""
        response = await self.call(method, path, key, **kwargs)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:300]}}
        if response.status_code >= 400:
            message = str((body.get("error") or {}).get("message") or response.reason_phrase)
            cls = errors.STATUS_TO_ERROR.get(response.status_code, errors.DependencyDownError)
            raise cls(message)
        return body

    async def stream(self, path: str, key: str) -> AsyncIterator[bytes]:
        """Relay a server-sent event stream chunk by chunk until the researcher ends it."""
        if not self.configured:
            return
        headers = {"authorization": f"Bearer {key}", "accept": "text/event-stream"}
        with contextlib.suppress(httpx.HTTPError):
            async with self._http.stream(
                "GET", path, headers=headers, timeout=STREAM_TIMEOUT
            ) as response:
                if response.status_code != 200:
                    return
                async for chunk in response.aiter_raw():
                    yield chunk
