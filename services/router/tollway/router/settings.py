"""Router settings (environment: ``TOLLWAY_ROUTER_*`` plus the common ones)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from tollway.events.settings import CommonSettings


class RouterSettings(CommonSettings):
    """How the router consumes, retries and calls upstreams."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_ROUTER_", extra="ignore")

    group_id: str = "router"
    max_in_flight: int = 512
    attempts_per_channel: int = 2
    backoff_ms: int = 50
    channel_refresh_seconds: float = 2.0
