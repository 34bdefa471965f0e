"""A real Apache Kafka broker (one KRaft node) on 127.0.0.1, run from Maven Central jars.

The jars are resolved once by the Maven project in infra/kafka into `<cache>/kafka-<hash>/`;
a marker file written after a complete copy makes every later start download nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from vigil.kafka import broker_answers, ensure_topics
from vigil.services.process import (
    ProcessRecord,
    ProcessRegistry,
    ServiceError,
    record_for,
    require_free_port,
    spawn,
    wait_until,
)
from vigil.settings import PROJECT_ROOT, TOPICS, Settings

NAME = "kafka"
POM = PROJECT_ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = PROJECT_ROOT / "infra" / "kafka" / "log4j2.properties"


def jar_dir(settings: Settings) -> Path:
    """Keyed by the pom's content, so editing the Kafka version resolves afresh."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return settings.cache_dir / f"kafka-{digest}"


def ensure_jars(settings: Settings) -> tuple[Path, bool]:
    """The broker's classpath folder, and whether this call had to download it."""
    target = jar_dir(settings)
    if (target / ".complete").exists():
        return target, False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (`mvn`) is needed once to fetch the Kafka broker jars from "
                           "Maven Central: install it (apt-get install maven) and retry")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError("could not resolve the Kafka broker jars from Maven Central:\n"
                           + (result.stdout + result.stderr)[-3000:])
    (staging / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target, True


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ServiceError("Java 17+ is needed to run the Kafka broker: install it "
                           "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return found


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64. Like Kafka's own generator we
    avoid a leading '-', which the storage tool's argument parser would read as an option
    (one start in 64 failed that way)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def broker_config(settings: Settings, data_dir: Path) -> str:
    host = "127.0.0.1"
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{settings.kafka_controller_port}",
        f"listeners=PLAINTEXT://{host}:{settings.kafka_port},"
        f"CONTROLLER://{host}:{settings.kafka_controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{settings.kafka_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir}",
        f"num.partitions={settings.kafka_partitions}",
        # One node: every internal topic must live with a single replica.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created deliberately, with the configured partition count.
        "auto.create.topics.enable=false",
        "",
    ])


class KafkaBroker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.log = settings.state_dir / "logs" / "kafka.log"
        self.registry = ProcessRegistry(settings.state_dir)

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def running(self) -> ProcessRecord | None:
        return self.registry.live(NAME)

    def healthy(self) -> bool:
        return broker_answers(self.settings.kafka_bootstrap)

    def start(self, progress: list[str]) -> ProcessRecord:
        settings = self.settings
        require_free_port("127.0.0.1", settings.kafka_port, "VIGIL_KAFKA_PORT")
        require_free_port("127.0.0.1", settings.kafka_controller_port,
                          "VIGIL_KAFKA_CONTROLLER_PORT")
        jars, downloaded = ensure_jars(settings)
        progress.append("kafka: fetched broker jars from Maven Central" if downloaded
                        else "kafka: broker jars cached, nothing downloaded")
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(broker_config(settings, self.data_dir))
        java = java_binary()
        classpath = f"{jars}/*"
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            fmt = subprocess.run(
                [java, "-cp", classpath, f"-Dlog4j2.configurationFile={LOG4J}",
                 "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
            progress.append(f"kafka: formatted KRaft storage in {self.data_dir}")
        proc = spawn(
            [java, f"-Xms{min(256, settings.kafka_heap_mb)}m", f"-Xmx{settings.kafka_heap_mb}m",
             "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath, "kafka.Kafka", str(config)],
            self.log)
        record = record_for(NAME, proc.pid, self.address, self.log)
        self.registry.put(record)
        wait_until(self.healthy, what="the Kafka broker", timeout=90,
                   still_starting=lambda: proc.poll() is None, log=self.log)
        created = ensure_topics(settings.kafka_bootstrap, TOPICS, settings.kafka_partitions)
        if created:
            progress.append(f"kafka: created topics {', '.join(created)} "
                            f"({settings.kafka_partitions} partitions)")
        return record
