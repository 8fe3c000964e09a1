"""An upstream answer without usage is charged from its text, marked estimated, capped."""

from __future__ import annotations

from tollway.events.gateway import RequestReceived
from tollway.events.tokens import input_tokens
from tollway.router.adapters import estimate_usage
from tollway.router.upstream import UpstreamCall

SENT = UpstreamCall("/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})


def _request(max_output_tokens: int = 1000, input_tokens: int = 40) -> RequestReceived:
    # Only the two counts matter to the estimate.
    return RequestReceived.model_construct(
        estimated_input_tokens=input_tokens, max_output_tokens=max_output_tokens
    )


def test_openai_text_and_tool_calls_are_counted_four_characters_a_token() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "x" * 10,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "look", "arguments": '{"q":"ab"}'},
                        }
                    ],
                },
            }
        ]
    }
    usage = estimate_usage(_request(), body, SENT)
    # 10 text + 4 name + 10 arguments = 24 characters -> 6 tokens; ids, roles, types not counted
    assert (usage.output_tokens, usage.estimated) == (6, True)
    # The input side is the request actually sent, counted like the hold counts it.
    assert usage.input_tokens == input_tokens("chat", SENT.payload) != 40


def test_anthropic_text_and_tool_input_are_counted() -> None:
    body = {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "y" * 7},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}},
        ],
    }
    usage = estimate_usage(_request(), body, SENT)
    # 7 text + 4 name + len('{"q":1}') = 7 -> 18 characters -> 5 tokens
    assert usage.output_tokens == 5
    assert usage.estimated


def test_the_estimate_never_exceeds_max_tokens() -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "z" * 10_000}}]}
    assert estimate_usage(_request(max_output_tokens=16), body, SENT).output_tokens == 16


def test_the_input_estimate_counts_the_translated_request_not_the_clients() -> None:
    long_system = {"system": "s" * 3000, "messages": [{"role": "user", "content": "hi"}]}
    sent = UpstreamCall("/messages", {**long_system, "max_tokens": 5})
    usage = estimate_usage(_request(input_tokens=1), {"content": []}, sent)
    assert usage.input_tokens == input_tokens("messages", sent.payload) > 1000
