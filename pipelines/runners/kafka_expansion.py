"""Kafka for the relay on Flink: Beam's Flink job server with KafkaIO in it, which is also the expansion
service of the relay's Kafka read.

Maven Central serves no Kafka expansion service jar for Beam 2.62, and Beam's Java harness runs a
cross-language read inside Flink's own JVMs (the EMBEDDED environment: no Docker here), so Flink's job
server must carry KafkaIO and kafka-clients itself; on a session cluster it ships its jar with the job
to the TaskManagers. One jar, assembled with Maven the way Beam's build makes its services, does both:
`--flink_job_server_jar` for Flink, and `ExpansionService PORT --defaultEnvironmentType=EMBEDDED` for
expanding the read. It holds, besides Beam's Flink runner: beam-sdks-java-io-kafka (without
io.confluent's schema-registry artifacts, served from a repository not reachable here), kafka-clients,
jamm (without it "FnHarness startup failed"), the Java 17 options Flink needs in its manifest, and our
registrar (java/KafkaReadRegistrar.java): KafkaIO's reader as an unbounded source, which commits offsets
as Flink's checkpoints complete (Beam 2.62's splittable Kafka read commits them in five-minute windows,
and on Flink fails at the first checkpoint), and reads for a given time from the job's start
(--duration); and a small tool (java/KafkaOffsets.java) that says where a consumer group stands.
The jar's name carries a digest of our Java sources: a changed source makes a new jar, never a stale one
reused from the cache.
"""
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time

import apache_beam as beam
from apache_beam.transforms.external import ImplicitSchemaPayloadBuilder
from apache_beam.utils.subprocess_server import JavaJarServer
from apache_beam.version import __version__ as BEAM_VERSION

from . import beam_jars, flink_cluster, flink_job_server, sql_expansion
from .tools import free_port, require

KAFKA_CLIENTS_VERSION = "3.9.1"  # the 3.x line Beam 2.62's KafkaIO is built for; talks to 4.x brokers
SOURCES = ("KafkaReadRegistrar.java", "KafkaOffsets.java")
URN = "local:iotplatform:kafka_read:v1"
EXPANSION_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"
OFFSETS_MAIN = "local.iotplatform.kafka.KafkaOffsets"
# The registrar's count of the records the read handed over (KafkaReadRegistrar.java).
METRICS_NAMESPACE = "iot_relay_kafka"
RECORDS_HANDED_OVER = "records_handed_over"


class OffsetsError(RuntimeError):
    """Kafka could not say where the group stands; the message says why in one line."""


def _java_sources():
    """{file name: text} of our Java sources."""
    directory = os.path.join(os.path.dirname(__file__), "java")
    sources = {}
    for name in SOURCES:
        with open(os.path.join(directory, name), encoding="utf-8") as source:
            sources[name] = source.read()
    return sources


def jar_path(flink_version=flink_job_server.FLINK_VERSION):
    digest = hashlib.sha256("".join(_java_sources().values()).encode()).hexdigest()[:10]
    return os.path.join(JavaJarServer.JAR_CACHE,
                        f"iot-beam-runners-flink-{flink_version}-job-server-kafka-{digest}-{BEAM_VERSION}.jar")


def fetch(log=print):
    """Assemble the jar for the installed Beam into Beam's jar cache; its path. Idempotent."""
    path = beam_jars.assemble("kafka", jar_path(), _assembly(), log)
    log(f"kafka: Flink job server and expansion service with KafkaIO at {path}")
    return path


@contextlib.contextmanager
def expansion_service(timeout=60):
    """The expansion service on a free loopback port for as long as the block runs; its address. The read
    it expands runs in the runner's JVMs (EMBEDDED), so the service is needed only to build the pipeline.
    use_deprecated_read: Kafka's reader as Beam's Read primitive, which Flink runs with its own source
    (checkpoint marks finalized as checkpoints complete), not wrapped in a splittable DoFn."""
    (java,) = require("java")
    port = free_port()
    process = subprocess.Popen([java, "-cp", jar_path(), EXPANSION_MAIN, str(port),
                                "--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Kafka's expansion service did not start ({jar_path()})") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read(expansion_service, bootstrap_servers, topic, consumer_config, read_for_millis=None, stop_file=None):
    """The cross-language read: the value (bytes) of each record of `topic`, at Kafka's record time.
    Offsets are committed to the consumer group as checkpoints complete (commitOffsetsInFinalize).
    read_for_millis: stop reading that long after the runner starts the job (None: never).
    stop_file: stop reading once this file exists (where the readers run: this machine's Flink)."""
    payload = {"bootstrap_servers": bootstrap_servers, "topic": topic, "consumer_config": dict(consumer_config)}
    if read_for_millis is not None:
        payload["read_for_millis"] = int(read_for_millis)
    if stop_file is not None:
        payload["stop_file"] = stop_file
    return beam.ExternalTransform(URN, ImplicitSchemaPayloadBuilder(payload), expansion_service)


def offsets(bootstrap_servers, topic, consumer_config, timeout=60):
    """Where the group of `consumer_config` stands on `topic`: {partition: {"beginning", "end", "committed"}}
    (committed None: the group has none there), asked with the relay's own consumer settings."""
    (java,) = require("java")
    settings = [f"{key}={value}" for key, value in consumer_config.items()]
    try:
        done = subprocess.run([java, "-cp", jar_path(), OFFSETS_MAIN, bootstrap_servers, topic, *settings],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OffsetsError(f"Kafka at {bootstrap_servers} did not answer within {timeout} s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Exception" in line] or done.stderr.splitlines()[-1:]
        raise OffsetsError(errors[0].strip() if errors else f"exit status {done.returncode}")
    return {int(partition): marks for partition, marks in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def _assembly():
    sources = _java_sources()
    job_server = flink_job_server.assembly()
    return beam_jars.Assembly(
        dependencies=[*job_server.dependencies,
                      (f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_VERSION}", ["io.confluent:*"]),
                      (f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_VERSION}", []),
                      (f"com.github.jbellis:jamm:{sql_expansion.JAMM_VERSION}", [])],
        # Add-Opens: embedded Flink runs in the job server's JVM, started with java -jar, and checkpoints
        # KafkaIO's state by reflection into JDK collections, which Java 17 refuses unless opened.
        main_class=job_server.main_class,
        manifest={"Multi-Release": "true", "Add-Opens": " ".join(flink_cluster.JAVA_17_OPENS),
                  "Add-Exports": " ".join(flink_cluster.JAVA_17_EXPORTS)},
        sources={**{f"java/local/iotplatform/kafka/{name}": text for name, text in sources.items()},
                 "resources/META-INF/services/org.apache.beam.sdk.expansion.ExternalTransformRegistrar":
                     "local.iotplatform.kafka.KafkaReadRegistrar\n"},
        hint="install a Beam release whose Flink runner and KafkaIO Maven Central serves")
