"""The edge's error tree and its one mapping to HTTP: status, OpenAI error ``type`` and ``code``.

    GatewayError
    ├── InvalidRequestError      400 invalid_request_error
    ├── AuthenticationError      401 authentication_error
    ├── InsufficientFundsError   402 insufficient_quota
    ├── PermissionDeniedError    403 permission_error
    ├── NotFoundError            404 not_found_error
    ├── PayloadTooLargeError     413 invalid_request_error
    ├── RateLimitedError         429 rate_limit_error (retry-after)
    ├── UpstreamFailedError      502 upstream_error
    ├── DependencyDownError      503 service_unavailable (fail closed: never served unbilled)
    └── DeadlineExceededError    504 timeout

Controllers raise; they never build error responses themselves.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base: a client-facing failure with an HTTP status and an OpenAI error type."""

    status = 500
    type = "api_error"
    default_code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the failure for the client; never include secrets or prompt text."""
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}

    def openai_body(self) -> dict[str, Any]:
        """The OpenAI error shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    """Malformed JSON, a wrong type, a missing or absurd parameter."""

    status, type, default_code = 400, "invalid_request_error", "invalid_request"


class AuthenticationError(GatewayError):
    """Missing, unknown, revoked or expired key."""

    status, type, default_code = 401, "authentication_error", "invalid_api_key"


class InsufficientFundsError(GatewayError):
    """The bucket or a budget cannot cover the request."""

    status, type, default_code = 402, "insufficient_quota", "insufficient_balance"


class PermissionDeniedError(GatewayError):
    """The key may not call this model or route type."""

    status, type, default_code = 403, "permission_error", "model_not_allowed"


class NotFoundError(GatewayError):
    """Unknown model, receipt or route (another account's data is 'not found' too)."""

    status, type, default_code = 404, "not_found_error", "not_found"


class PayloadTooLargeError(GatewayError):
    """The body exceeds the configured limit."""

    status, type, default_code = 413, "invalid_request_error", "payload_too_large"


class RateLimitedError(GatewayError):
    """A breaker or rate limit refused the call."""

    status, type, default_code = 429, "rate_limit_error", "rate_limited"


class UpstreamFailedError(GatewayError):
    """Every route failed."""

    status, type, default_code = 502, "upstream_error", "upstream_failed"


class DependencyDownError(GatewayError):
    """Kafka or the ledger is unavailable: refuse rather than serve unbilled."""

    status, type, default_code = 503, "service_unavailable", "dependency_unavailable"


class DeadlineExceededError(GatewayError):
    """No answer before the request's deadline."""

    status, type, default_code = 504, "timeout", "deadline_exceeded"


STATUS_TO_ERROR: dict[int, type[GatewayError]] = {
    cls.status: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        InsufficientFundsError,
        PermissionDeniedError,
        NotFoundError,
        PayloadTooLargeError,
        RateLimitedError,
        UpstreamFailedError,
        DependencyDownError,
        DeadlineExceededError,
    )
}
