"""A real Apache Kafka broker (KRaft, single node, no ZooKeeper) built from Maven Central.

Why a real broker and not a mock: what the operator relies on is broker behaviour (acks=all
durability, idempotent producer sequence numbers across a broker restart, consumer-group
offsets surviving a consumer restart), and those are exactly the things a fake gets wrong.

`provision()` resolves the broker classpath (`kafka.Kafka`, `kafka.tools.StorageTool`, a
reload4j logging binding) with the throw-away `kafka/pom.xml` into the rig cache, keyed by
Kafka version and pom digest. `KafkaBroker` formats a log dir once and runs the JVM as a rig
`Server`; `restart()` keeps the log dir and ports, which is how the reliability suite
simulates a broker outage.

This module is also a pytest plugin (``pytest_plugins = ["rig.kafka"]`` or ``-p rig.kafka``):
the session-scoped ``kafka`` fixture starts the broker the first time a test asks for it, so a
run that never touches Kafka never pays for a JVM.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from rig.cache import CACHE, cached, log, phase
from rig.procs import Server, free_port, port_open

#: The pod network's gateway in the rig's cluster (rig.cluster.GATEWAY; not imported from
#: there, so that a run without the cluster never imports its module).
POD_GATEWAY = "10.244.0.1"

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"

#: JVM heap for the broker: enough for the rig's handful of small topics, small enough that
#: the broker, two Airflow instances and the API server fit a 2-core, few-GB CI machine.
JVM_HEAP = ("-Xms256m", "-Xmx512m")

#: A cold JVM plus KRaft bootstrap takes 5-15 s on 2 cores; a loaded CI box can triple that.
START_TIMEOUT_S = 120.0

#: reload4j configuration: everything at INFO to stdout, which the rig `Server` writes to the
#: broker's log file. The request logger is chatty at INFO and helps nobody reading a failure.
LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
"""


def kafka_version() -> str:
    """The Kafka version pinned in the pom (the one place it is written down)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if match is None:
        raise RuntimeError(f"no <kafka.version> property in {POM}")
    return match.group(1).strip()


def provision() -> Path:
    """Return a cache dir whose ``libs/`` holds the broker classpath; download it if missing.

    Keyed by Kafka version and a digest of the pom, so editing the pom (another logging
    binding, a version bump) provisions a new dir next to the old one instead of reusing a
    stale classpath. Maven's own repository is kept in the rig cache too (``m2/``), so a
    second cold provisioning (new pom digest) downloads only what changed.
    """
    version = kafka_version()
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:8]

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        pom = tmp / "pom.xml"
        shutil.copyfile(POM, pom)
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                f"-Dmaven.repo.local={CACHE / 'm2'}",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp / 'libs'}",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        # Maven leaves a target/ dir next to the pom; the cache keeps only what is used.
        shutil.rmtree(tmp / "target", ignore_errors=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn could not resolve Kafka {version} (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        jars = {p.name for p in (tmp / "libs").glob("*.jar")}
        missing = {f"kafka_2.13-{version}.jar", "slf4j-reload4j-1.7.36.jar"} - jars
        if missing:
            raise RuntimeError(f"mvn finished but the classpath lacks {sorted(missing)}")

    return cached(CACHE / "kafka" / f"{version}-{digest}", build, name=f"kafka {version} jars")


def random_cluster_id() -> str:
    """A KRaft cluster id as `kafka.tools.StorageTool random-uuid` prints it.

    Kafka's `Uuid.toString()` is the URL-safe, unpadded base64 of 16 random bytes, and
    `Uuid.randomUuid()` skips ids starting with "-" (they read as CLI flags). Computing it here
    saves one JVM start (about a second on 2 cores) per broker.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


async def _can_list_topics(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="rig-probe", request_timeout_ms=3000
    )
    try:
        await admin.start()
        await admin.list_topics()
        return True
    finally:
        await admin.close()


