"""An embedded PostgreSQL: the machine's server binaries, a project-local data directory.

Postgres refuses to run as root, so when invoked as root the cluster is initialised and run as
an unprivileged user (``postgres`` where the package created it, else ``nobody``). If that user
cannot reach the project's data directory (a checkout under a private home), the cluster lives
in a per-checkout directory under the system temp folder instead.

Every login needs a password (SCRAM, no ``trust``): one is generated when the cluster is made
and kept beside it in ``postgres.password`` (mode 0600); the DSN carries it. A cluster made
before passwords existed (a throwaway dev database) is made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
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
        self.password_file = self.data_root / "postgres.password"
        self.password = ""

    @property
    def dsn(self) -> str:
        """The libpq URL of the database (with the generated password)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _init_cluster(self) -> None:
        """Initdb with a fresh password and password authentication for every login."""
        self.password = secrets.token_hex(24)
        with tempfile.TemporaryDirectory() as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(self.password + "\n", encoding="utf-8")
            pwfile.chmod(0o600)
            if self._os_user is not None:
                shutil.chown(tmp, user=self._os_user)
                shutil.chown(pwfile, user=self._os_user)
            self._cmd("initdb", "-D", str(self.data_dir), "-U", self.user,
                      "-A", "scram-sha-256", f"--pwfile={pwfile}",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.password)

    def _forget_cluster_without_password(self) -> None:
        """A cluster from before passwords (it trusted every login) is throwaway: remake it."""
        if not (self.data_dir / "PG_VERSION").exists() or self.password_file.exists():
            return
        self.stop()
        for child in self.data_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        log.info("postgres_cluster_remade", reason="it trusted every login")

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
        self._forget_cluster_without_password()
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        else:
            self.password = self.password_file.read_text(encoding="utf-8").strip()
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
            env={**os.environ, "PGPASSWORD": self.password},
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"could not create database {self.database}: {result.stderr}")

    def destroy(self) -> None:
        """Stop and delete the data directory (throwaway test clusters)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.password_file.unlink()

    def stop(self) -> None:
        """Stop the server quickly (open transactions roll back)."""
        if self.running():
            self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)
