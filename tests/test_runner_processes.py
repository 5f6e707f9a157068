"""The runners' commands stop only processes they can prove are their own (issue 22), and keep their
records in a private directory."""
import os
import subprocess
import sys

import pytest

from pipelines.runners import processes


@pytest.fixture
def sleeper(tmp_path):
    """A process of ours whose command line names tmp_path, as a cluster's JVMs name their work directory."""
    process = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", str(tmp_path)])
    yield process
    process.kill()
    process.wait()


def test_a_recorded_process_is_stopped(sleeper, tmp_path):
    started = processes.Started.of(sleeper.pid, marker=str(tmp_path))
    assert started.running()
    processes.stop([started], timeout=5)
    assert sleeper.wait(5) is not None and not started.running()


@pytest.mark.parametrize("record", ["another start time", "another command line"])
def test_a_pid_that_names_another_process_is_left_alone(sleeper, tmp_path, record):
    """What a reused pid looks like: the same number, another start time or command line."""
    started = processes.Started.of(sleeper.pid, marker=str(tmp_path))
    if record == "another start time":
        started = started._replace(start_ticks=started.start_ticks - 1)
    else:
        started = started._replace(marker=str(tmp_path / "another-workdir"))
    assert not started.running()
    processes.stop([started], timeout=1)
    assert sleeper.poll() is None, "a process that was not proven ours was signalled"


def test_an_ended_process_is_not_running_and_stop_passes_it_by(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass", str(tmp_path)])
    started = processes.Started.of(process.pid, marker=str(tmp_path))
    process.wait()
    assert not started.running()
    processes.stop([started], timeout=1)


def test_state_lives_only_in_a_private_directory(tmp_path):
    private = processes.private_directory(str(tmp_path / "state"))
    assert os.stat(private).st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(processes.NotPrivate, match="not this user's private directory"):
        processes.private_directory(str(shared))
