"""Beam SQL's expansion service: the jar Python's SqlTransform starts, and a way to run it without Docker.

SqlTransform looks for `beam-sdks-java-extensions-sql-expansion-service-<beam>.jar` in Beam's jar cache.
Where Maven Central does not serve it, it is assembled from Beam SQL and Beam's expansion service, with
a registrar of our own (java/SqlTransformRegistrar.java) for the one class of Beam's jar that is in no
other artifact: it maps Python's SqlTransform to Java's.
"""
import os

from apache_beam.transforms.external import BeamJarExpansionService
from apache_beam.version import __version__ as BEAM_VERSION

from . import beam_jars

TARGET = ":sdks:java:extensions:sql:expansion-service:shadowJar"
MAIN_CLASS = "org.apache.beam.sdk.expansion.service.ExpansionService"
REGISTRAR = "SqlTransformRegistrar.java"
JAMM_VERSION = "0.4.0"  # the one Beam's Java SDK harness is built with


def jar_path():
    """Where SqlTransform looks for the expansion service jar."""
    return beam_jars.jar_path(TARGET)


def fetch(log=print):
    """Put the expansion service jar for the installed Beam where SqlTransform finds it; its path. Idempotent."""
    path = beam_jars.fetch("sql", TARGET, _assembly(), log)
    log(f"sql: Beam SQL's expansion service at {path}")
    return path


def without_docker():
    """The expansion service for SqlTransform(..., expansion_service=...) on runners that cannot start
    Docker containers (Flink on this machine): the Java SQL steps run in the expansion service's own JVM,
    which serves as their worker pool (an EXTERNAL environment). It then lives as long as the pipeline
    (`with beam.Pipeline(...) as p:`, or Beam's subprocess cache), as its workers must."""
    return BeamJarExpansionService(TARGET, extra_args=[
        "{{PORT}}", "--alsoStartLoopbackWorker", "--defaultEnvironmentType=EXTERNAL",
        "--defaultEnvironmentConfig=localhost:{{PORT}}"])


def _assembly():
    """Beam's sdks/java/extensions/sql/expansion-service: Beam SQL, the expansion service, the registrar."""
    with open(os.path.join(os.path.dirname(__file__), "java", REGISTRAR), encoding="utf-8") as source:
        registrar = source.read()
    return beam_jars.Assembly(
        dependencies=[(f"org.apache.beam:beam-sdks-java-extensions-sql:{BEAM_VERSION}", []),
                      (f"org.apache.beam:beam-sdks-java-expansion-service:{BEAM_VERSION}", []),
                      # Beam's Java SDK harness measures its caches with jamm, which Beam's SDK container
                      # provides: here the harness runs in the expansion service's JVM.
                      (f"com.github.jbellis:jamm:{JAMM_VERSION}", []),
                      (f"org.slf4j:slf4j-simple:{beam_jars.SLF4J_VERSION}", [])],
        main_class=MAIN_CLASS, manifest={"Multi-Release": "true"},
        sources={f"java/local/iotplatform/sql/{REGISTRAR}": registrar,
                 "resources/META-INF/services/org.apache.beam.sdk.expansion.ExternalTransformRegistrar":
                     "local.iotplatform.sql.SqlTransformRegistrar\n"},
        hint="install a Beam release whose SQL extension Maven Central serves")
