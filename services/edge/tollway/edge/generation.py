"""``GET /api/v1/generation?id=<request id>``: a receipt in OpenRouter's generation shape.

For clients and tools that already read OpenRouter's generation stats: model, provider, tokens
by class, total cost, the upstream's id and every attempt (``provider_responses``). Costs are
numbers in the bucket's unit (OpenRouter's convention); the exact integer micro-units are
beside them (``total_cost_micro``), as is the bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, get

from tollway.edge import errors
from tollway.edge.auth import authenticate
from tollway.events.pricing import format_micro

if TYPE_CHECKING:
    from litestar.datastructures import State

API_TYPES = {
    "chat": "completions",
    "messages": "messages",
    "responses": "responses",
    "embeddings": "embeddings",
}


@get("/api/v1/generation")
async def generation(request: Request[Any, Any, State], id: str | None = None) -> dict[str, Any]:  # noqa: A002 - OpenRouter's parameter name
    """One request's receipt in OpenRouter's generation shape (the key's own account only)."""
    key = await authenticate(request)
    if not id:
        raise errors.InvalidRequestError(
            "The query parameter 'id' (a request id) is required.", param="id"
        )
    receipt = await request.app.state.store.receipt(id, key.account_id)
    if receipt is None:
        raise errors.NotFoundError(
            f"No generation '{id}' for this account (yet).", code="generation_not_found"
        )
    return {"data": generation_view(receipt)}


def generation_view(receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt's story as OpenRouter tells a generation."""
    attempts: list[dict[str, Any]] = receipt.get("attempts") or []
    served = next((a for a in attempts if a.get("channel") == receipt.get("served_by")), None)
    served = served or (attempts[-1] if attempts and receipt.get("status") == "settled" else None)
    usage: dict[str, Any] = receipt.get("usage") or {}
    charged = int(receipt.get("charged_micro") or 0)
    cost = float(format_micro(charged))
    return {
        "id": receipt["request_id"],
        "upstream_id": served.get("upstream_request_id") if served else None,
        "total_cost": cost,
        "total_cost_micro": charged,
        "usage": cost,
        "bucket": receipt.get("bucket"),
        "unit": receipt.get("unit"),
        "cache_discount": None,
        "upstream_inference_cost": None,
        "created_at": receipt.get("created_at"),
        "model": receipt.get("requested_model"),
        "api_type": API_TYPES.get(str(receipt.get("endpoint")), receipt.get("endpoint")),
        "streamed": bool(receipt.get("stream")),
        "cancelled": bool(served and served.get("error_class") == "client_disconnected"),
        "provider_name": served.get("brand") if served else None,
        "latency": sum(int(a.get("latency_ms") or 0) for a in attempts),
        "generation_time": served.get("latency_ms") if served else None,
        "finish_reason": None,
        "native_finish_reason": None,
        "tokens_prompt": usage.get("input_tokens", 0),
        "tokens_completion": usage.get("output_tokens", 0),
        "native_tokens_prompt": usage.get("input_tokens", 0),
        "native_tokens_completion": usage.get("output_tokens", 0),
        "native_tokens_reasoning": usage.get("reasoning_tokens", 0),
        "native_tokens_cached": usage.get("cached_input_tokens", 0),
        "native_tokens_cache_write": usage.get("cache_write_tokens", 0)
        + usage.get("cache_write_1h_tokens", 0),
        "usage_estimated": bool(receipt.get("usage_estimated")),
        "token_classes": receipt.get("token_classes") or [],
        "is_byok": False,
        "status": receipt.get("status"),
        "limit": receipt.get("limit"),
        "provider_responses": [_provider_response(a) for a in attempts],
    }


def _provider_response(attempt: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": attempt.get("upstream_request_id"),
        "endpoint_id": attempt.get("channel_id"),
        "model_permaslug": attempt.get("upstream_model"),
        "provider_name": attempt.get("brand"),
        "channel": attempt.get("channel"),
        "route_type": attempt.get("route_type"),
        "bucket": attempt.get("bucket"),
        "status": attempt.get("status"),
        "outcome": attempt.get("outcome"),
        "error_class": attempt.get("error_class"),
        "latency": attempt.get("latency_ms"),
        "cost_micro": attempt.get("cost_micro"),
        "is_byok": False,
    }
