"""The guard every edge endpoint shares: depth, integer range and NUL in JSON bodies."""

from __future__ import annotations

from typing import Any

import pytest

from tollway.edge import errors
from tollway.edge.inputs import MAX_DEPTH, check_json


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, "x", None, 1.5, True]},
        _nested(MAX_DEPTH),
        {"n": 2**63 - 1, "m": -(2**63)},
    ],
)
def test_ordinary_bodies_pass(value: Any) -> None:
    check_json(value)


@pytest.mark.parametrize(
    "value",
    [
        _nested(MAX_DEPTH + 1),
        {"a": {"b": _nested(MAX_DEPTH)}},
        {"n": 2**63},
        [-(2**63) - 1],
        {"unit": "cr\x00"},
        {"k\x00": 1},
        [["deep", "a\x00b"]],
    ],
)
def test_too_deep_out_of_range_or_nul_is_a_400(value: Any) -> None:
    with pytest.raises(errors.InvalidRequestError):
        check_json(value)


def test_a_prompt_may_hold_nul_but_not_depth_or_huge_numbers() -> None:
    check_json({"messages": [{"content": "a\x00b"}]}, nul_ok=True)
    with pytest.raises(errors.InvalidRequestError):
        check_json({"seed": 2**64}, nul_ok=True)
    with pytest.raises(errors.InvalidRequestError):
        check_json({"metadata": _nested(MAX_DEPTH + 5)}, nul_ok=True)
