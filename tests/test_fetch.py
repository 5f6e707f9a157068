"""Fetching what the runners need: the tests' fetch on first use is the command's, what is in place is
left as it is and said so, and a fetch started while another runs waits for it instead of fetching twice."""
import os
import subprocess
import sys
import time

import pytest

from pipelines.runners import fetching, flink_dist, flink_job_server, kafka_broker, prism, sql_expansion
from runner_support import require_flink, require_prism

pytestmark = pytest.mark.runners  # the session's fetch (tests/conftest.py) has run before these
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fetched():
    """The files `fetch all` puts in place for the installed Beam."""
    paths = [prism.archive_path()]
    if flink_job_server.served():
        paths += [flink_job_server.jar_path(), flink_dist.dist_jar(flink_job_server.flink_release()),
                  sql_expansion.jar_path(), kafka_broker.lib()]
    return paths


def test_a_fetch_of_what_is_in_place_changes_nothing_and_says_so():
    require_prism()
    if flink_job_server.served():
        require_flink()
    before = {path: os.stat(path).st_mtime_ns for path in _fetched()}
    lines = []
    fetching.fetch("all", log=lines.append)
    assert {path: os.stat(path).st_mtime_ns for path in before} == before
    assert lines and all("in place" in line or "skipped" in line or " at " in line for line in lines), lines
    assert sum("in place" in line for line in lines) >= len(before)


def test_a_fetch_started_while_another_runs_waits_for_it_then_finds_everything_in_place():
    require_prism()
    with fetching.exclusive():
        second = subprocess.Popen([sys.executable, "-m", "pipelines.runners", "fetch", "prism"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "another fetch is under way" in second.stdout.readline()
            time.sleep(1)
            assert second.poll() is None  # still waiting for the lock this test holds
        except BaseException:
            second.kill()
            raise
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    assert f"prism: in place: {prism.archive_path()}" in output
