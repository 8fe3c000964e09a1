"""Client authentication: the API key from ``Authorization: Bearer`` or ``x-api-key``.

OpenAI SDKs send a bearer token; Anthropic SDKs send ``x-api-key`` (or a bearer token when
given an auth token). Either way only the key's SHA-256 digest is looked up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.edge import errors
from tollway.edge.keys import hash_key
from tollway.events.envelope import utcnow

if TYPE_CHECKING:
    from litestar import Request
    from litestar.datastructures import State

    from tollway.edge.store import EdgeStore, KeyInfo


def presented_key(request: Request[Any, Any, State]) -> str:
    """The key the client sent, or an empty string."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return token or request.headers.get("x-api-key", "").strip()


async def authenticate(request: Request[Any, Any, State]) -> KeyInfo:
    """The key behind the request, or 401 saying what is wrong with it."""
    token = presented_key(request)
    if not token:
        raise errors.AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
            code="missing_api_key",
        )
    return await check_key(request.app.state.store, token)


async def check_key(store: EdgeStore, token: str) -> KeyInfo:
    """The live key ``token`` is, or 401 saying what is wrong with it.

    The dashboard's login goes through this same check.
    """
    key: KeyInfo | None = await store.key_by_hash(hash_key(token))
    if key is None:
        raise errors.AuthenticationError("Incorrect API key provided.")
    if key.revoked_at is not None:
        raise errors.AuthenticationError("This API key has been revoked.", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise errors.AuthenticationError("This API key has expired.", code="expired_api_key")
    return key
