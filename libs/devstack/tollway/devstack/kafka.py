"""Apache Kafka 4.x as the project's broker: obtained from Maven Central, started in KRaft mode.

The production path runs on Apache Kafka, so the integration and end-to-end suites run against
it too (``make test-kafka``). Nothing is downloaded from anywhere but Maven Central: Maven
resolves the broker's jars (``org.apache.kafka:kafka_2.13`` and its runtime dependencies) into a
project-local cache once; later runs start the cached jars directly.

One broker process is both KRaft controller and broker (single node). Its storage is formatted
afresh when a stack starts, so a new stack starts from an empty log; a broker that died (or was
killed) is restarted on the same storage and configuration by :meth:`ApacheKafkaBroker.restart`,
and nothing it acknowledged is lost.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tollway.devstack.broker import free_port, port_is_free
from tollway.devstack.logfiles import open_private_log
from tollway.devstack.signals import signals_deferred, unmask_in_child

log = structlog.get_logger(__name__)

KAFKA_VERSION = "4.1.0"
# log4j-slf4j-impl binds Kafka's slf4j 1.7 logging to the log4j2 it ships, as its distribution does.
LOG4J_VERSION = "2.24.3"
STARTED_LINE = "Kafka Server started"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tollway.devstack</groupId>
  <artifactId>apache-kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Warnings and errors only, plus the server's own lifecycle lines (the readiness signal).
_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


class KafkaUnavailableError(RuntimeError):
    """Java or Maven is missing, or Maven could not fetch the broker."""


def default_cache() -> Path:
    """Where the broker's jars are kept (``TOLLWAY_KAFKA_CACHE``, else ``.cache/`` here)."""
    configured = os.environ.get("TOLLWAY_KAFKA_CACHE")
    return Path(configured) if configured else Path.cwd() / ".cache" / "apache-kafka"


