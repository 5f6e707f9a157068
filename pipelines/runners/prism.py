"""Beam's Prism runner: built with `go install` from Beam's Go module, at the installed Beam's version.

PrismRunner looks for the release archive it would download from GitHub in ~/.apache_beam/cache/prism/bin.
`fetch()` builds the binary and puts it there under the archive's name (the name Beam's own code gives),
so `--runner=PrismRunner` works offline with no further option. It is stored as the binary itself, not
zipped: Beam uses a file there that is not a zip as it is, whereas it extracts an archive again at every
run, over the binary a previous run's Prism may still be executing ("Text file busy").
"""
import os
import shutil
import stat
import tempfile

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.prism_runner import PrismJobServer
from apache_beam.version import __version__ as BEAM_VERSION

from .tools import beam_release, require, run

PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
# The first Beam release whose Prism keeps real processing time in streaming (earlier ones fire a
# processing-time timer as soon as nothing else can run, and 2.62's ran a stateful stage's key in two
# bundles at once: docs/runners.md).
REAL_TIME_SINCE = (2, 66)
# Prism splits a bundle that makes no progress and frees every key of the part it hands back, also a
# key whose earlier records the running part still processes: a second bundle of that key then runs at
# the same time, and the state one of them commits overwrites the other's. The relay lost 1 to 111
# readings of 1,500 to 4,000 that way in 4 runs of 6 on Prism 2.77, and 18 to 112 of 3,000 in 3 runs of
# 9 on 2.78 (which keeps some such keys busy, not all), sending others twice; with this experiment of
# Prism's (no splits) it was exact in every run.
NO_SPLITS = "prism_disable_sdf_split"


class FetchError(RuntimeError):
    """Prism could not be built; the message says why in one line."""


def streams_in_real_time(version=BEAM_VERSION):
    """Whether the installed Beam's Prism runs streaming pipelines in real processing time: the relay
    and the sink's streaming tests are run on it then."""
    return beam_release(version) >= REAL_TIME_SINCE


def for_stateful_streaming(argv):
    """A stateful streaming pipeline (the sink's streaming mode) on the installed Beam's Prism: the
    options to add to argv, and one line saying what to expect there."""
    if not streams_in_real_time():
        return [], (f"warning: Prism {BEAM_VERSION} runs a stateful streaming stage's elements twice and one key "
                    "in two bundles at once: records are duplicated and lost there (see docs/runners.md)")
    if any(NO_SPLITS in arg for arg in argv):
        return [], f"Prism {BEAM_VERSION}, its bundles not split ({NO_SPLITS})"
    return [f"--experiments={NO_SPLITS}"], (
        f"Prism {BEAM_VERSION}: its bundles are not split (--experiments={NO_SPLITS}): a split there lets two "
        "bundles of one key run at once, which loses and duplicates records (see docs/runners.md)")


def archive_path():
    """Where PrismRunner looks for its release archive: Beam's own naming, from its own code."""
    url = PrismJobServer(PipelineOptions([])).path_to_binary()
    return os.path.join(PrismJobServer.BIN_CACHE, os.path.basename(url))


def fetch(log=print):
    """Build Prism for the installed Beam and put it where PrismRunner finds it; its path. Idempotent."""
    path = archive_path()
    if os.path.exists(path):
        log(f"prism: in place: {path}")
        return path
    (go,) = require("go")
    with tempfile.TemporaryDirectory(prefix="prism-") as work:
        env = dict(os.environ, GOBIN=work)
        log(f"prism: go install {PACKAGE}@v{BEAM_VERSION}")
        ok, output = run([go, "install", f"{PACKAGE}@v{BEAM_VERSION}"], env=env)
        if not ok and "verifying module" in output:
            # The checksum database does not list every Beam release; the module proxy still serves it.
            log("prism: the Go checksum database does not list this Beam release; building it unverified "
                "by the checksum database (GONOSUMDB=github.com/apache/beam; its dependencies are still checked)")
            ok, output = run([go, "install", f"{PACKAGE}@v{BEAM_VERSION}"],
                             env=dict(env, GONOSUMDB="github.com/apache/beam"))
        if not ok:
            raise FetchError(f"go install of Prism v{BEAM_VERSION} failed: {output.strip().splitlines()[-1]}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(os.path.join(work, "prism"), path + ".part")
        os.chmod(path + ".part", os.stat(path + ".part").st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(path + ".part", path)
    log(f"prism: built at {path}")
    return path
