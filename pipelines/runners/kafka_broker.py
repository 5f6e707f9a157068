"""A Kafka broker on this machine: one KRaft node (broker and controller in one JVM) on loopback.

`fetch()` copies Kafka's jars (org.apache.kafka:kafka_2.13 and its runtime dependencies) from Maven
Central into ~/.apache_beam/cache/kafka/kafka_2.13-<version>/lib. `KafkaBroker(workdir).start()` writes
its configuration, formats its storage with Kafka's StorageTool and starts `kafka.Kafka` on two free
loopback ports (clients, controller); topics are created when first used, with `partitions` partitions.
Its process is recorded in the work directory (private: ~/.iot-platform-beam/kafka by default), so
`status` and `stop` work from another command, and `stop` signals only the JVM it can prove it started.
"""
import base64
import os
import shutil
import subprocess
import tempfile
import uuid

from . import processes
from .tools import free_port, require, run

VERSION = "4.1.1"  # the newest whose runtime dependencies Maven Central served whole here (Java 17)
SCALA = "2.13"
CACHE = os.path.expanduser("~/.apache_beam/cache/kafka")
DEFAULT_WORKDIR = os.path.join(processes.STATE_HOME, "kafka")
MAIN_CLASS = "kafka.Kafka"
LOG4J2 = """Configuration:
  Appenders:
    File:
      name: File
      fileName: "${sys:kafka.logs.dir}/server.log"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: File
"""


class FetchError(RuntimeError):
    """Kafka's jars could not be fetched; the message says why in one line."""


class BrokerError(RuntimeError):
    """The broker did not start or is not there; the message says why in one line."""


def lib(version=VERSION):
    return os.path.join(CACHE, f"kafka_{SCALA}-{version}", "lib")


def fetch(version=VERSION, log=print):
    """Copy Kafka's jars into its lib directory with Maven; the directory. Idempotent."""
    target = lib(version)
    if os.path.exists(os.path.join(target, f"kafka_{SCALA}-{version}.jar")):
        log(f"kafka: broker {version} in place: {target}")
        return target
    mvn, _ = require("mvn", "java")
    with tempfile.TemporaryDirectory(prefix="kafka-") as work:
        with open(os.path.join(work, "pom.xml"), "w", encoding="utf-8") as pom:
            pom.write(_POM.format(scala=SCALA, version=version))
        log(f"kafka: fetching org.apache.kafka:kafka_{SCALA}:{version} and its runtime dependencies with Maven")
        ok, output = run([mvn, "-B", "-q", "-Dstyle.color=never", "dependency:copy-dependencies",
                          "-DincludeScope=runtime", f"-DoutputDirectory={os.path.join(work, 'lib')}"], cwd=work)
        if not ok:
            lines = [line for line in output.splitlines() if "ERROR" in line] or output.splitlines()[-1:]
            raise FetchError(f"Maven could not fetch Kafka {version}: {lines[0].strip() if lines else 'see mvn'}")
        shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        os.makedirs(os.path.dirname(target))
        shutil.move(os.path.join(work, "lib"), target + ".part")
        os.replace(target + ".part", target)
    log(f"kafka: broker {version} at {target}")
    return target


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.iot-platform-beam-connector</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{version}</version></dependency>
  </dependencies>
