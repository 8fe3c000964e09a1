"""Edge settings (environment: ``TOLLWAY_EDGE_*`` plus the common ones)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollway.events.settings import CommonSettings

BODY_RETENTION_MARGIN_SECONDS = 60.0


def _default_edge_id() -> str:
    return f"edge-{socket.gethostname()}-{os.getpid()}"


class EdgeSettings(CommonSettings):
    """HTTP listener, identity of this instance's reply topic, limits of the client API."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_EDGE_", extra="ignore")

    edge_id: str = Field(default_factory=_default_edge_id)
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str = Field(
        default="",
        validation_alias="TOLLWAY_ADMIN_TOKEN",
        description="Bearer token of the admin API; empty disables it.",
    )
    request_timeout_seconds: float = 60.0
    max_body_bytes: int = 4 * 1024 * 1024
    cache_ttl_seconds: float = 1.0
    pool_size: int = 10
    researcher_url: str = Field(
        default="",
        description="The researcher's HTTP API, reached by the dashboard's research pages with"
        " the signed-in user's key; empty: those pages say research is not configured.",
    )
    ui_secret: str = Field(
        default="",
        description="Signs the dashboard's CSRF tokens; the same on every edge instance. Empty:"
        " derived from the admin token (or random per process when that is empty too).",
    )
    ui_cookie_secure: bool = Field(
        default=False, description="Mark dashboard cookies Secure (set it behind https)."
    )
    ui_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    webhook_signing_key: str = Field(
        default="",
        validation_alias="TOLLWAY_WEBHOOK_SIGNING_KEY",
        description="Derives each alert webhook's secret; empty disables webhooks.",
    )
    # Request bodies on the forever-retained topics are sealed under an epoch key that is deleted
    # once the epoch's requests are past delivery (tollway.runtime.bodies).
    body_key_epoch_seconds: float = Field(
        default=600.0,
        gt=0,
        validation_alias="TOLLWAY_BODY_KEY_EPOCH_SECONDS",
        description="How long one data key seals new request bodies before the next one.",
    )
    body_retention_seconds: float | None = Field(
        default=None,
        ge=0,
        validation_alias="TOLLWAY_BODY_RETENTION_SECONDS",
        description="How long after its epoch ends a data key (and so every body it sealed) is"
        " kept; unset: the request deadline plus a 60 s margin, i.e. not past delivery.",
    )

    @property
    def body_retention(self) -> float:
        """The retention in effect: the setting, or the request deadline plus a margin."""
        if self.body_retention_seconds is not None:
            return self.body_retention_seconds
        return self.request_timeout_seconds + BODY_RETENTION_MARGIN_SECONDS
