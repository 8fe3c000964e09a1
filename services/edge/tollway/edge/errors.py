"""The edge's error tree and its one mapping to HTTP, in both client dialects.

Status, OpenAI ``type``/``code``, and the Anthropic ``type`` used on ``/v1/messages``:

    GatewayError                          OpenAI type              Anthropic type
    ├── InvalidRequestError      400      invalid_request_error    invalid_request_error
    ├── AuthenticationError      401      authentication_error     authentication_error
    ├── InsufficientFundsError   402      insufficient_quota       billing_error
    ├── PermissionDeniedError    403      permission_error         permission_error
    ├── NotFoundError            404      not_found_error          not_found_error
    ├── ConflictError            409      invalid_request_error    invalid_request_error
    ├── PayloadTooLargeError     413      invalid_request_error    request_too_large
    ├── RateLimitedError         429      rate_limit_error         rate_limit_error (retry-after)
    ├── UpstreamFailedError      502      upstream_error           api_error
    ├── DependencyDownError      503      service_unavailable      overloaded_error (fail closed)
    └── DeadlineExceededError    504      timeout                  timeout_error

Controllers raise; they never build error responses themselves.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base: a client-facing failure with an HTTP status and an OpenAI error type."""

    status = 500
    type = "api_error"
    anthropic_type = "api_error"
    default_code = "internal_error"

    def __init__(  # noqa: PLR0913 - every member of the error body, keyword-only
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        limit: str | None = None,
    ) -> None:
        """Describe the failure for the client; never include secrets or prompt text.

        ``details`` are extra members of the error object (a 409's ``original`` request).
        ``limit`` names the limit that refused the request (``bucket:credit``,
        ``budget:<name>``, ``task:<id>``); it is added to the body for machines to read.
        """
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}
        self.details = details or {}
        self.limit = limit

    def openai_body(self) -> dict[str, Any]:
        """The OpenAI error shape."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": {**error, **self.details, **self._limit_fields()}}

    def anthropic_body(self) -> dict[str, Any]:
        """The Anthropic error shape."""
        error = {"type": self.anthropic_type, "message": self.message}
        return {"type": "error", "error": {**error, **self.details, **self._limit_fields()}}

    def _limit_fields(self) -> dict[str, Any]:
        # ``limit_source`` as OpenRouter names it (also under ``metadata``, where it puts it).
        if self.limit is None:
            return {}
        source = self.limit.partition(":")[0]
        return {"limit": self.limit, "limit_source": source, "metadata": {"limit_source": source}}


class InvalidRequestError(GatewayError):
    """Malformed JSON, a wrong type, a missing or absurd parameter."""

    status, type, default_code = 400, "invalid_request_error", "invalid_request"
    anthropic_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    """Missing, unknown, revoked or expired key."""

    status, type, default_code = 401, "authentication_error", "invalid_api_key"
    anthropic_type = "authentication_error"


class InsufficientFundsError(GatewayError):
    """The bucket or a budget cannot cover the request."""

    status, type, default_code = 402, "insufficient_quota", "insufficient_balance"
    anthropic_type = "billing_error"


class PermissionDeniedError(GatewayError):
    """The key may not call this model or route type."""

    status, type, default_code = 403, "permission_error", "model_not_allowed"
    anthropic_type = "permission_error"


class NotFoundError(GatewayError):
    """Unknown model, receipt or route (another account's data is 'not found' too)."""

    status, type, default_code = 404, "not_found_error", "not_found"
    anthropic_type = "not_found_error"


class ConflictError(GatewayError):
    """The id or name is taken (an account, a project name, a channel)."""

    status, type, default_code = 409, "invalid_request_error", "conflict"
    anthropic_type = "invalid_request_error"


class PayloadTooLargeError(GatewayError):
    """The body exceeds the configured limit."""

    status, type, default_code = 413, "invalid_request_error", "payload_too_large"
    anthropic_type = "request_too_large"


class RateLimitedError(GatewayError):
    """A breaker or rate limit refused the call."""

    status, type, default_code = 429, "rate_limit_error", "rate_limited"
    anthropic_type = "rate_limit_error"


class UpstreamFailedError(GatewayError):
    """Every route failed."""

    status, type, default_code = 502, "upstream_error", "upstream_failed"
    anthropic_type = "api_error"


class DependencyDownError(GatewayError):
    """Kafka or the ledger is unavailable: refuse rather than serve unbilled."""

    status, type, default_code = 503, "service_unavailable", "dependency_unavailable"
    anthropic_type = "overloaded_error"


class DeadlineExceededError(GatewayError):
    """No answer before the request's deadline."""

    status, type, default_code = 504, "timeout", "deadline_exceeded"
    anthropic_type = "timeout_error"


STATUS_TO_ERROR: dict[int, type[GatewayError]] = {
    cls.status: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        InsufficientFundsError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        PayloadTooLargeError,
        RateLimitedError,
        UpstreamFailedError,
        DependencyDownError,
        DeadlineExceededError,
    )
}


ANTHROPIC_ROUTES = ("/v1/messages",)


def body_for(error: GatewayError, path: str) -> dict[str, Any]:
    """The error in the dialect of the route the client called."""
    if path.rstrip("/").startswith(ANTHROPIC_ROUTES):
        return error.anthropic_body()
    return error.openai_body()
