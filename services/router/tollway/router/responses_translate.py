"""The OpenAI Responses API translated to and from Anthropic Messages (pure, JSON-shaped dicts).

A Responses client reaches an Anthropic channel through these: input items (messages with
text and image parts, function calls and their outputs), instructions, function tools,
``tool_choice``, ``max_output_tokens`` and sampling become a Messages body; the message that
comes back becomes a Response object. What has no Anthropic counterpart (built-in tools, file
inputs, structured output formats) raises :class:`UntranslatableError` naming the field, and the
client gets a 400 saying so. Options that only tune the OpenAI side (``store``, ``reasoning``,
``include``, ``truncation``, ...) are dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.router.openai_adapter import UnsupportedEndpointError
from tollway.router.translate import SHARED_SAMPLING, merge_turns, to_anthropic_image

TO_RESPONSES_STATUS = {"max_tokens": "incomplete"}


class UntranslatableError(UnsupportedEndpointError):
    """A request field the channel's dialect has no counterpart for (a 400 naming it)."""

    def __init__(self, field: str, why: str) -> None:
        """``field`` as the client wrote it (``tools[1].type``), ``why`` in a few words."""
        super().__init__(f"'{field}' cannot be served by an Anthropic channel: {why}.")
        self.field = field


def to_anthropic_request(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A Responses body as an Anthropic Messages body (model set by the caller)."""
    instructions = body.get("instructions")
    system: list[str] = [instructions] if isinstance(instructions, str) and instructions else []
    turns: list[dict[str, Any]] = []
    raw = body.get("input")
    if not isinstance(raw, (str, list)):
        raise UntranslatableError("input", "input must be a string or a list of items")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    for n, item in enumerate(items):
        turn = _turn(item, f"input[{n}]", system)
        if turn is not None:
            turns.append(turn)
    out: dict[str, Any] = {
        "max_tokens": body.get("max_output_tokens") or max_tokens,
        "messages": merge_turns(turns),
    }
    if system:
        out["system"] = "\n\n".join(system)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise UntranslatableError("tools", "tools must be a list")
    if tools:
        out["tools"] = [_tool(t, f"tools[{n}]") for n, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    text = body.get("text")
    text_format = text.get("format") if isinstance(text, dict) else None
    if isinstance(text_format, dict) and text_format.get("type", "text") != "text":
        raise UntranslatableError("text.format", "Messages has no structured output format")
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    out.update({k: body[k] for k in SHARED_SAMPLING if body.get(k) is not None})
    return out


def _turn(item: Any, where: str, system: list[str]) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        raise UntranslatableError(where, "an input item must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role", "user")
        if role in {"system", "developer"}:
            system.append(_plain_text(item.get("content"), f"{where}.content"))
            return None
        blocks = _blocks(item.get("content"), f"{where}.content")
        return {"role": "assistant" if role == "assistant" else "user", "content": blocks}
    if kind == "function_call":
        block = {
            "type": "tool_use",
            "id": item.get("call_id", ""),
            "name": item.get("name", ""),
            "input": _json_object(item.get("arguments")),
        }
        return {"role": "assistant", "content": [block]}
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _plain_text(output, f"{where}.output")
        block = {"type": "tool_result", "tool_use_id": item.get("call_id", ""), "content": text}
        return {"role": "user", "content": [block]}
    if kind == "reasoning":
        return None  # the model's own earlier reasoning: Messages cannot take it back, harmless
    raise UntranslatableError(f"{where}.type", f"input items of type '{kind}' have no equivalent")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise UntranslatableError(where, "content must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in {"input_text", "output_text", "text"}:
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            blocks.append(to_anthropic_image({"url": part["image_url"]}))
        else:
            raise UntranslatableError(f"{where}[{n}].type", f"parts of type '{kind}'")
    return blocks


def _plain_text(content: Any, where: str) -> str:
    return "".join(b["text"] for b in _blocks(content, where) if b["type"] == "text")


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise UntranslatableError(f"{where}.type", f"built-in tool '{kind}'")
    out = {
        "name": tool.get("name", ""),
        "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        out["description"] = tool["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise UntranslatableError("tool_choice.type", f"'{choice.get('type')}'")
        return {"type": "tool", "name": choice.get("name", "")}
    modes = {"auto": "auto", "required": "any", "none": "none"}
    if not isinstance(choice, str) or choice not in modes:
        raise UntranslatableError("tool_choice", f"'{choice}'")
    return {"type": modes[choice]}


def _json_object(raw: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(raw or "{}") if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def from_anthropic_response(
    body: dict[str, Any], request: dict[str, Any], response_id: str
) -> dict[str, Any]:
    """An Anthropic message as a Response object (model set by the caller)."""
    items: list[dict[str, Any]] = []
    text = "".join(b.get("text", "") for b in body.get("content") or [] if b.get("type") == "text")
    if text:
        items.append(message_item(f"msg_{response_id}", text))
    for block in body.get("content") or []:
        if block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            items.append(function_call_item(f"fc_{block.get('id', '')}", block, arguments))
    status = TO_RESPONSES_STATUS.get(str(body.get("stop_reason")), "completed")
    return response_object(
        response_id, request, items, responses_usage(body.get("usage") or {}), status
    )


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item with one text part."""
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, block: dict[str, Any], arguments: str, status: str = "completed"
) -> dict[str, Any]:
    """A function call output item (``block`` carries ``id`` and ``name``)."""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": block.get("id", ""),
        "name": block.get("name", ""),
        "arguments": arguments,
        "status": status,
    }


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage in Responses terms: input tokens include cache reads and writes."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = (
        int(usage.get("input_tokens") or 0)
        + cached
        + int(usage.get("cache_creation_input_tokens") or 0)
    )
    output = int(usage.get("output_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def response_object(
    response_id: str,
    request: dict[str, Any],
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    status: str = "completed",
) -> dict[str, Any]:
    """A Response object as the Responses API returns it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 0,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "temperature": request.get("temperature"),
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "usage": usage,
    }
