"""``python -m tollway.runtime.provision``: prepare a deployment's Postgres and Kafka, then exit.

Applies every service's SQL migrations and creates the core topics (with their dead-letter
companions) at ``TOLLWAY_TOPIC_PARTITIONS`` partitions. Deployments run it once before the
services (a compose one-shot service, a Kubernetes Job); both steps are idempotent, and each
service would apply its own migrations at start anyway, so running it twice is harmless.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from tollway.events import topics
from tollway.events.logging import configure_logging
from tollway.events.settings import CommonSettings
from tollway.runtime.kafka import ensure_topics
from tollway.runtime.migrations import ALL_SERVICES, migrate

log = structlog.get_logger(__name__)


async def provision(settings: CommonSettings) -> None:
    """Migrate every schema, then create the missing topics."""
    await migrate(settings.database_url, ALL_SERVICES)
    log.info("migrations_done", services=sorted(ALL_SERVICES))
    specs = topics.core_topics(settings.topic_partitions)
    await ensure_topics(settings.kafka_bootstrap_servers, specs)
    log.info("topics_ready", topics=[s.name for s in specs], partitions=settings.topic_partitions)


def main() -> int:
    """Run :func:`provision`; a failure exits non-zero with the reason (the job is retried)."""
    settings = CommonSettings()
    configure_logging("provision", settings.log_level, settings.log_json)
    try:
        asyncio.run(provision(settings))
    except (OSError, KafkaError, asyncpg.PostgresError) as exc:
        log.error("provision_failed", error=repr(exc), hint="is Postgres/Kafka reachable?")  # noqa: TRY400 - the reason is the fact; no traceback needed
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
