"""The cost an upstream reports (tollway.router.reported_cost): exact, by path, refusals ignored."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tollway.events.recon import CostPathError, cost_path_segments
from tollway.router import reported_cost
from tollway.router.reported_cost import RefusedCostError, read, to_micro

DEFAULT = ("usage", "cost")


def _body(cost_text: str, path: str = "usage") -> str:
    return f'{{"id":"x","{path}":{{"prompt_tokens":3,"cost":{cost_text}}}}}'


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0.1", 100_000),  # a float would give 100000.00000000001 and round up to 100001
        ("0.3", 300_000),
        ("0.000123", 123),
        ("0.0000125", 13),  # below a micro-unit: rounded up, like the booked cost
        ("1e-7", 1),
        ("0", 0),
        ("0.0", 0),
        ("2", 2_000_000),
        ("12.345678", 12_345_678),
        ("1.0000001", 1_000_001),
        ("3.255E-5", 33),
        ("999999.999999", 999_999_999_999),
    ],
)
def test_a_reported_cost_is_read_exactly_and_rounded_up_once(text: str, micro: int) -> None:
    assert read(_body(text), DEFAULT) == micro
    assert read(_body(text).encode(), DEFAULT) == micro


def test_the_value_never_passes_through_a_float() -> None:
    assert to_micro(Decimal("0.1")) == 100_000
    # Many digits a float cannot hold: exact, then rounded up at the seventh decimal.
    assert read(_body("0.10000000000000000001"), DEFAULT) == 100_001


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-0.5", "negative"),
        ("NaN", "not_finite"),
        ("Infinity", "not_finite"),
        ("-Infinity", "not_finite"),
        ('"0.5"', "not_a_number"),
        ("true", "not_a_number"),
        ("{}", "not_a_number"),
        ("[1]", "not_a_number"),
        ("1000000.000001", "too_large"),
        ("1e400", "too_large"),
        ("9" * 5000, "not_json"),  # longer than Python converts: refused, not a crash
    ],
)
def test_an_unusable_value_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(RefusedCostError) as raised:
        read(_body(text), DEFAULT)
    assert raised.value.reason == reason


def test_a_refusal_becomes_no_cost_never_an_error() -> None:
    reader = reported_cost.reader("ch-refusal", None)
    assert reader.body(_body("-1")) is None
    assert reader.body(b"{not json") is None
    assert reader.body(_body("0.25")) == 250_000


def test_no_cost_reported_is_none() -> None:
    assert read('{"usage":{"prompt_tokens":3}}', DEFAULT) is None
    assert read('{"usage":null,"cost":1}', DEFAULT) is None
    assert read("{}", DEFAULT) is None
    assert read('{"usage":{"cost":null}}', DEFAULT) is None


def test_a_channel_path_names_another_place() -> None:
    assert read('{"x_cost":{"usd":0.5}}', cost_path_segments("x_cost.usd")) == 500_000
    total = '{"usage":{"total_cost":0.002,"cost":9}}'
    assert read(total, cost_path_segments("usage.total_cost")) == 2_000
    assert reported_cost.reader("ch-a", "x_cost.usd").body('{"x_cost":{"usd":1}}') == 1_000_000
    assert reported_cost.reader("ch-b", None).body(_body("1")) == 1_000_000
    assert reported_cost.reader("ch-c", "").body(_body("1")) == 1_000_000


@pytest.mark.parametrize(
    "path",
    ["", ".", "usage.", ".cost", "usage..cost", "usage[0]", "a.b c", "é", "a" * 65, "a." * 8 + "a"],
)
def test_a_path_is_plain_dotted_keys(path: str) -> None:
    with pytest.raises(CostPathError):
        cost_path_segments(path)


def test_streamed_events_carry_the_cost_where_each_dialect_puts_it() -> None:
    reader = reported_cost.reader("ch-stream", None)
    chunk = {"choices": [], "usage": {"prompt_tokens": 3, "cost": Decimal("0.0042")}}
    assert reader.event(_dumps(chunk)) == 4_200
    start = {"type": "message_start", "message": {"usage": {"cost": 0.5}}}
    assert reader.event(orjson.dumps(start).decode()) == 500_000
    delta = {"type": "message_delta", "usage": {"output_tokens": 9, "cost": 0.75}}
    assert reader.event(orjson.dumps(delta).decode()) == 750_000
    done = {"type": "response.completed", "response": {"usage": {"cost": 1.5}}}
    assert reader.event(orjson.dumps(done).decode()) == 1_500_000
    assert reader.event('{"choices":[{"delta":{"content":"cost"}}]}') is None
    assert reader.event("[DONE]") is None


def _dumps(value: object) -> str:
    return orjson.dumps(value, default=lambda d: orjson.Fragment(str(d).encode())).decode()
