"""``make dev`` stops everything it started when a signal reaches the runner or its group.

A terminal's Ctrl-C, ``timeout`` and process supervisors signal the whole process group, often
more than once; each case must leave no Postgres, broker, upstream or service process and no
port behind, within seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import wait_for
from tollway.devstack.broker import free_port_block, port_is_free
from tollway.devstack.postgres import EmbeddedPostgres
from tollway.devstack.stack import SERVICES

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

STOP_WITHIN_SECONDS = 30.0
REPO = Path(__file__).resolve().parents[2]


def _uv() -> str:
    found = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local/bin"))
    if found is None:
        pytest.skip("uv is not installed")
    return found


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc: services run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"  # a zombie has exited (its parent reaps it)


class DevRunner:
    """``python -m tollway.devstack`` in a session of its own, on free ports."""

    def __init__(self, root: Path, *, via_uv: bool) -> None:
        self.root = root
        # One block of consecutive free ports: the metrics ports are base, base+1, ... and
        # must not run into a port another stack of the suite listens on.
        names = [
            "TOLLWAY_DEV_PG_PORT",
            "TOLLWAY_DEV_BROKER_PORT",
            "TOLLWAY_DEV_EDGE_PORT",
            "TOLLWAY_DEV_UPSTREAM_PORT",
            "TOLLWAY_DEV_RESEARCHER_PORT",
            "TOLLWAY_DEV_METRICS_PORT",
        ]
        base = free_port_block(len(names) - 1 + len(SERVICES))
        self.ports = {name: base + i for i, name in enumerate(names)}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} and not k.startswith("TOLLWAY_")
        }
        env.update({k: str(v) for k, v in self.ports.items()})
        # The suite's broker (`make dev` defaults to Apache Kafka; `make test` runs on Tansu).
        env["TOLLWAY_BROKER"] = os.environ.get("TOLLWAY_BROKER", "tansu")
        self.log = (root / "runner.log").open("wb")
        # `make dev` runs the runner under `uv run`, which receives the group's signals too.
        launcher = [_uv(), "run", "--frozen", "python"] if via_uv else [sys.executable]
        self.proc = subprocess.Popen(
            [*launcher, "-m", "tollway.devstack", "--root", str(root)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def serving(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the dev runner exited early:\n{self.output()}")
        return (self.root / "dev.env").exists() and "Press Ctrl-C" in self.output()

    def output(self) -> str:
        return (self.root / "runner.log").read_text(errors="replace")

    def all_ports(self) -> list[int]:
        """Every port the stack listens on: the fixed ones and each service's metrics port."""
        env = dict(
            line.split("=", 1)
            for line in (self.root / "dev.env").read_text().splitlines()
            if "=" in line
        )
        metrics = [int(env[k]) for k in env if k.endswith("_METRICS_PORT")]
        return [p for k, p in self.ports.items() if k != "TOLLWAY_DEV_METRICS_PORT"] + metrics

    def postmaster_pid(self) -> int:
        """The running postmaster's pid, once its pid file is written."""
        data_dir = EmbeddedPostgres(self.root, self.ports["TOLLWAY_DEV_PG_PORT"]).data_dir
        pid_file = data_dir / "postmaster.pid"
        wait_for(pid_file.exists, timeout=120, what="Postgres to write its pid file")
        return int(pid_file.read_text().splitlines()[0])


@pytest.fixture
def runner(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevRunner]:
    started = DevRunner(tmp_path, via_uv=getattr(request, "param", True))
    try:
        yield started
    finally:
        # A failed test must not leave a stack running for the next one.
        if started.proc.poll() is None:
            os.killpg(started.proc.pid, signal.SIGKILL)
            started.proc.wait()
        started.log.close()
        # As root the cluster may live under the temp folder, outside tmp_path.
        port = started.ports["TOLLWAY_DEV_PG_PORT"]
        shutil.rmtree(EmbeddedPostgres(tmp_path, port).data_dir, ignore_errors=True)


def _assert_all_stopped(runner: DevRunner, pids: set[int], ports: list[int]) -> None:
    runner.proc.wait(timeout=STOP_WITHIN_SECONDS)
    wait_for(
        lambda: not [p for p in pids if _alive(p)],
        timeout=STOP_WITHIN_SECONDS,
        what="every process of the stack to exit",
    )
    wait_for(
        lambda: all(port_is_free(p) for p in ports),
        timeout=STOP_WITHIN_SECONDS,
        what="every port of the stack to be free",
    )
    assert "Stopping" in runner.output()


@pytest.mark.parametrize(
    ("runner", "sig", "to_group", "times"),
    [
        pytest.param(True, signal.SIGINT, True, 3, id="uv-sigint-group-repeated"),
        pytest.param(True, signal.SIGTERM, True, 1, id="uv-sigterm-group-once"),
        pytest.param(False, signal.SIGTERM, False, 2, id="sigterm-runner-repeated"),
        pytest.param(False, signal.SIGINT, False, 1, id="sigint-runner-once"),
    ],
    indirect=["runner"],
)
def test_signal_stops_every_process_and_frees_every_port(
    runner: DevRunner, sig: signal.Signals, *, to_group: bool, times: int
) -> None:
    wait_for(runner.serving, timeout=240, what="the dev stack to serve")
    pids = _children(runner.proc.pid) | {runner.postmaster_pid()}
    ports = runner.all_ports()
    # upstream, five services, the broker and Postgres
    assert len(pids) >= 1 + len(SERVICES) + 2, pids
    assert not [p for p in ports if port_is_free(p)]
    for port in ports[-len(SERVICES) :]:  # every service serves Prometheus metrics
        assert "# HELP" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    started = time.monotonic()

    def send() -> None:
        # Back to back, as a terminal and `uv run` forwarding a copy deliver them.
        for _ in range(times):
            if to_group:
                os.killpg(runner.proc.pid, sig)
            else:
                runner.proc.send_signal(sig)

    send()
    if times > 1:
        # ...and again while it is stopping, as an impatient user does.
        wait_for(lambda: "Stopping" in runner.output(), what="the runner to start stopping")
        with contextlib.suppress(ProcessLookupError):
            send()
    _assert_all_stopped(runner, pids, ports)
    assert runner.proc.returncode == 0
    assert time.monotonic() - started < STOP_WITHIN_SECONDS


def test_signals_while_starting_stop_what_was_started(runner: DevRunner) -> None:
    # Interrupted half-way (Postgres up, services not yet): nothing may be left behind.
    wait_for(  # the broker's step begins once Postgres is up
        lambda: "· broker" in runner.output() or runner.serving(),
        timeout=120,
        what="Postgres to start",
    )
    pids = _children(runner.proc.pid) | {runner.postmaster_pid()}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        os.killpg(runner.proc.pid, sig)
    ports = [p for k, p in runner.ports.items() if k != "TOLLWAY_DEV_METRICS_PORT"]
    runner.proc.wait(timeout=STOP_WITHIN_SECONDS)
    wait_for(
        lambda: not [p for p in pids if _alive(p)],
        timeout=STOP_WITHIN_SECONDS,
        what="every started process to exit",
    )
    wait_for(
        lambda: all(port_is_free(p) for p in ports),
        timeout=STOP_WITHIN_SECONDS,
        what="every port to be free",
    )
