"""Settings every service shares, read from the environment.

``TOLLWAY_*`` and the standard ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``; services subclass
these and read them in ``app.py`` only.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Connection and logging settings common to all services."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", extra="ignore")

    # No defaults: a service (or CLI) that guessed an address could act on another stack on the
    # same machine. Deployments and `make dev` set both.
    database_url: str = Field(
        validation_alias=AliasChoices("DATABASE_URL", "TOLLWAY_DATABASE_URL"),
    )
    kafka_bootstrap_servers: str = Field(
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "TOLLWAY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    topic_partitions: int = 4
    log_level: str = "info"
    log_json: bool = True
    # Prometheus /metrics port; unset (the embedded stack's default) serves no metrics. One name
    # for every service (subclasses change the prefix of the other fields).
    metrics_port: int | None = Field(
        default=None, validation_alias=AliasChoices("TOLLWAY_METRICS_PORT")
    )
    # Channel secrets at rest (tollway.runtime.sealing): ``key_id:base64-key,...``, first seals.
    secret_keys: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("TOLLWAY_SECRET_KEYS")
    )
