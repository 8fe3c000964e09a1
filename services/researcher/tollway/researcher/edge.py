"""The gateway, seen as any client sees it: HTTP with the user's own API key.

The key is only passed through: it lives in memory for the duration of a call and is never
logged or stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tollway.events.pricing import format_micro
from tollway.researcher import errors

FINAL_RECEIPTS = frozenset({"settled", "released", "rejected"})


@dataclass(frozen=True)
class Account:
    """Who the key belongs to and what each bucket has available."""

    account_id: str
    available: dict[str, int]
    # The route types the key may use (None: a gateway that does not say).
    route_types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Reply:
    """One chat call's outcome."""

    status: int
    request_id: str | None
    body: dict[str, Any]

    @property
    def text(self) -> str:
        """The assistant's text, or empty."""
        choices = self.body.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")

    @property
    def error(self) -> str:
        """The gateway's error message, or empty."""
        return str((self.body.get("error") or {}).get("message") or "")


class Edge:
    """Async client of the edge's public API."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.EdgeUnavailableError(
                f"The gateway did not answer ({type(exc).__name__}); try again shortly."
            ) from None
        if response.status_code == 401:
            raise errors.AuthenticationError("The gateway did not accept this API key.")
        return response

    async def account(self, key: str) -> Account:
        """The key's account and its available balance per bucket."""
        body = _json(await self._send("GET", "/v1/balance", key), "GET /v1/balance")
        types = (body.get("key") or {}).get("route_types")
        return Account(
            body["account_id"],
            {b["bucket"]: b["available_micro"] for b in body["buckets"]},
            None if types is None else tuple(str(t) for t in types),
        )

    async def models(self, key: str) -> list[str]:
        """The catalog models this key may call (over a route type it may use)."""
        body = _json(await self._send("GET", "/v1/models", key), "GET /v1/models")
        return [str(m["id"]) for m in body["data"]]

    async def open_task(
        self, key: str, name: str, budgets: dict[str, int], route_types: list[str]
    ) -> str:
        """Open the run's task envelope (fallback only within the primary's route type)."""
        body = {
            "name": name,
            "budgets": [{"bucket": b, "amount": format_micro(a)} for b, a in budgets.items()],
            "route_types": route_types,
            "fallback": "same_route_type",
        }
        response = await self._send("POST", "/v1/tasks", key, json=body)
        _refused(response, "The gateway would not open this run's task envelope")
        return str(_json(response, "POST /v1/tasks")["id"])

    async def close_task(self, key: str, task_id: str) -> None:
        """Close the envelope: further calls are refused and its holds released."""
        _json(await self._send("POST", f"/v1/tasks/{task_id}/close", key), "close task")

    async def task(self, key: str, task_id: str) -> dict[str, Any]:
        """The ledger's receipt of the task."""
        return _json(await self._send("GET", f"/v1/tasks/{task_id}", key), "GET /v1/tasks")

    async def chat(self, key: str, task_id: str, request: dict[str, Any]) -> Reply:
        """One chat completion inside the task."""
        response = await self._send(
            "POST", "/v1/chat/completions", key, json=request, headers={"x-tollway-task": task_id}
        )
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:200]}}
        return Reply(response.status_code, response.headers.get("x-request-id"), body)

    async def receipt(self, key: str, request_id: str) -> dict[str, Any] | None:
        """A request's receipt once final, else None."""
        response = await self._send("GET", f"/v1/receipts/{request_id}", key)
        if response.status_code == 404:
            return None
        body = _json(response, "GET /v1/receipts")
        return body if body.get("status") in FINAL_RECEIPTS else None


def _refused(response: httpx.Response, what: str) -> None:
    """A 4xx from the gateway is the client's to fix: the same kind of error, its message.

    Not a 502 carrying the gateway's JSON inside a message: the key may not use the run's route
    types, a bucket is missing, a budget is too small.
    """
    if not 400 <= response.status_code < 500:
        return
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = f"{what}: {error.get('message') or response.text[:300]}"
    code, param = error.get("code"), None
    if code == "route_type_not_allowed":
        message += " Set 'route_types' to the route types this key may use."
        param = "route_types"
    if response.status_code == 402:
        raise errors.InsufficientBudgetError(message, code=code)
    raise errors.InvalidRequestError(message, param=param, code=code)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise errors.EdgeUnavailableError(
            f"{what} answered {response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body
