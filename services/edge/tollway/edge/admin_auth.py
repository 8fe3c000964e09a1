"""The admin token check every ``/admin/v1`` controller depends on."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request  # noqa: TC002 - Litestar resolves the signature at runtime

from tollway.edge import errors


def require_admin(request: Request[Any, Any, Any]) -> None:
    """401 unless the bearer token equals the configured admin token (compared in constant time)."""
    expected: str = request.app.state.admin_token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.AuthenticationError(
            "A valid admin token is required.", code="invalid_admin_token"
        )
