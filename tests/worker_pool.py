"""An external SDK worker pool: the way Flink and Dataflow run Python code, started for a test."""
import os
import socket
import subprocess
import sys
import tempfile
import time

from pipelines.runners.tools import free_port


class WorkerPool:
    """worker_pool_main in a subprocess; workers it starts run the `python` first on PATH."""

    def __init__(self):
        self.port = free_port()
        env = dict(os.environ)
        # Workers are started as `python ...`: this interpreter's bin must come first on PATH.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        self._log = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={self.port}"], env=env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("the SDK worker pool did not start listening within 30 s")

    @property
    def environment(self):
        """The options that send a portable runner's Python code to this pool."""
        return ["--environment_type=EXTERNAL", f"--environment_config=localhost:{self.port}"]

    @property
    def options(self):
        return ["--runner=PortableRunner", "--job_endpoint=embed", *self.environment]

    def workers_started(self):
        """How many SDK worker processes the pool has started so far (from its log)."""
        self._log.seek(0)
        return self._log.read().count("Starting worker with command")

    def close(self):
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
