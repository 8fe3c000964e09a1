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
    # A backstop: the edge announces every route-tree change on router.config and the router
    # reloads at once; the timer only catches changes made behind the edge's back.
    channel_refresh_seconds: float = 10.0
    # Circuit breaker per channel (see tollway.router.health).
    health_window_seconds: float = 30.0
    health_min_samples: int = 10
    health_error_rate: float = 0.5
    health_consecutive_failures: int = 5
    health_cool_down_seconds: float = 5.0
    # Seed of the weighted choice inside a tier; unset = random (set it for reproducible tests).
    seed: int | None = None
    instance_id: str = ""
