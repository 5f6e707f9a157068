"""Flink's own distribution (flink-dist and the rest of lib/) for a session cluster, from PyPI.

PyPI's `apache-flink-libraries` carries Flink's lib/ and bin/bash-java-utils.jar for each Flink release.
`fetch(release)` unpacks those into ~/.apache_beam/cache/flink/flink-<release>/, the Flink home that
pipelines.runners.flink_cluster starts JVMs from. Nothing else of Flink (scripts, conf) is needed.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

CACHE = os.path.expanduser("~/.apache_beam/cache/flink")
PACKAGE = "apache-flink-libraries"


class FetchError(RuntimeError):
    """The distribution could not be fetched; the message says why in one line."""


def home(release):
    return os.path.join(CACHE, f"flink-{release}")


def dist_jar(release):
    return os.path.join(home(release), "lib", f"flink-dist-{release}.jar")


def fetch(release, log=print):
    """Unpack Flink `release`'s lib/ and bin/ from PyPI into its home; the home. Idempotent."""
    target = home(release)
    if os.path.exists(dist_jar(release)):
        log(f"flink: distribution {release} in place: {target}")
        return target
    with tempfile.TemporaryDirectory(prefix="flink-dist-") as work:
        log(f"flink: downloading {PACKAGE}=={release} from PyPI (about 230 MB)")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--dest", work, f"{PACKAGE}=={release}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise FetchError(f"pip could not download {PACKAGE}=={release}: {done.stdout.strip().splitlines()[-1]}")
        (archive,) = [name for name in os.listdir(work) if name.endswith(".tar.gz")]
        unpacked = os.path.join(work, "home")
        with tarfile.open(os.path.join(work, archive)) as sdist:
            for member in sdist.getmembers():
                parts = member.name.split("/")
                if len(parts) >= 4 and parts[1] == "deps" and parts[2] in ("lib", "bin") and member.isfile():
                    member.name = "/".join(parts[2:])
                    sdist.extract(member, unpacked, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(CACHE, exist_ok=True)
        shutil.move(unpacked, target)
    log(f"flink: distribution {release} at {target}")
    return target
