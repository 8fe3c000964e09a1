"""The embedded local stack, one implementation for ``make dev`` and the test suite.

Brings up, in order: PostgreSQL (unless ``DATABASE_URL`` is set), the Kafka-protocol broker
(unless ``KAFKA_BOOTSTRAP_SERVERS`` is set), migrations of every service, the topics, the demo
upstream, then the five services as separate processes configured only by environment
variables, exactly as a deployment runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import asyncpg
import httpx
import structlog

from tollway.devstack.broker import EmbeddedBroker, port_is_free, wait_for_port
from tollway.devstack.kafka import ApacheKafkaBroker
from tollway.devstack.logfiles import open_private_log
from tollway.devstack.postgres import EmbeddedPostgres
from tollway.devstack.signals import signals_deferred, unmask_in_child
from tollway.events import topics
from tollway.runtime.kafka import FETCH_WAIT_ENV, ensure_topics
from tollway.runtime.migrations import ALL_SERVICES, migrate
from tollway.runtime.sealing import ENV as SECRET_KEYS_ENV
from tollway.runtime.sealing import KeyRing, new_key_entry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

log = structlog.get_logger(__name__)

SERVICES = ("ledger", "router", "limits", "researcher", "edge")
SCHEMAS = ("edge", "router", "ledger", "limits", "researcher", "bodykeys")


@dataclass
class StackConfig:
    """Where the stack lives and which ports it uses."""

    root: Path
    pg_port: int = 54329
    broker_port: int = 19092
    edge_port: int = 8787
    upstream_port: int = 8900
    researcher_port: int = 8790
    admin_token: str = "tw-admin-dev"  # noqa: S105 - the local demo's token, printed to the user
    edge_id: str = "edge-1"
    fast_unsafe: bool = False
    webhook_signing_key: str = "tw-webhook-dev"
    partitions: int = 4
    database_url: str | None = field(default_factory=lambda: os.environ.get("DATABASE_URL"))
    kafka_bootstrap: str | None = field(
        default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    )
    # Which broker the stack starts when no KAFKA_BOOTSTRAP_SERVERS is given: "tansu" (embedded,
    # in memory, instant) or "kafka" (Apache Kafka 4.x, KRaft, the production broker).
    broker: str = field(default_factory=lambda: os.environ.get("TOLLWAY_BROKER", "tansu"))
    extra_env: dict[str, str] = field(default_factory=dict)
    # Prometheus port per service process (TOLLWAY_METRICS_PORT); absent: no metrics endpoint.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # The keys channel secrets are sealed with (TOLLWAY_SECRET_KEYS): the caller's, or a fresh
    # random key per stack (its database starts empty, so nothing sealed before needs it).
    secret_keys: str = field(
        default_factory=lambda: (
            os.environ.get(SECRET_KEYS_ENV) or new_key_entry(f"k{int(time.time())}")
        )
    )


@dataclass
class Stack:
    """A running stack; ``stop`` tears it down in reverse order."""

    config: StackConfig
    dsn: str = ""
    bootstrap: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _postgres: EmbeddedPostgres | None = None
    _broker: EmbeddedBroker | ApacheKafkaBroker | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def edge_url(self) -> str:
        """Base URL of the edge."""
        return f"http://127.0.0.1:{self.config.edge_port}"

    @property
    def upstream_url(self) -> str:
        """Base URL of the demo upstream."""
        return f"http://127.0.0.1:{self.config.upstream_port}"

    @property
    def pg_password(self) -> str | None:
        """The generated password of the embedded Postgres (None when DATABASE_URL was given)."""
        return self._postgres.password if self._postgres is not None else None

    @property
    def postgres_log(self) -> Path | None:
        """The embedded Postgres server's own log file (None when DATABASE_URL was given)."""
        return self._postgres.data_dir / "server.log" if self._postgres is not None else None

    @property
    def secret_ring(self) -> KeyRing:
        """The keys the stack's services seal and open channel secrets with."""
        return KeyRing.parse(self.config.secret_keys)

    @property
    def log_dir(self) -> Path:
        """Where each process writes its log."""
        return self.config.root / "logs"

    def start_infra(self) -> None:
        """Postgres and the broker (or the configured ones), migrations and topics."""
        cfg = self.config
        busy = [
            p
            for p in (
                cfg.edge_port,
                cfg.upstream_port,
                cfg.researcher_port,
                *cfg.metrics_ports.values(),
            )
            if not port_is_free(p)
        ]
        if busy:
            raise RuntimeError(
                f"ports already in use: {busy} (another Tollway stack still"
                " running?): stop it or choose other TOLLWAY_DEV_*_PORT values."
            )
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh_broker = cfg.kafka_bootstrap is None
        if cfg.database_url:
            self.dsn = cfg.database_url
        else:
            self._postgres = EmbeddedPostgres(cfg.root, cfg.pg_port, fast_unsafe=cfg.fast_unsafe)
            _step("postgres", f"starting on port {cfg.pg_port}")
            self.dsn = self._postgres.start()
        if cfg.kafka_bootstrap:
            self.bootstrap = cfg.kafka_bootstrap
        else:
            self._broker = self._new_broker()
            self.bootstrap = self._broker.start()
        if fresh_broker and not cfg.database_url:
            # The embedded broker keeps its log in memory: state derived from an older log
            # would point at offsets that no longer exist, so start from an empty database.
            asyncio.run(reset_schemas(self.dsn))
        _step("migrations", "applying")
        asyncio.run(migrate(self.dsn, ALL_SERVICES))
        asyncio.run(ensure_topics(self.bootstrap, topics.core_topics(cfg.partitions)))

    def _new_broker(self) -> EmbeddedBroker | ApacheKafkaBroker:
        cfg = self.config
        log_path = self.log_dir / "broker.log"
        if cfg.broker == "kafka":
            _step("broker", f"starting Apache Kafka (KRaft) on port {cfg.broker_port}")
            return ApacheKafkaBroker(cfg.broker_port, cfg.root / "kafka", log_path)
        if cfg.broker != "tansu":
            raise ValueError(f"TOLLWAY_BROKER={cfg.broker!r}: use 'tansu' or 'kafka'")
        _step("broker", f"starting Tansu on port {cfg.broker_port}")
        return EmbeddedBroker(cfg.broker_port, log_path)

    def service_env(self) -> dict[str, str]:
        """The environment every service process gets (nothing else configures them)."""
        cfg = self.config
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
        env.update(
            {
                "DATABASE_URL": self.dsn,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "TOLLWAY_TOPIC_PARTITIONS": str(cfg.partitions),
                "TOLLWAY_ADMIN_TOKEN": cfg.admin_token,
                "TOLLWAY_WEBHOOK_SIGNING_KEY": cfg.webhook_signing_key,
                SECRET_KEYS_ENV: cfg.secret_keys,
                "TOLLWAY_EDGE_EDGE_ID": cfg.edge_id,
                "TOLLWAY_EDGE_PORT": str(cfg.edge_port),
                "TOLLWAY_RESEARCHER_PORT": str(cfg.researcher_port),
                "TOLLWAY_RESEARCHER_EDGE_URL": f"http://127.0.0.1:{cfg.edge_port}",
                # The dashboard's research pages reach the researcher with the user's key.
                "TOLLWAY_EDGE_RESEARCHER_URL": f"http://127.0.0.1:{cfg.researcher_port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.broker_env())
        env.update(cfg.extra_env)
        return env

    def broker_env(self) -> dict[str, str]:
        """Client settings the started broker needs: Tansu answers a fetch only when its wait ends.

        Apache Kafka wakes a waiting fetch when a record arrives, so clients keep the long default
        wait; the embedded Tansu waits the full time, so its clients ask for a short one.
        """
        if isinstance(self._broker, EmbeddedBroker):
            return {FETCH_WAIT_ENV: "5"}
        return {}

    def metrics_url(self, name: str) -> str:
        """Where service ``name`` serves Prometheus metrics (``config.metrics_ports``)."""
        return f"http://127.0.0.1:{self.config.metrics_ports[name]}/metrics"

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one process with its own log file (``env``: settings over the stack's)."""
        out = open_private_log(self.log_dir / f"{name}.log")
        self._logs.append(out)
        merged = self.service_env()
        if name in self.config.metrics_ports:
            merged["TOLLWAY_METRICS_PORT"] = str(self.config.metrics_ports[name])
        merged.update(env or {})
        with signals_deferred():
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                [sys.executable, *args],
                env=merged,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=unmask_in_child,  # noqa: PLW1509 - only unblocks two signals
            )
            self.processes[name] = proc
        return proc

    def start_upstream(self) -> None:
        """The demo upstream provider."""
        _step("upstream", f"demo provider on port {self.config.upstream_port}")
        self.spawn(
            "upstream",
            [
                "-m",
                "tollway.devstack.upstream",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.upstream_port),
            ],
        )
        wait_for_port("127.0.0.1", self.config.upstream_port)

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        """The services, each ``python -m tollway.<name>``; waits until the edge is healthy."""
        for name in names:
            _step(name, "starting")
            self.spawn(name, ["-m", f"tollway.{name}"])
        if "edge" in names:
            self.wait_healthy(f"{self.edge_url}/healthz", "edge")

    def wait_healthy(self, url: str, name: str, timeout: float = 60.0) -> None:
        """Poll ``url`` until it answers 200; fail with the process's log path."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}); see {self.log_dir}/{name}.log"
                )
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not healthy after {timeout}s; see {self.log_dir}/{name}.log")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process (tests use SIGKILL to prove crash safety) and reap it."""
        proc = self.processes.pop(name)
        _signal(proc, sig)
        proc.wait(timeout=30)

    def kill_broker(self) -> None:
        """SIGKILL the broker this stack started (tests of a broker crash)."""
        if self._broker is None:
            raise RuntimeError("this stack uses an external broker (KAFKA_BOOTSTRAP_SERVERS)")
        self._broker.kill()

    def restart_broker(self) -> None:
        """Start the broker again after it died, on the same port (and storage, for Kafka)."""
        if self._broker is None:
            raise RuntimeError("this stack uses an external broker (KAFKA_BOOTSTRAP_SERVERS)")
        self._broker.restart()

    def supervise(self, stop: threading.Event | None = None, interval: float = 1.0) -> None:
        """Block until ``stop`` is set, restarting the broker whenever it dies.

        This is how ``make dev`` survives a broker crash: Apache Kafka comes back on its own
        storage, so the services reconnect and go on where they were. A broker started by
        someone else in the meantime (the port is taken) is left to run.
        """
        stop = stop or threading.Event()
        while not stop.wait(interval):
            broker = self._broker
            if broker is None or broker.alive() or not port_is_free(self.config.broker_port):
                continue
            _step("broker", "died; starting it again")
            try:
                broker.restart()
            except RuntimeError as exc:
                _step("broker", f"could not restart: {exc}")

    def stop(self) -> None:
        """Stop services (SIGTERM, then SIGKILL after 10 s), then the broker, then Postgres.

        Each step runs even when an earlier one failed: a stop that gives up half-way leaves
        processes and ports behind.
        """
        procs = list(reversed(self.processes.values()))
        self.processes.clear()
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        with _logged("broker"):
            if self._broker is not None:
                self._broker.stop()
        with _logged("postgres"):
            if self._postgres is not None and self.config.fast_unsafe:
                self._postgres.destroy()
            elif self._postgres is not None:
                self._postgres.stop()
        for out in self._logs:
            out.close()


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - report and go on stopping the rest
        log.warning("stack_stop_failed", part=what, error=str(exc))


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


async def reset_schemas(dsn: str) -> None:
    """Drop every Tollway schema and the migration record (embedded, throwaway state only)."""
    conn = await asyncpg.connect(dsn)
    try:
        for schema in SCHEMAS:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute("DROP TABLE IF EXISTS public.tollway_migrations")
    finally:
        await conn.close()


def _step(what: str, detail: str) -> None:
    print(f"  · {what:<11} {detail}", file=sys.stderr, flush=True)  # noqa: T201 - progress