</project>
"""


class KafkaBroker:
    """A single-node KRaft broker whose configuration, data, log and process record live in `workdir`."""

    def __init__(self, workdir=DEFAULT_WORKDIR, version=VERSION):
        self.workdir, self.version = os.path.abspath(workdir), version
        self.port = self.controller_port = None
        self.process = None  # processes.Started

    @property
    def bootstrap_servers(self):
        return f"127.0.0.1:{self.port}"

    @classmethod
    def load(cls, workdir=DEFAULT_WORKDIR):
        """The broker a `start` left in `workdir`, or BrokerError."""
        broker = cls(workdir)
        state = processes.load_record(broker.workdir, "broker.json", BrokerError, "Kafka broker")
        broker.version, broker.port, broker.controller_port = state["version"], state["port"], state["controller_port"]
        broker.process = processes.Started(*state["process"]) if state["process"] else None
        return broker

    def running(self):
        return self.process is not None and self.process.running()

    def start(self, partitions=1, timeout=60):
        """Format fresh storage and start the broker; returns once it accepts connections."""
        if not os.path.exists(os.path.join(lib(self.version), f"kafka_{SCALA}-{self.version}.jar")):
            raise BrokerError("Kafka is not fetched: run python -m pipelines.runners fetch kafka")
        try:
            processes.private_directory(self.workdir)
        except processes.NotPrivate as error:
            raise BrokerError(str(error)) from None
        if os.path.exists(os.path.join(self.workdir, "broker.json")) and KafkaBroker.load(self.workdir).running():
            raise BrokerError(f"a Kafka broker of {self.workdir} is running: stop it first, or choose --workdir")
        (java,) = require("java")
        for name in ("data", "log"):
            shutil.rmtree(os.path.join(self.workdir, name), ignore_errors=True)
            os.makedirs(os.path.join(self.workdir, name))
        self.port, self.controller_port = free_port(), free_port()
        properties = self._write_configuration(partitions)
        classpath = os.path.join(lib(self.version), "*")
        ok, output = run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                          "-c", properties])
        if not ok:
            raise BrokerError(f"Kafka could not format its storage: {output.strip().splitlines()[-1:]}")
        log_dir = os.path.join(self.workdir, "log")
        command = [java, "-Xms256m", "-Xmx512m", f"-Dkafka.logs.dir={log_dir}",
                   f"-Dlog4j2.configurationFile={os.path.join(self.workdir, 'log4j2.yaml')}",
                   "-cp", classpath, MAIN_CLASS, properties]
        with open(os.path.join(log_dir, "kafka.out"), "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # outlives the command that started it
        self.process = processes.Started.of(process.pid, marker=self.workdir)
        self._save()
        state = processes.wait_listening(process, self.port, timeout, poll=0.3)
        if state == "listening":
            return self
        if state == "ended":
            raise BrokerError(f"the Kafka broker ended as it started (exit status {process.returncode}): "
                              f"{_last_lines(log_dir)}; logs in {log_dir}")
        self.stop()
        raise BrokerError(f"the Kafka broker did not start listening within {timeout} s; logs in {log_dir}")

    def stop(self, timeout=20):
        """Stop the broker if it is still the JVM started here; its data stays until the next start."""
        if self.process is not None:
            processes.stop([self.process], timeout)
        self.process = None
        self._save()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _write_configuration(self, partitions):
        settings = {
            "process.roles": "broker,controller", "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": os.path.join(self.workdir, "data"),
            "num.partitions": partitions, "auto.create.topics.enable": "true",
            # one node: every internal topic has one replica; a new group's first members join at once
            "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1, "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1, "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
        }
        path = os.path.join(self.workdir, "server.properties")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in settings.items())
        with open(os.path.join(self.workdir, "log4j2.yaml"), "w", encoding="utf-8") as handle:
            handle.write(LOG4J2)
        return path

    def _save(self):
        state = {"version": self.version, "port": self.port, "controller_port": self.controller_port,
                 "process": list(self.process) if self.process else None}
        processes.save_record(os.path.join(self.workdir, "broker.json"), state)


def _last_lines(log_dir, count=3):
    """The last lines of the broker's logs, for an error message."""
    lines = []
    for name in ("kafka.out", "server.log"):
        try:
            with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as handle:
                lines += [line.strip() for line in handle if line.strip()]
        except OSError:
            pass
    return " | ".join(lines[-count:]) or "no log lines"


def _cluster_id():
    """A KRaft cluster id: 16 random bytes in URL-safe base64, as Kafka's own tool makes them."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
