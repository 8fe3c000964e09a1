"""Consumers block at the broker: how long a fetch waits, per broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.runtime.kafka import FETCH_WAIT_ENV, consumer_options

if TYPE_CHECKING:
    import pytest


def test_an_idle_consumer_waits_seconds_at_apache_kafka_and_does_not_spin_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FETCH_WAIT_ENV, raising=False)
    options = consumer_options()
    assert options["fetch_max_wait_ms"] >= 5000
    assert options["consumer_timeout_ms"] == options["fetch_max_wait_ms"]


def test_a_broker_that_waits_out_every_fetch_gets_short_fetches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FETCH_WAIT_ENV, "5")  # what the dev stack sets for Tansu
    assert consumer_options() == {"fetch_max_wait_ms": 5, "consumer_timeout_ms": 200}
