"""Every edge's and router's view of limits.breakers, and the webhook signature contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tollway.events.envelope import decode, encode, make
from tollway.events.limits import BreakerReset, BreakerTripped
from tollway.events.webhooks import sign, subscription_secret, verify
from tollway.runtime.breakers import BreakerBoard, request_scopes

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def tripped(scope: str = "key", scope_id: str = "key_1", until: datetime = T0) -> BreakerTripped:
    return BreakerTripped(
        account_id="acct",
        scope=scope,  # type: ignore[arg-type]
        scope_id=scope_id,
        name="tokens_per_minute",
        reason="too fast",
        metric="tokens",
        value=2,
        threshold=1,
        window_seconds=60,
        crossed_at=T0 - timedelta(seconds=1),
        until=until,
        cooldown_seconds=60,
    )


def test_open_until_its_until_then_closed_without_a_reset() -> None:
    board = BreakerBoard()
    board.apply(make(tripped(until=T0)))
    scopes = request_scopes("acct", "key_1", "proj", None)
    found = board.open_for(scopes, T0 - timedelta(seconds=1))
    assert found is not None
    assert found.scope_id == "key_1"
    assert board.open_for(scopes, T0) is None


def test_the_latest_record_per_scope_wins() -> None:
    board = BreakerBoard()
    trip = make(tripped(until=T0 + timedelta(hours=1)))
    board.apply(trip)
    reset = BreakerReset(
        account_id="acct", scope="key", scope_id="key_1", reason="operator", trip_id=trip.id
    )
    board.apply(make(reset))
    assert board.open_for(request_scopes("acct", "key_1", None, None), T0) is None
    board.apply(make(tripped(until=T0 + timedelta(hours=2))))
    assert board.open_for(request_scopes("acct", "key_1", None, None), T0) is not None


def test_any_scope_of_the_call_refuses_it() -> None:
    board = BreakerBoard()
    board.apply(make(tripped("task", "task_9", until=T0 + timedelta(minutes=1))))
    assert board.open_for(request_scopes("acct", "key_1", "proj", "task_9"), T0) is not None
    assert board.open_for(request_scopes("acct", "key_1", "proj", None), T0) is None
    assert board.open_for(request_scopes("acct", "key_2", "proj", "task_8"), T0) is None


def test_breaker_records_round_trip_through_the_wire() -> None:
    env = make(tripped(until=T0))
    assert decode(encode(env)) == env


def test_a_signature_verifies_only_the_signed_body_secret_and_recent_time() -> None:
    secret = subscription_secret("deployment-key", "wh_1")
    header = sign(secret, 1_000, b'{"a":1}')
    assert verify(secret, header, b'{"a":1}', now=1_010)
    assert not verify(secret, header, b'{"a":2}', now=1_010)
    assert not verify(subscription_secret("deployment-key", "wh_2"), header, b'{"a":1}', 1_010)
    assert not verify(secret, header, b'{"a":1}', now=10_000)
    assert not verify(secret, "garbage", b'{"a":1}', now=1_000)
    assert secret != subscription_secret("other-key", "wh_1")
