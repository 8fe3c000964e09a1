"""Secrets and prompts at rest: a known channel secret and a known prompt, sent through the public
API, are found nowhere the system keeps things: not in a full dump of the database, not in any
log file, not in the raw bytes of the forever-retained topics (the prompt travels there sealed,
and once its epoch key is deleted after delivery, it cannot be recovered), while a replay of
those topics still reproduces every balance and receipt.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import wait_for
from tests.e2e.route_kit import admin_client, new_channel, new_model
from tests.e2e.ui_kit import login_operator, ui_client
from tests.integration import ledger_io as io
from tollway.devstack.postgres import find_bindir
from tollway.events import topics
from tollway.events.envelope import decode
from tollway.events.gateway import RequestReceived
from tollway.runtime.bodies import DataKey, open_body
from tollway.runtime.kafka import partitions_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollway.devstack.seed import Tenant
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

FOREVER = [t.name for t in topics.core_topics() if t.retention_ms == topics.FOREVER_MS]
TERMINAL = {"settled", "released", "rejected", "expired"}


async def _read_all(bootstrap: str, names: list[str]) -> dict[str, list[bytes]]:
    """Every record's raw value on ``names``, from offset 0 to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = []
        for name in names:
            tps += await partitions_of(consumer, name)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[str, list[bytes]] = {name: [] for name in names}
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, messages in batch.items():
                    out[tp.topic].extend(m.value or b"" for m in messages)
        return out
    finally:
        await consumer.stop()


def _sealed_request(stack: Stack, request_id: str) -> RequestReceived:
    values = asyncio.run(_read_all(stack.bootstrap, [topics.REQUESTS]))[topics.REQUESTS]
    for value in values:
        if request_id.encode() not in value:
            continue  # another request, or a poison record another test planted on the topic
        payload = decode(value).payload
        if isinstance(payload, RequestReceived) and payload.request_id == request_id:
            return payload
    pytest.fail(f"request {request_id} is not on {topics.REQUESTS}")


def _pg_dump(stack: Stack) -> bytes:
    done = subprocess.run(
        [str(find_bindir() / "pg_dump"), "--data-only", "--dbname", stack.dsn],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def _log_files(stack: Stack) -> list[Any]:
    files = sorted(stack.log_dir.glob("*.log"))
    if stack.postgres_log is not None and stack.postgres_log.exists():
        files.append(stack.postgres_log)
    return files


def _verify_replay(stack: Stack) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", "verify_secrets"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _never_shown(stack: Stack, secrets: list[str], channel: str) -> None:
    """No answer of the admin API or the operator dashboard contains a channel secret."""
    with admin_client(stack) as admin:
        pages = [
            admin.get("/route-tree").text,
            admin.get("/audit", params={"target": channel}).text,
            admin.get(f"/channels/{channel}/health").text,
        ]
    with ui_client(stack) as ui:
        login_operator(ui)
        pages += [ui.get("/ui/admin/routes").text, ui.get("/ui/admin/routes.json").text]
    assert channel in pages[0]
    for page in pages:
        for secret in secrets:
            assert secret not in page


def test_a_known_secret_and_prompt_are_nowhere_at_rest_and_replay_needs_neither(
    stack: Stack, tenant_factory: Callable[..., Tenant]
) -> None:
    canary = uuid.uuid4().hex
    first_secret, secret = f"sk-first-{canary}", f"sk-known-{canary}"
    prompt = f"my private prompt {canary}"
    with admin_client(stack) as admin:
        channel = new_channel(admin, stack, "openai-direct", secret=first_secret)
        patched = admin.patch(f"/channels/{channel}", json={"secret": secret})
        model = new_model(admin, [{"channel_id": channel, "upstream_model": "gpt-4o-mini"}])
    assert patched.status_code == 200, patched.text
    assert secret not in patched.text
    assert patched.json()["secret_rotated"] is True
    _never_shown(stack, [first_secret, secret], channel)

    # The row holds the secret sealed; the stack's key opens it, and only for this channel.
    [row] = io.fetch(stack.dsn, "SELECT secret FROM router.channels WHERE id = $1", channel)
    assert row["secret"].startswith("tw1:")
    assert stack.secret_ring.open(row["secret"], f"channel:{channel}") == secret

    tenant = tenant_factory({"credit": "5"})
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8},
        timeout=30,
    )
    # Served through the channel: the router opened its sealed secret.
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    wait_for(
        lambda: io.fetch(
            stack.dsn,
            "SELECT 1 FROM ledger.receipts WHERE request_id = $1 AND status = ANY($2)",
            request_id,
            list(TERMINAL),
        ),
        what="the receipt to close",
    )

    # On gw.requests the body is sealed; while its epoch key lives, it opens to the prompt.
    event = _sealed_request(stack, request_id)
    assert event.body == {}
    assert event.sealed_body is not None
    key_id = event.sealed_body.key_id
    rows = io.fetch(stack.dsn, "SELECT id, key, delete_after FROM bodykeys.keys WHERE id = $1",
                    key_id)  # fmt: skip
    if rows:  # (a slow run may already be past the retention)
        key = DataKey(rows[0]["id"], bytes(rows[0]["key"]), rows[0]["delete_after"])
        assert open_body(event.sealed_body, key, request_id)["messages"][0]["content"] == prompt

    # Past delivery plus the retention (the test stack: 2 s epochs, 25 s), the key is deleted.
    wait_for(
        lambda: not io.fetch(stack.dsn, "SELECT 1 FROM bodykeys.keys WHERE id = $1", key_id),
        timeout=90,
        what="the body's key to be deleted",
    )

    canaries = [secret.encode(), first_secret.encode(), prompt.encode(), canary.encode()]
    dump = _pg_dump(stack)
    assert b"router.channels" in dump or b"COPY router.channels" in dump
    for needle in canaries:
        assert needle not in dump, f"{needle!r} found in the database"

    files = _log_files(stack)
    assert {f.name for f in files} >= {"edge.log", "router.log", "ledger.log", "broker.log"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        content = path.read_bytes()
        for needle in canaries:
            assert needle not in content, f"{needle!r} found in {path.name}"

    records = asyncio.run(_read_all(stack.bootstrap, FOREVER))
    assert any(request_id.encode() in v for v in records[topics.REQUESTS])
    assert any(request_id.encode() in v for v in records[topics.AUTHORIZED])
    for name, values in records.items():
        for value in values:
            for needle in canaries:
                assert needle not in value, f"{needle!r} found on {name}"

    # Replay reproduces every balance and receipt from topics whose bodies cannot be opened.
    done = _verify_replay(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout


def test_the_embedded_postgres_refuses_a_login_without_its_password(stack: Stack) -> None:
    parts = urlsplit(stack.dsn)
    assert parts.password  # the stack's DSN carries the generated password
    anonymous = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))
    wrong = urlunsplit(
        parts._replace(netloc=f"{parts.username}:nope@{parts.hostname}:{parts.port}")
    )

    for dsn in (anonymous, wrong):
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(_connect(dsn))


async def _connect(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.close()
