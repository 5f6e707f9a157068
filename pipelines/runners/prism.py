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

from .tools import require, run

PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


class FetchError(RuntimeError):
    """Prism could not be built; the message says why in one line."""


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
