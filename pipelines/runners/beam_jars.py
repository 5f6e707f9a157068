"""Beam's Java services (the Flink job server, Beam SQL's expansion service) as the jars Beam looks for.

Beam looks for each in ~/.apache_beam/cache/jars under its own name and downloads it from a fixed URL
when it is missing, which fails offline. `fetch()` puts it there: copied with Maven where Maven Central
serves it, else assembled from its dependencies the way Beam's build makes it (one shaded jar with
service files and reference.conf merged, and its main class).
"""
import os
import re
import shutil
import tempfile
from typing import NamedTuple

from apache_beam.utils.subprocess_server import JavaJarServer
from apache_beam.version import __version__ as BEAM_VERSION

from .tools import require, run

SLF4J_VERSION = "1.7.36"  # the 1.7 line, as Beam's Java SDK logs with slf4j-api 1.7


class FetchError(RuntimeError):
    """A jar could not be fetched; the message says why in one line."""


class Assembly(NamedTuple):
    """How to build a jar Maven Central does not serve: its dependencies ("group:artifact:version",
    each with the "group:artifact"s to leave out), main class, extra manifest entries, and files of
    our own to compile into it (path under src/main -> text)."""

    dependencies: list[tuple[str, list[str]]]
    main_class: str
    manifest: dict[str, str]
    sources: dict[str, str]
    hint: str  # what to do when Maven cannot build it either


def jar_path(gradle_target):
    """Where Beam looks for the jar of a Gradle target of its own (e.g. ":runners:flink:1.19:job-server:shadowJar")."""
    return os.path.join(JavaJarServer.JAR_CACHE, os.path.basename(JavaJarServer.path_to_beam_jar(gradle_target)))


def fetch(name, gradle_target, assembly, log=print):
    """Put the jar of `gradle_target` for the installed Beam where Beam finds it; its path. Idempotent."""
    path = jar_path(gradle_target)
    if os.path.exists(path):
        log(f"{name}: in place: {path}")
        return path
    mvn, _ = require("mvn", "java")
    artifact = os.path.basename(path)[:-len(f"-{BEAM_VERSION}.jar")]
    with tempfile.TemporaryDirectory(prefix=f"{artifact}-") as work:
        log(f"{name}: fetching org.apache.beam:{artifact}:{BEAM_VERSION} with Maven")
        ok, _ = run([mvn, "-B", "-q", "dependency:copy", f"-Dartifact=org.apache.beam:{artifact}:{BEAM_VERSION}",
                     f"-DoutputDirectory={work}"])
        built = os.path.join(work, os.path.basename(path))
        if not ok:
            log(f"{name}: Maven Central does not serve {artifact}:{BEAM_VERSION}; assembling it from "
                f"{', '.join(coordinates for coordinates, _ in assembly.dependencies)}")
            built = _assemble(mvn, artifact, assembly, work)
        _put(built, path)
    return path


def assemble(name, path, assembly, log=print):
    """Build a jar of our own (no Maven artifact of that name exists) at `path`; its path. Idempotent."""
    if os.path.exists(path):
        log(f"{name}: in place: {path}")
        return path
    mvn, _ = require("mvn", "java")
    artifact = os.path.basename(path)[:-len(f"-{BEAM_VERSION}.jar")]
    with tempfile.TemporaryDirectory(prefix=f"{artifact}-") as work:
        log(f"{name}: assembling {os.path.basename(path)} from "
            f"{', '.join(coordinates for coordinates, _ in assembly.dependencies)}")
        _put(_assemble(mvn, artifact, assembly, work), path)
    return path


def _put(built, path):
    """Move a built jar into place whole, so that a reader never sees half of it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.move(built, path + ".part")
    os.replace(path + ".part", path)


def _assemble(mvn, artifact, assembly, work):
    for relative, text in assembly.sources.items():
        os.makedirs(os.path.dirname(os.path.join(work, "src", "main", relative)), exist_ok=True)
        with open(os.path.join(work, "src", "main", relative), "w", encoding="utf-8") as source:
            source.write(text)
    with open(os.path.join(work, "pom.xml"), "w", encoding="utf-8") as pom:
        pom.write(_pom(artifact, assembly))
    ok, output = run([mvn, "-B", "-q", "-Dstyle.color=never", "package"], cwd=work)
    if not ok:
        raise FetchError(f"Maven could not assemble {artifact} for Beam {BEAM_VERSION}: {_first_error(output)} "
                         f"({assembly.hint})")
    return os.path.join(work, "target", f"{artifact}-{BEAM_VERSION}.jar")


def _first_error(output):
    """The line of Maven's output that says what failed: a missing artifact, else the first error."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [line for line in lines if "Could not find artifact" in line]
    errors += [line for line in lines if line.startswith("[ERROR]") and "COMPILATION ERROR" not in line
               and line != "[ERROR]"]
    return (errors or ["see mvn output"])[0]


def _pom(artifact, assembly):
    dependencies = "\n".join(_DEPENDENCY.format(*coordinates.split(":"), exclusions="".join(
        _EXCLUSION.format(*excluded.split(":")) for excluded in excluding))
        for coordinates, excluding in assembly.dependencies)
    manifest = "".join(f"<{key}>{value}</{key}>" for key, value in assembly.manifest.items())
    return _POM.format(artifact=artifact, beam=BEAM_VERSION, dependencies=dependencies, main=assembly.main_class,
                       manifest=manifest)


_DEPENDENCY = """    <dependency>
      <groupId>{0}</groupId><artifactId>{1}</artifactId><version>{2}</version>
      <exclusions>{exclusions}</exclusions>
    </dependency>"""
_EXCLUSION = "<exclusion><groupId>{0}</groupId><artifactId>{1}</artifactId></exclusion>"

# Shaded into one jar as Beam's build makes its services: signatures dropped, service files and
# reference.conf merged, the main class in the manifest. Our sources for Java 11, the oldest Beam 2.62
# runs on.
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.iot-platform-beam-connector</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{beam}</version>
  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <dependencies>
{dependencies}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId><artifactId>maven-compiler-plugin</artifactId><version>3.13.0</version>
        <configuration><release>11</release></configuration>
      </plugin>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId><artifactId>maven-shade-plugin</artifactId><version>3.6.0</version>
        <executions>
          <execution>
            <phase>package</phase><goals><goal>shade</goal></goals>
            <configuration>
              <createDependencyReducedPom>false</createDependencyReducedPom>
              <filters><filter><artifact>*:*</artifact><excludes>
                <exclude>META-INF/*.SF</exclude><exclude>META-INF/*.DSA</exclude><exclude>META-INF/*.RSA</exclude>
              </excludes></filter></filters>
              <transformers>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
                <transformer implementation="org.apache.maven.plugins.shade.resource.AppendingTransformer">
                  <resource>reference.conf</resource>
                </transformer>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ManifestResourceTransformer">
                  <mainClass>{main}</mainClass>
                  <manifestEntries>{manifest}</manifestEntries>
                </transformer>
              </transformers>
            </configuration>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""
