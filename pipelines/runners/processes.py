"""The long-lived processes the runners' commands start (a Flink cluster's JVMs, a Kafka broker), found
again and stopped by a later command, which signals only a process it can prove is still its own.

A pid alone proves nothing: once a process ends, the kernel hands its number to the next one. So each
is recorded with its start time as the kernel counts it (/proc/PID/stat) and a word its command line
must hold (the work directory it was started for); both must match before it is signalled. The record
lives in a private directory (the user's own, mode 0700), never in a shared /tmp path that anyone could
write pids into.
"""
import json
import os
import signal
import socket
import stat
import time
from typing import NamedTuple

STATE_HOME = os.path.join(os.path.expanduser("~"), ".iot-platform-beam")


class NotPrivate(RuntimeError):
    """A state directory someone else could write to; the message says which and why, in one line."""


def private_directory(path):
    """`path`, made if missing (mode 0700), after checking that only this user can write in it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NotPrivate(f"{path} is not this user's private directory (owner uid {info.st_uid}, mode "
                         f"{stat.filemode(info.st_mode)}): choose another, or chmod 700 it")
    return path


def save_record(path, state):
    """Write a JSON record (readable by this user only), whole or not at all."""
    private = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(private, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(path + ".part", path)


def load_record(workdir, name, error, what):
    """The JSON record `name` a `start` saved in the private directory `workdir`; raises `error` (an
    exception class) saying no `what` was started there, or that the directory is not private."""
    try:
        private_directory(workdir)
        with open(os.path.join(workdir, name), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise error(f"no {what} was started from {workdir}") from None
    except NotPrivate as problem:
        raise error(str(problem)) from None


def wait_listening(process, port, timeout, poll=0.1):
    """Wait until `process` (a Popen) accepts connections on 127.0.0.1:`port`: "listening", "ended" (it
    exited first; its returncode says how) or "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "ended"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return "listening"
        except OSError:
            time.sleep(poll)
    return "timeout"


class Started(NamedTuple):
    """A process as started: its pid, the kernel's start time for it, and a word of its command line."""

    pid: int
    start_ticks: int
    marker: str

    @classmethod
    def of(cls, pid, marker):
        ticks = _start_ticks(pid)
        if ticks is None:
            raise ProcessLookupError(f"process {pid} ended as it started")
        return cls(pid, ticks, marker)

    def running(self):
        """Whether this very process still runs: same pid, same start time, the marker in its command line
        (a zombie child of this process counts as ended)."""
        _reap(self.pid)
        if _start_ticks(self.pid) != self.start_ticks:
            return False
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as handle:
                command = handle.read().decode(errors="replace").replace("\0", " ")
        except OSError:
            return False
        return self.marker in command


def stop(processes, timeout=20):
    """SIGTERM each of `processes` (Started) that is still running, SIGKILL any left after `timeout`
    seconds. Processes that ended, or whose pid now names another process, are left alone."""
    ours = [process for process in processes if process.running()]
    for process in ours:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(process.running() for process in ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in ours:
        if process.running():
            _signal(process, signal.SIGKILL)


def _signal(process, signum):
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        pass  # ended between the check and the signal


def _start_ticks(pid):
    """The process's start time after boot in clock ticks (/proc/PID/stat, field 22), or None if none runs."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return None
    state, ticks = fields[0], fields[19]  # fields 3 and 22
    return None if state in ("Z", "X") else int(ticks)


def _reap(pid):
    """Collect a child of this process that has ended, so that it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child
