"""Beam's Flink job server: the jar FlinkRunner starts, fetched with Maven into Beam's jar cache.

FlinkRunner looks for `beam-runners-flink-<flink>-job-server-<beam>.jar` in ~/.apache_beam/cache/jars
and downloads it from a fixed URL when it is missing, which fails offline. `fetch()` puts it there.
Where Maven Central serves the job server itself, that is the jar; where it serves only the Flink runner
(`beam-runners-flink-<flink>`), the jar is assembled from it and its dependencies the way Beam's build
makes the job server (one shaded jar, its main class FlinkJobServerDriver, slf4j-simple for its logs).
"""
import os
import shutil
import tempfile
import zipfile

from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.utils.subprocess_server import JavaJarServer
from apache_beam.version import __version__ as BEAM_VERSION

from .tools import require, run

# What --flink_version defaults to in the installed Beam, and so the jar FlinkRunner looks for.
FLINK_VERSION = FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS[-1]
MAIN_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
SLF4J_VERSION = "1.7.36"  # the 1.7 line, as Beam's Java SDK logs with slf4j-api 1.7


class FetchError(RuntimeError):
    """The job server could not be fetched; the message says why in one line."""


def jar_path(flink_version=FLINK_VERSION):
    """Where FlinkRunner looks for the job server jar: Beam's own naming, from its own code."""
    url = JavaJarServer.path_to_beam_jar(f":runners:flink:{flink_version}:job-server:shadowJar")
    return os.path.join(JavaJarServer.JAR_CACHE, os.path.basename(url))


def fetch(flink_version=FLINK_VERSION, log=print):
    """Put the job server jar for the installed Beam where FlinkRunner finds it; its path. Idempotent."""
    path = jar_path(flink_version)
    if os.path.exists(path):
        log(f"flink: job server in place: {path}")
        return path
    mvn, _ = require("mvn", "java")
    artifact = f"beam-runners-flink-{flink_version}-job-server"
    with tempfile.TemporaryDirectory(prefix="flink-job-server-") as work:
        log(f"flink: fetching org.apache.beam:{artifact}:{BEAM_VERSION} with Maven")
        ok, _ = run([mvn, "-B", "-q", "dependency:copy", f"-Dartifact=org.apache.beam:{artifact}:{BEAM_VERSION}",
                     f"-DoutputDirectory={work}"])
        built = os.path.join(work, f"{artifact}-{BEAM_VERSION}.jar")
        if not ok:
            log(f"flink: Maven Central does not serve {artifact}:{BEAM_VERSION}; assembling it from "
                f"beam-runners-flink-{flink_version}:{BEAM_VERSION} and its dependencies")
            built = _assemble(mvn, flink_version, work)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(built, path + ".part")
        os.replace(path + ".part", path)
    log(f"flink: job server for Flink {flink_release(path)} at {path}")
    return path


def flink_release(path=None):
    """The Flink release a job server jar was built with (e.g. "1.19.0"), read from the jar the way Flink
    itself reads its version."""
    with zipfile.ZipFile(path or jar_path()) as jar:
        properties = jar.read(".flink-runtime.version.properties").decode()
    return next(line.split("=", 1)[1].strip() for line in properties.splitlines()
                if line.startswith("project.version="))


def _assemble(mvn, flink_version, work):
    with open(os.path.join(work, "pom.xml"), "w", encoding="utf-8") as pom:
        pom.write(_POM.format(flink=flink_version, beam=BEAM_VERSION, slf4j=SLF4J_VERSION, main=MAIN_CLASS))
    ok, output = run([mvn, "-B", "-q", "package"], cwd=work)
    if not ok:
        missing = [line for line in output.splitlines() if "Could not find artifact" in line or "[ERROR]" in line]
        raise FetchError(f"Maven could not assemble the Flink {flink_version} job server for Beam {BEAM_VERSION}: "
                         f"{(missing or ['see mvn output'])[0].strip()} (install a Beam release whose Flink runner "
                         f"Maven Central serves; see the README's Runners section)")
    return os.path.join(work, "target", f"beam-runners-flink-{flink_version}-job-server-{BEAM_VERSION}.jar")


# The job server as Beam's build makes it (runners/flink/job-server): the runner, jcl-over-slf4j in place
# of commons-logging, slf4j-simple; shaded into one jar with service files and reference.conf merged.
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.iot-platform-beam-connector</groupId>
  <artifactId>beam-runners-flink-{flink}-job-server</artifactId>
  <version>{beam}</version>
  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-{flink}</artifactId><version>{beam}</version>
      <exclusions><exclusion><groupId>commons-logging</groupId><artifactId>commons-logging</artifactId></exclusion></exclusions>
    </dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>jcl-over-slf4j</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{slf4j}</version></dependency>
  </dependencies>
  <build>
    <plugins>
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
