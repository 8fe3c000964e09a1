"""Limits settings (environment: ``TOLLWAY_LIMITS_*`` plus the common ones)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollway.events.settings import CommonSettings


class LimitsSettings(CommonSettings):
    """Consumer tuning, default thresholds, alert rules and webhook delivery."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_LIMITS_", extra="ignore")

    group_id: str = "limits"
    batch_size: int = 500
    pool_size: int = 6

    # Breakers: defaults for every key, project and task without an operator's own values.
    tokens_per_minute: int | None = 2_000_000
    spend_micro_per_minute: dict[str, int] = Field(default_factory=dict)
    relative_factor: int | None = 10
    relative_min_hours: int = 1
    relative_floor_tokens: int = 50_000
    cooldown_seconds: int = 60
    sweep_seconds: float = 0.5

    # Alerts.
    error_rate: float = 0.5
    error_min_attempts: int = 5  # the router's circuit opens after 5 straight failures
    fallback_rate: float = 0.3
    fallback_min_requests: int = 10
    route_spend_micro_per_minute: dict[str, int] = Field(default_factory=dict)
    mix_shift: float = 0.5
    mix_min_requests: int = 20
    lag_alert_records: int = 10_000
    lag_check_seconds: float = 15.0

    # Webhooks.
    webhook_signing_key: str = Field(default="", validation_alias="TOLLWAY_WEBHOOK_SIGNING_KEY")
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 5.0
    webhook_backoff_seconds: float = 0.5
