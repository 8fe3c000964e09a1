"""Token classes: cache reads and writes, reasoning; each priced, rounded once, held for."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.devstack.upstream import create_app
from tollway.events.pricing import Price, Usage, cost_micro, line_items, worst_case_micro
from tollway.router import anthropic_adapter, openai_adapter, translate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PRICE = Price(
    input=3_000_000,
    output=15_000_000,
    cached_input=300_000,
    cache_write=3_750_000,
    cache_write_1h=6_000_000,
    reasoning=20_000_000,
)
tokens = st.integers(min_value=0, max_value=1_000_000)


def test_each_class_is_priced_apart_and_rounded_up_once() -> None:
    usage = Usage(
        input_tokens=1000,
        cached_input_tokens=400,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
        output_tokens=50,
        reasoning_tokens=30,
    )
    exact = 100 * 3_000_000 + 400 * 300_000 + 300 * 3_750_000 + 200 * 6_000_000
    exact += 20 * 15_000_000 + 30 * 20_000_000
    assert cost_micro(usage, PRICE) == -(-exact // 1_000_000)
    items = {i["class"]: (i["tokens"], i["price_per_1m_micro"]) for i in line_items(usage, PRICE)}
    assert items == {
        "input": (100, 3_000_000),
        "cached_input": (400, 300_000),
        "cache_write": (300, 3_750_000),
        "cache_write_1h": (200, 6_000_000),
        "output": (20, 15_000_000),
        "reasoning": (30, 20_000_000),
    }


def test_unset_class_prices_fall_back_so_old_channels_cost_the_same() -> None:
    plain = Price(input=150_000, output=600_000)
    usage = Usage(input_tokens=90, output_tokens=40, cache_write_tokens=50, reasoning_tokens=25)
    assert cost_micro(usage, plain) == cost_micro(Usage(input_tokens=90, output_tokens=40), plain)
    only_5m = Price(input=1_000_000, output=0, cache_write=2_000_000)
    assert only_5m.per_class()["cache_write_1h"] == 2_000_000


@given(tokens, tokens, tokens, tokens, tokens, tokens)
def test_the_worst_case_covers_any_split_into_classes(
    i: int, o: int, read: int, w5: int, w1: int, r: int
) -> None:
    usage = Usage(
        input_tokens=i,
        output_tokens=o,
        cached_input_tokens=read,
        cache_write_tokens=w5,
        cache_write_1h_tokens=w1,
        reasoning_tokens=r,
    )
    assert cost_micro(usage, PRICE) <= worst_case_micro(i, o, PRICE)
    classes = usage.classes()
    assert sum(v for k, v in classes.items() if k not in {"output", "reasoning"}) == i
    assert classes["output"] + classes["reasoning"] == o
    exact = Fraction(sum(int(x["cost_micro_exact_e6"]) for x in line_items(usage, PRICE)), 10**6)
    assert exact <= cost_micro(usage, PRICE) < exact + 1


def test_old_events_without_the_new_fields_still_decode() -> None:
    assert Usage.model_validate({"input_tokens": 3, "output_tokens": 4}).reasoning_tokens == 0
    assert Price.model_validate({"input": 1, "output": 2}).reasoning is None


def test_openai_usage_reads_cached_and_reasoning_tokens_in_both_apis() -> None:
    chat = {
        "prompt_tokens": 100,
        "completion_tokens": 60,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 40},
    }
    responses = {
        "input_tokens": 100,
        "output_tokens": 60,
        "input_tokens_details": {"cached_tokens": 64},
        "output_tokens_details": {"reasoning_tokens": 40},
    }
    expected = Usage(
        input_tokens=100, output_tokens=60, cached_input_tokens=64, reasoning_tokens=40
    )
    assert openai_adapter.usage_of(chat) == openai_adapter.usage_of(responses) == expected


def test_anthropic_usage_splits_cache_writes_by_ttl() -> None:
    raw = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 70,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 40},
    }
    usage = anthropic_adapter.usage_of(raw)
    assert (usage.input_tokens, usage.cached_input_tokens) == (180, 100)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (30, 40)
    # Without the split, every write is a 5-minute one (cache_control's default ttl).
    del raw["cache_creation"]
    assert anthropic_adapter.usage_of(raw).cache_write_tokens == 70
    # In OpenAI terms, prompt tokens include reads and writes.
    assert translate.openai_usage_block(raw)["prompt_tokens"] == 180


@pytest.fixture
async def upstream() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(["openai-direct", "anthropic-direct"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as http:
        yield http


def _cached_messages(ttl: str | None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    system = [{"type": "text", "text": "policy " * 200, "cache_control": control}]
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "system": system,
        "messages": [{"role": "user", "content": "summarise the policy"}],
    }


@pytest.mark.parametrize("ttl", [None, "1h"])
async def test_demo_anthropic_writes_a_cached_prefix_then_reads_it(
    upstream: httpx.AsyncClient, ttl: str | None
) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = _cached_messages(ttl)
    first = await upstream.post("/anthropic-direct/v1/messages", json=body, headers=headers)
    second = await upstream.post("/anthropic-direct/v1/messages", json=body, headers=headers)
    one, two = first.json()["usage"], second.json()["usage"]
    written = one["cache_creation_input_tokens"]
    assert written > 300
    assert one["cache_read_input_tokens"] == 0
    key = "ephemeral_1h_input_tokens" if ttl == "1h" else "ephemeral_5m_input_tokens"
    assert one["cache_creation"][key] == written
    assert two["cache_read_input_tokens"] == written
    assert two["cache_creation_input_tokens"] == 0
    assert one["input_tokens"] == two["input_tokens"]  # the uncached tail


async def test_demo_openai_reports_reasoning_and_cached_tokens(
    upstream: httpx.AsyncClient,
) -> None:
    headers = {"authorization": "Bearer k"}
    messages = [
        {"role": "system", "content": "rules " * 300},
        {"role": "user", "content": "go"},
    ]
    body = {"model": "o4-mini", "messages": messages, "prompt_cache_key": "t1"}
    first = await upstream.post("/openai-direct/v1/chat/completions", json=body, headers=headers)
    second = await upstream.post("/openai-direct/v1/chat/completions", json=body, headers=headers)
    one, two = first.json()["usage"], second.json()["usage"]
    visible = len(first.json()["choices"][0]["message"]["content"].split(" ")) - 1
    assert one["completion_tokens_details"]["reasoning_tokens"] == 2 * (
        one["completion_tokens"] // 3
    )
    assert visible >= 0
    assert one["prompt_tokens_details"]["cached_tokens"] == 0
    assert two["prompt_tokens_details"]["cached_tokens"] > 300
    plain = {**body, "model": "gpt-4o-mini"}
    del plain["prompt_cache_key"]
    third = await upstream.post("/openai-direct/v1/chat/completions", json=plain, headers=headers)
    assert third.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert third.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
