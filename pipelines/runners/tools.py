"""The programs the runners are fetched and run with (java, mvn, go), running them, a free port on
loopback for what they serve, and the installed Beam's release."""
import shutil
import socket
import subprocess

from apache_beam.version import __version__ as BEAM_VERSION


class MissingTool(RuntimeError):
    """A program a runner needs is not on PATH; the message names it, in one line."""


def require(*names):
    """The path of each program, or MissingTool naming the first one that is not on PATH."""
    paths = []
    for name in names:
        path = shutil.which(name)
        if path is None:
            raise MissingTool(f"'{name}' is not on PATH: install it ({_WHAT[name]}) and try again")
        paths.append(path)
    return paths


_WHAT = {"java": "a Java 11 or 17 runtime", "mvn": "Apache Maven", "go": "Go 1.21 or newer"}


def missing(*names):
    """The names among `names` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


def run(command, *, cwd=None, env=None):
    """Run a command; (ok, its output) with stderr folded in, for the caller to explain a failure."""
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.returncode == 0, done.stdout


def free_port():
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def beam_release(version=BEAM_VERSION):
    """A Beam version as numbers to compare ("2.77.0" -> (2, 77, 0); "2.78.0rc1" -> (2, 78))."""
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())
