"""``tollway alerts tail``: which alerts a --scope filter keeps and how one line reads."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from tollway.cli import build_parser
from tollway.events.envelope import decode, encode, make
from tollway.events.limits import Alert
from tollway.limits.cli import matches, render

ALERT = Alert(
    scope="channel",
    scope_id="openai-direct",
    metric="error_rate",
    value=0.75,
    threshold=0.5,
    window_seconds=60,
    window_end=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    severity="critical",
    message="Channel openai-direct: 6 of 8 attempts failed in 60s.",
    example_request_ids=["req_1"],
)


def test_scope_filters_match_the_scope_or_the_scope_and_id() -> None:
    assert matches(ALERT, [])
    assert matches(ALERT, ["channel"])
    assert matches(ALERT, ["route", "channel:openai-direct"])
    assert not matches(ALERT, ["channel:openai-pool"])
    assert not matches(ALERT, ["route"])


def test_a_line_names_scope_metric_value_threshold_and_examples() -> None:
    line = render(make(ALERT, occurred_at=ALERT.window_end), as_json=False)
    assert "critical" in line
    assert "channel:openai-direct error_rate value=0.75 threshold=0.5 window=60s" in line
    assert line.endswith("e.g. req_1")


def test_json_lines_are_whole_envelopes() -> None:
    env = make(ALERT, occurred_at=ALERT.window_end)
    assert orjson.loads(render(env, as_json=True))["payload"]["metric"] == "error_rate"


def test_the_tollway_command_has_alerts_tail() -> None:
    argv = ["alerts", "tail", "--follow", "--scope", "route"]
    args = build_parser(argv).parse_args(argv)
    assert args.follow
    assert args.scope == ["route"]
    assert callable(args.run)


def test_json_lines_of_a_decoded_alert_keep_its_payload() -> None:
    # The tail reads alerts off the topic: decoded, they are Envelope[Payload].
    env = decode(encode(make(ALERT, occurred_at=ALERT.window_end)))
    payload = orjson.loads(render(env, as_json=True))["payload"]
    assert payload["metric"] == "error_rate"
    assert payload["scope_id"] == "openai-direct"
    assert payload["example_request_ids"] == ["req_1"]
