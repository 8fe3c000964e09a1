"""The researcher's settings (read once, in app.py)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollway.events.settings import CommonSettings


class ResearcherSettings(CommonSettings):
    """Where the researcher listens, which edge it calls, and its duration estimate."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_RESEARCHER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8790
    edge_url: str  # no default: the stack or the deployment names the edge
    edge_timeout_seconds: float = 60.0
    seconds_per_call: float = 0.5
    data_dir: str | None = None
    # The texts a run's calls exchanged (each answer is fed back into later prompts) are needed
    # until its report is written; then they are dropped, after this many seconds (0: at once).
    prompt_retention_seconds: float = Field(default=0.0, ge=0)
