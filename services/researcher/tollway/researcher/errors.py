"""The researcher's errors, each mapped to an HTTP status once, in OpenAI's error shape.

ResearchError
├── InvalidRequestError      400 invalid_request_error
├── AuthenticationError      401 authentication_error (the edge refused the key)
├── InsufficientBudgetError  402 insufficient_quota    (the estimate does not fit)
├── NotFoundError            404 not_found_error
├── ConflictError            409 invalid_request_error (the run is already finished)
└── EdgeUnavailableError     502 api_error             (the gateway did not answer)
"""

from __future__ import annotations

from typing import Any, ClassVar


class ResearchError(Exception):
    """Base: a message for the client, and where it points."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def body(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(ResearchError):
    """The request itself is wrong."""

    status = 400
    kind = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationError(ResearchError):
    """No key, or the gateway did not accept it."""

    status = 401
    kind = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientBudgetError(ResearchError):
    """The balance (or the cap) cannot cover the run's upper estimate."""

    status = 402
    kind = "insufficient_quota"
    default_code = "insufficient_balance"


class NotFoundError(ResearchError):
    """No such run for this account."""

    status = 404
    kind = "not_found_error"
    default_code = "run_not_found"


class ConflictError(ResearchError):
    """The run is not in a state that allows this."""

    status = 409
    kind = "invalid_request_error"
    default_code = "run_finished"


class EdgeUnavailableError(ResearchError):
    """The gateway did not answer as expected."""

    status = 502
    kind = "api_error"
    default_code = "gateway_unavailable"
