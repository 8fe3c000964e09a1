"""An embedded PostgreSQL: the machine's server binaries, a project-local data directory.

Postgres refuses to run as root, so when invoked as root the cluster is initialised and run as
an unprivileged user (``postgres`` where the package created it, else ``nobody``). If that user
cannot reach the project's data directory (a checkout under a private home), the cluster lives
in a per-checkout directory under the system temp folder instead.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class PostgresNotInstalledError(RuntimeError):
    """No PostgreSQL server binaries were found."""


def find_bindir() -> Path:
    """Locate ``pg_ctl``/``initdb``/``postgres``: Debian's versioned dirs first, then PATH."""
    candidates = sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise PostgresNotInstalledError(
        "PostgreSQL server binaries not found: run `make deps` (installs Debian's postgresql)"
        " or set DATABASE_URL to a server you run."
    )


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no unprivileged user (postgres/nobody) exists")


@dataclass
class EmbeddedPostgres:
    """A single local cluster on ``port`` holding the ``database`` database."""

    data_root: Path
    port: int
    database: str = "tollway"
    user: str = "tollway"
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only

    def __post_init__(self) -> None:
        """Resolve the OS user and the data directory that user can reach."""
        self._bindir = find_bindir()
        self._os_user = _run_as()
        self.data_dir = self._reachable(self.data_root / "pgdata")

    @property
    def dsn(self) -> str:
        """The libpq URL of the database."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed binaries, arguments from our own settings
            [str(self._bindir / args[0]), *args[1:]],
            user=self._os_user,
            capture_output=True,
            text=True,
            check=check,
            cwd="/",
        )

    def _can_reach(self, path: Path) -> bool:
        if self._os_user is None:
            return True
        probe = subprocess.run(  # noqa: S603
            ["/usr/bin/test", "-w", str(path)],
            user=self._os_user,
            check=False,
            cwd="/",
        )
        return probe.returncode == 0

    def _reachable(self, wanted: Path) -> Path:
        wanted.parent.mkdir(parents=True, exist_ok=True)
        wanted.mkdir(mode=0o700, exist_ok=True)
        if self._os_user is not None:
            shutil.chown(wanted, user=self._os_user)
        if self._can_reach(wanted):
            return wanted
        tag = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:12]
        fallback = Path(tempfile.gettempdir()) / f"tollway-pg-{tag}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        if self._os_user is not None:
            shutil.chown(fallback, user=self._os_user)
        log.info(
            "postgres_data_relocated", reason="unreachable_by_postgres_user", path=str(fallback)
        )
        return fallback

    def running(self) -> bool:
        """Whether a server is already running on this data directory."""
        return self._cmd("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> str:
        """Initialise if needed, start (or reuse a running server), and return the DSN."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._cmd(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        if not self.running():
            options = [
                f"-p {self.port}",
                f"-k {self.data_dir}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=300",
                "-c shared_buffers=256MB",
            ]
            if self.fast_unsafe:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            result = self._cmd(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                " ".join(options),
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"postgres did not start on port {self.port}: {result.stderr.strip()}"
                    f" (see {self.data_dir / 'server.log'}; is the port in use?)"
                )
        self._ensure_database()
        return self.dsn

    def _ensure_database(self) -> None:
        result = subprocess.run(  # noqa: S603
            [
                str(self._bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.database,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"could not create database {self.database}: {result.stderr}")

    def destroy(self) -> None:
        """Stop and delete the data directory (throwaway test clusters)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop(self) -> None:
        """Stop the server quickly (open transactions roll back)."""
        if self.running():
            self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)
