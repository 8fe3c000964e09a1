"""Consumer lag becomes an alert on limits.alerts, read back with ``tollway alerts tail``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import wait_for
from tollway.limits.lag import check_once, group_lag

pytestmark = pytest.mark.integration


async def _check(stack: Any, threshold: int) -> tuple[int, int]:
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=2)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        lag = await group_lag(pool, consumer, "ledger", "ledger", ("gw.requests", "gw.usage"))
        return lag, await check_once(pool, consumer, threshold, window=300)
    finally:
        await consumer.stop()
        await pool.close()


def _tail(stack: Any) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollway.cli",
            "alerts",
            "tail",
            "--scope",
            "consumer:ledger",
            "--bootstrap",
            stack.bootstrap,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.decode()


def test_a_group_behind_its_threshold_raises_one_lag_alert(stack) -> None:
    lag, raised = asyncio.run(_check(stack, threshold=-1))

    assert lag >= 0
    assert raised == 2  # the ledger and the limits service, each once
    # The check ran in this process, not in the limits service: its alert rows reach the topic
    # through the service relay's sweep of rows other processes left (every 30 s).
    out = wait_for(
        lambda: (o := _tail(stack)) and "consumer_lag_records" in o and o,
        timeout=90,
        what="the lag alert on limits.alerts",
    )
    assert "consumer:ledger consumer_lag_records" in out
    assert asyncio.run(_check(stack, threshold=-1))[1] == 0  # once per window
