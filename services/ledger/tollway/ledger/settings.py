"""Ledger settings (environment: ``TOLLWAY_LEDGER_*`` plus the common ones)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from tollway.events.settings import CommonSettings


class LedgerSettings(CommonSettings):
    """How the ledger consumes and publishes."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_LEDGER_", extra="ignore")

    group_id: str = "ledger"
    batch_size: int = 500
    pool_size: int = 8
    # Ticks carry the ledger's clock into the log; a hold expires when a tick is this long past
    # its deadline (longer than the router's own deadline enforcement, so the router's finish
    # normally wins). The clock ticks only while an open hold is that far past its deadline,
    # every ``tick_seconds`` then; otherwise it looks again when the earliest one will be, when
    # the ledger commits, or after ``clock_heartbeat_seconds``.
    tick_seconds: float = 1.0
    hold_grace_seconds: float = 30.0
    clock_heartbeat_seconds: float = 60.0
    # Reconciliation: a channel-day whose upstream-reported cost (its answers' or its imported
    # invoice's) differs from the booked cost by more than this fraction raises one alert on
    # limits.alerts ("0.01" = 1 %; "0" alerts on any difference).
    recon_drift_threshold: str = "0.01"
    # Test only (crash tests): pause inside the first batch of at least this many records with a
    # finish, after its effects and before its commit, and report to this file (crash_pause.py).
    crash_pause_file: str = ""
    crash_pause_min_records: int = 1