def _tool(name: str, hint: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if name == "java" and java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which(name)
    if found is None:
        raise KafkaUnavailableError(f"{name} not found: {hint}")
    return found


def install(cache: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's jars, resolving them with Maven on first use."""
    lib = (cache or default_cache()) / version / "lib"
    if (lib / f"kafka_2.13-{version}.jar").exists():
        return lib
    mvn = _tool("mvn", "run `make kafka-deps` (installs Debian's maven and a Java 17 runtime)")
    work = lib.parent / "resolve"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION), "utf-8")
    _progress(f"resolving Apache Kafka {version} from Maven Central (first run only)")
    result = subprocess.run(  # noqa: S603 - fixed arguments, our own pom
        [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={work / 'lib'}"],
        cwd=work, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise KafkaUnavailableError(
            f"Maven could not resolve Apache Kafka {version} (is Maven Central reachable?):\n{tail}"
        )
    # Rename last, so an interrupted download is never mistaken for a complete one.
    shutil.rmtree(lib, ignore_errors=True)
    (work / "lib").rename(lib)
    shutil.rmtree(work, ignore_errors=True)
    return lib


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """A single-node KRaft configuration: one process is controller and broker."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests start consumers in a group one after another: do not wait to rebalance.
            "group.initial.rebalance.delay.ms=0",
            # Topics are created explicitly (ensure_topics); a typo must not create one.
            "auto.create.topics.enable=false",
            # A dev node idles most of the time: an idle Apache Kafka 4.1 with the defaults burns
            # 2.4 % of a core here, 1.0 % with these (bench/idle.py). The controller appends a
            # no-op record to the metadata log every 500 ms to show it is alive (no other voter
            # is there to see it); the broker heartbeats its own controller every 2 s; 8 I/O and
            # 3 network threads per listener each wake every 300 ms to poll their queues.
            "metadata.max.idle.interval.ms=60000",
            "broker.heartbeat.interval.ms=10000",
            "broker.session.timeout.ms=30000",
            "num.io.threads=2",
            "num.network.threads=1",
            # Each of these threads wakes on its own timers; one of each is plenty for a dev
            # node (measured bare, no client: 0.75 % of a core with the defaults of 4
            # group-coordinator threads and 2 background threads, 0.65 % with one of each and
            # one I/O thread; the I/O threads stay 2 so a request does not queue behind another).
            "background.threads=1",
            "group.coordinator.threads=1",
            "share.coordinator.threads=1",
            "",
        ]
    )


@dataclass
class ApacheKafkaBroker:
    """One Apache Kafka process (KRaft, single node) on ``127.0.0.1:port``."""

    port: int
    root: Path
    log_path: Path
    heap: str = "768m"
    cache: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for clients."""
        return f"127.0.0.1:{self.port}"

    # A JVM starved of CPU (2 cores shared by several test stacks) took 120 s to start once.
    def start(self, timeout: float = 300.0) -> str:
        """Install if needed, format fresh storage, start, and wait for the started line."""
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} is already in use (another Tollway stack still running?):"
                " stop it, or choose another port (TOLLWAY_DEV_BROKER_PORT)."
            )
        java = _tool("java", "run `make kafka-deps` (installs a Java 17 runtime)")
        classpath = str(install(self.cache) / "*")
        config = self._write_config()
        self._java(java, classpath, "kafka.tools.StorageTool", "format", "-t",
                   _cluster_id(), "-c", str(config))  # fmt: skip
        self._launch(java, classpath, timeout)
        log.info("broker_started", bootstrap=self.bootstrap, kind="apache-kafka")
        return self.bootstrap

    def restart(self, timeout: float = 300.0) -> str:
        """Start again on the storage and configuration of the last start (after a crash)."""
        java = _tool("java", "run `make kafka-deps` (installs a Java 17 runtime)")
        self._launch(java, str(install(self.cache) / "*"), timeout)
        log.info("broker_restarted", bootstrap=self.bootstrap, kind="apache-kafka")
        return self.bootstrap

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its storage stays for :meth:`restart`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def alive(self) -> bool:
        """Whether the broker process is running."""
        return self._proc is not None and self._proc.poll() is None

    def _launch(self, java: str, classpath: str, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open_private_log(self.log_path) as out, signals_deferred():
            self._proc = subprocess.Popen(  # noqa: S603 - the cached broker, fixed arguments
                [*self._jvm(java, classpath), "kafka.Kafka", str(self.root / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=unmask_in_child,  # noqa: PLW1509 - only unblocks two signals
            )  # fmt: skip
        self._wait_started(offset, timeout)

    def stop(self) -> None:
        """Terminate the broker (a controlled shutdown), then forget its storage."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        shutil.rmtree(self.root / "data", ignore_errors=True)

    def _write_config(self) -> Path:
        data = self.root / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        (self.root / "log4j2.properties").write_text(_LOG4J2, "utf-8")
        config = self.root / "server.properties"
        config.write_text(server_properties(data, self.port, free_port()), "utf-8")
        return config

    def _jvm(self, java: str, classpath: str) -> list[str]:
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            # A single-node test broker: start fast and keep few threads (C1 only, serial GC).
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            # No safepoint every second when nothing needs one, no perf-data file sampled
            # every 50 ms: both cost an idle JVM CPU for nothing.
            "-XX:+UnlockDiagnosticVMOptions",
            "-XX:GuaranteedSafepointInterval=0",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp",
            classpath,
        ]

    def _java(self, java: str, classpath: str, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - the cached broker's own tools
            [*self._jvm(java, classpath), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"Kafka {args[0]} failed:\n{result.stdout}{result.stderr}")

    def _wait_started(self, offset: int, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        next_note = started + 15
        while time.monotonic() < deadline:
            if time.monotonic() > next_note:
                _progress(
                    f"still starting ({time.monotonic() - started:.0f}s; log: {self.log_path})"
                )
                next_note += 15
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"Apache Kafka exited ({self._proc.returncode}); see {self.log_path}"
                )
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if STARTED_LINE.encode() in f.read():
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Apache Kafka not started after {timeout}s; see {self.log_path}")


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (URL-safe base64 of 16 bytes, unpadded)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _progress(detail: str) -> None:
    print(f"  · {'kafka':<11} {detail}", file=sys.stderr, flush=True)  # noqa: T201 - progress


def main() -> int:
    """``python -m tollway.devstack.kafka``: fetch the broker's jars into the cache (idempotent)."""
    try:
        lib = install()
    except KafkaUnavailableError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - a command-line error
        return 1
    _progress(f"Apache Kafka {KAFKA_VERSION} ready ({len(list(lib.glob('*.jar')))} jars)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
