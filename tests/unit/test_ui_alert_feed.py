"""The operator dashboard's alert feed: what it keeps of limits.alerts and in which order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tollway.edge.ui.alerts import AlertFeed
from tollway.events.envelope import encode, make
from tollway.events.limits import Alert, BreakerReset

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _alert(minute: int, channel: str = "openai-direct") -> Alert:
    return Alert(
        scope="channel",
        scope_id=channel,
        metric="error_rate",
        value=0.8,
        threshold=0.5,
        window_seconds=60,
        window_end=T0 + timedelta(minutes=minute),
        severity="critical",
        message=f"Channel {channel}: 4 of 5 attempts failed in 60s.",
    )


def test_the_newest_alerts_come_first_whatever_order_they_were_read_in() -> None:
    feed = AlertFeed("unused:9092")
    for minute in (2, 0, 1):
        feed.apply(make(_alert(minute), occurred_at=T0 + timedelta(minutes=minute)))

    latest = feed.latest()

    assert [a["window_end"] for a in latest] == [
        (T0 + timedelta(minutes=m)).isoformat().replace("+00:00", "Z") for m in (2, 1, 0)
    ]
    assert latest[0]["message"].startswith("Channel openai-direct")


def test_only_alerts_are_kept_and_only_the_newest_few() -> None:
    feed = AlertFeed("unused:9092", keep=3)
    reset = BreakerReset(account_id="a", scope="key", scope_id="k", name="n", reason="operator")
    feed.apply(make(reset))  # not an alert
    for minute in range(5):
        feed.apply(make(_alert(minute, f"ch-{minute}"), occurred_at=T0 + timedelta(minutes=minute)))

    assert [a["scope_id"] for a in feed.latest()] == ["ch-4", "ch-3", "ch-2"]
    assert [a["scope_id"] for a in feed.latest(limit=1)] == ["ch-4"]


def test_undecodable_records_are_skipped() -> None:
    feed = AlertFeed("unused:9092")
    feed._apply_raw(b"not json")
    feed._apply_raw(None)
    feed._apply_raw(encode(make(_alert(0))))

    assert len(feed.latest()) == 1