def _run_async_probe(bootstrap: str) -> bool:
    """Run the aiokafka probe on its own loop in a helper thread.

    Why a thread: `KafkaBroker.start()` is called from sync fixtures and, via
    `asyncio.to_thread`, from async tests; a private thread always has no running loop, so
    `asyncio.run` works in both.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _can_list_topics(bootstrap)).result(timeout=30)


class KafkaBroker:
    """One KRaft broker+controller on loopback, with a static single-voter quorum.

    Ports are picked once and kept across `restart()`, so clients keep their bootstrap
    address through an outage, exactly as they would with a real broker behind a fixed name.
    """

    def __init__(self, workdir: Path, *, home: Path | None = None) -> None:
        self.workdir = workdir
        self.home = home  # what provision() returned: the classpath is home/libs/*
        self.port = free_port()
        self.pods_port = free_port()
        self.controller_port = free_port()
        self.log_dir = workdir / "kafka-logs"
        self.config = workdir / "server.properties"
        self.log4j = workdir / "log4j.properties"
        self.log_path = workdir / "broker.log"
        self.server: Server | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pods_bootstrap(self) -> str:
        """The bootstrap address for clients in pods of the rig's cluster."""
        return f"{POD_GATEWAY}:{self.pods_port}"

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    @property
    def classpath(self) -> str:
        assert self.home is not None, "provision() first"
        return str(self.home / "libs" / "*")  # the JVM expands the wildcard itself

    def server_properties(self) -> str:
        """The single-node config from test-rig.md section 2, plus rig speed-ups.

        - one partition for ``__consumer_offsets`` (default 50): the first group commit
          otherwise waits for 50 partitions to be created, about a second on 2 cores;
        - ``auto.create.topics.enable=false``: production clusters often disable it, and the
          publisher must then create its topic itself, so the tests exercise that path;
        - a 4 s broker session (default 9 s): after a hard kill the restarted controller keeps
          the dead incarnation registered until its session expires, and the broker cannot
          serve until then. Heartbeats are local here, so a short session risks nothing.
        """
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                # PODS: the same broker as pods of the rig's cluster see it. It listens on
                # loopback too; pods reach it at the pod bridge's gateway, which the
                # cluster rig DNATs to loopback (rig.cluster), so that is what it advertises.
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"PODS://127.0.0.1:{self.pods_port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"PODS://{POD_GATEWAY}:{self.pods_port}",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map="
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PODS:PLAINTEXT",
                f"log.dirs={self.log_dir}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "broker.session.timeout.ms=4000",
                "broker.heartbeat.interval.ms=1000",
                "",
            ]
        )

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            *JVM_HEAP,
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.log4j}",
            "-cp",
            self.classpath,
            *args,
        ]

    def _format(self) -> None:
        """Format the log dir for a fresh cluster id (once: a restart reuses it).

        A new `KafkaBroker` is a new cluster: a log dir left in ``workdir`` by an earlier run
        (``python -m rig.up`` reuses its dir) belongs to another cluster id, so it goes.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.config.write_text(self.server_properties())
        self.log4j.write_text(LOG4J_PROPERTIES)
        with self.log_path.open("ab") as out:
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    random_cluster_id(),
                    "-c",
                    str(self.config),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"StorageTool format failed ({result.returncode}); see {self.log_path}"
            )
        self._formatted = True

    def start(self) -> None:
        """Start the broker (formatting its log dir the first time); return when it serves."""
        if self.running:
            return
        if self.home is None:
            self.home = provision()
        if not self._formatted:
            with phase("kafka: format log dir"):
                self._format()
        with phase("kafka: start broker"):
            self.server = Server(
                "kafka",
                self._java("kafka.Kafka", str(self.config)),
                log_path=self.log_path,
                cwd=self.workdir,
            )
            self.server.start()
            self.server.wait_ready(self._ready, timeout_s=START_TIMEOUT_S, what="listing topics")
        log(f"kafka broker at {self.bootstrap} (log {self.log_path})")

    def _ready(self) -> bool:
        return port_open(self.port) and _run_async_probe(self.bootstrap)

    def stop(self, *, hard: bool = False) -> None:
        """Stop the broker: SIGTERM (controlled shutdown) or, with ``hard``, SIGKILL (a crash)."""
        if self.server is None:
            return
        if hard:
            self.server.kill(signal.SIGKILL)
        self.server.stop()
        self.server = None

    def restart(self, *, down_s: float = 0.0, hard: bool = False) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same log dir and ports.

        Blocking: from an async test use ``await asyncio.to_thread(kafka.restart, ...)`` so
        clients on the test's loop keep running (and retrying) during the outage.
        """
        self.stop(hard=hard)
        if down_s:
            time.sleep(down_s)
        self.start()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running broker shared by the session; stopped at the end, also on failure.

    Tests that restart it must leave it running (`restart()` does); Ctrl-C and crashes are
    covered by `rig.procs.REGISTRY`'s atexit hook.
    """
    with phase("kafka: provision"):
        home = provision()
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), home=home)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (Kafka allows ``[a-zA-Z0-9._-]``, 249 chars)."""
    name = request.node.name.removeprefix("test_")
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[:80]
    return f"test-{base}-{uuid.uuid4().hex[:8]}"
