"""Beam's Flink job server: the jar FlinkRunner starts, fetched with Maven into Beam's jar cache.

FlinkRunner looks for `beam-runners-flink-<flink>-job-server-<beam>.jar` in ~/.apache_beam/cache/jars
and downloads it from a fixed URL when it is missing, which fails offline. `fetch()` puts it there.
Where Maven Central serves the job server itself, that is the jar; where it serves only the Flink runner
(`beam-runners-flink-<flink>`), the jar is assembled from it and its dependencies the way Beam's build
makes the job server (one shaded jar, its main class FlinkJobServerDriver, slf4j-simple for its logs).
"""
import zipfile

from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.version import __version__ as BEAM_VERSION

from . import beam_jars
from .tools import beam_release

# What --flink_version defaults to in the installed Beam, and so the jar FlinkRunner looks for.
FLINK_VERSION = FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS[-1]
MAIN_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
# The newest Beam release whose Flink runner Maven Central serves with all its dependencies (checked on
# 2026-12-05, when PyPI served 2.77.0 and Maven Central's newest Beam Java SDK was 2.76.0).
NEWEST_SERVED = "2.62.0"


def served(version=BEAM_VERSION):
    """Whether Maven Central is known to serve the Flink runner of this Beam release (`fetch flink` tries
    any release; this says which ones the tests and `fetch all` expect it for)."""
    return beam_release(version) <= beam_release(NEWEST_SERVED)


def not_served():
    """Why the installed Beam has no Flink runner here, in one line."""
    return (f"Maven Central serves no Flink runner for Beam {BEAM_VERSION} ({NEWEST_SERVED} is the newest it serves "
            f"whole); Flink is tested on Beam {NEWEST_SERVED}: pip install -e '.[flink]'")



def jar_path(flink_version=FLINK_VERSION):
    """Where FlinkRunner looks for the job server jar: Beam's own naming, from its own code."""
    return beam_jars.jar_path(_target(flink_version))


def fetch(flink_version=FLINK_VERSION, log=print):
    """Put the job server jar for the installed Beam where FlinkRunner finds it; its path. Idempotent."""
    path = beam_jars.fetch("flink", _target(flink_version), assembly(flink_version), log)
    log(f"flink: job server for Flink {flink_release(path)} at {path}")
    return path


def flink_release(path=None):
    """The Flink release a job server jar was built with (e.g. "1.19.0"), read from the jar the way Flink
    itself reads its version."""
    with zipfile.ZipFile(path or jar_path()) as jar:
        properties = jar.read(".flink-runtime.version.properties").decode()
    return next(line.split("=", 1)[1].strip() for line in properties.splitlines()
                if line.startswith("project.version="))


def _target(flink_version):
    return f":runners:flink:{flink_version}:job-server:shadowJar"


def assembly(flink_version=FLINK_VERSION):
    """The job server as Beam's build makes it (runners/flink/job-server): the runner, jcl-over-slf4j in
    place of commons-logging, slf4j-simple."""
    return beam_jars.Assembly(
        dependencies=[(f"org.apache.beam:beam-runners-flink-{flink_version}:{BEAM_VERSION}",
                       ["commons-logging:commons-logging"]),
                      (f"org.slf4j:jcl-over-slf4j:{beam_jars.SLF4J_VERSION}", []),
                      (f"org.slf4j:slf4j-simple:{beam_jars.SLF4J_VERSION}", [])],
        main_class=MAIN_CLASS, manifest={}, sources={},
        hint="install a Beam release whose Flink runner Maven Central serves; see docs/runners.md")
