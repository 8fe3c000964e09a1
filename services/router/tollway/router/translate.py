"""Request and response bodies translated between the OpenAI and Anthropic dialects.

Pure functions over JSON-shaped dicts. An OpenAI-format client may reach an Anthropic channel
and an Anthropic-format client an OpenAI channel; text, images, tools, tool results, stop
sequences and usage (cached input included) survive the trip. Parameters one dialect has and
the other lacks are dropped rather than sent to an upstream that would refuse them.
"""

from __future__ import annotations

from typing import Any

import orjson

# OpenAI finish_reason <-> Anthropic stop_reason
TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
TO_OPENAI_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
SHARED_SAMPLING = ("temperature", "top_p")


def openai_to_anthropic_request(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat body as an Anthropic Messages body (model set by the caller)."""
    system = [_text(m.get("content")) for m in body["messages"] if m.get("role") in _SYSTEM]
    out: dict[str, Any] = {
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens,
        "messages": merge_turns(
            [_to_anthropic_message(m) for m in body["messages"] if m.get("role") not in _SYSTEM]
        ),
    }
    if system:
        out["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [_to_anthropic_tool(t) for t in body["tools"]]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _to_anthropic_tool_choice(body["tool_choice"])
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    out.update({k: body[k] for k in SHARED_SAMPLING if body.get(k) is not None})
    return out


_SYSTEM = frozenset({"system", "developer"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _to_anthropic_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id", ""),
            "content": _text(message.get("content")),
        }
        return {"role": "user", "content": [block]}
    blocks = _to_anthropic_blocks(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": _json_object(function.get("arguments")),
            }
        )
    return {"role": "assistant" if role == "assistant" else "user", "content": blocks}


def _to_anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if not isinstance(content, list):
        return [{"type": "text", "text": str(content)}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            blocks.append(to_anthropic_image(part.get("image_url") or {}))
        elif "text" in part:
            blocks.append({"type": "text", "text": str(part["text"])})
    return blocks


def to_anthropic_image(image: dict[str, Any]) -> dict[str, Any]:
    """An image URL (a ``data:`` URL or a link) as an Anthropic image block."""
    url = str(image.get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def merge_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic wants alternating roles: consecutive same-role turns become one."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + message["content"]}
        else:
            merged.append(message)
    return merged


def _to_anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out = {
        "name": function.get("name", ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _to_anthropic_tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}


def _json_object(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def anthropic_to_openai_response(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion (model set by the caller)."""
    content = body.get("content") or []
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {
                "name": b.get("name", ""),
                "arguments": orjson.dumps(b.get("input")).decode(),
            },
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": TO_OPENAI_FINISH.get(str(body.get("stop_reason")), "stop"),
    }
    return {
        "id": f"chatcmpl-{body.get('id', '')}",
        "object": "chat.completion",
        "created": 0,
        "choices": [choice],
        "usage": openai_usage_block(body.get("usage") or {}),
    }


def openai_usage_block(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage in OpenAI terms: prompt tokens include the cached and written ones."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = (
        int(usage.get("input_tokens") or 0)
        + cached
        + int(usage.get("cache_creation_input_tokens") or 0)
    )
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def anthropic_to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages body as an OpenAI chat body (model set by the caller)."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in body["messages"]:
        messages.extend(_to_openai_messages(message))
    out: dict[str, Any] = {"messages": messages, "max_tokens": body["max_tokens"]}
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = [_to_openai_tool(t) for t in body["tools"]]
    if body.get("tool_choice"):
        out["tool_choice"] = _to_openai_tool_choice(body["tool_choice"])
    out.update({k: body[k] for k in SHARED_SAMPLING if body.get(k) is not None})
    return out


def _to_openai_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return [{"role": message.get("role", "user"), "content": _text(content)}]
    results = [
        {
            "role": "tool",
            "tool_call_id": b.get("tool_use_id", ""),
            "content": _text(b.get("content")),
        }
        for b in content
        if b.get("type") == "tool_result"
    ]
    parts = [_to_openai_part(b) for b in content if b.get("type") in {"text", "image"}]
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {
                "name": b.get("name", ""),
                "arguments": orjson.dumps(b.get("input")).decode(),
            },
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    out: list[dict[str, Any]] = list(results)
    if parts or calls:
        turn: dict[str, Any] = {"role": message.get("role", "user"), "content": parts or None}
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    return out


def _to_openai_part(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


def _to_openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.get("name", ""),
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _to_openai_tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return {"any": "required", "none": "none"}.get(str(kind), "auto")


def openai_to_anthropic_response(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message (first choice; model set by caller)."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    blocks: list[dict[str, Any]] = []
    if message.get("content"):
        blocks.append({"type": "text", "text": _text(message["content"])})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": _json_object(function.get("arguments")),
            }
        )
    finish = str(choice.get("finish_reason"))
    return {
        "id": f"msg_{body.get('id', '')}",
        "type": "message",
        "role": "assistant",
        "content": blocks,
        "stop_reason": TO_ANTHROPIC_STOP.get(finish, "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage_block(body.get("usage") or {}),
    }


def anthropic_usage_block(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage (chat or Responses names) in Anthropic terms: input excludes cached tokens."""
    if "input_tokens" in usage:
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        details = usage.get("input_tokens_details") or {}
    else:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    return {
        "input_tokens": max(0, int(prompt or 0) - cached),
        "output_tokens": int(completion or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
