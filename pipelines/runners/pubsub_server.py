"""Google's in-memory Pub/Sub server for tests (pstest) on this machine, for the relay's Pub/Sub source.

Google's own emulator ships only with gcloud. `fetch()` builds the few lines of Go in go/pubsub (the
module versions pinned in their go.mod and go.sum, fetched from the Go module proxy) with `go build`
into ~/.apache_beam/cache/pubsub; nothing prebuilt is downloaded. `PubSubServer(workdir).start()` runs
it on a free loopback port: clients (google-cloud-pubsub, Beam's ReadFromPubSub) reach it with
PUBSUB_EMULATOR_HOST set to its `emulator_host`. Its topics and subscriptions live in its memory, and
`create()` makes them. Its process is recorded in the work directory (private:
~/.iot-platform-beam/pubsub by default), so `status` and `stop` work from another command, and `stop`
signals only the process it can prove it started.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile

from . import processes
from .tools import free_port, require, run

SOURCE = os.path.join(os.path.dirname(__file__), "go", "pubsub")
CACHE = os.path.expanduser("~/.apache_beam/cache/pubsub")
DEFAULT_WORKDIR = os.path.join(processes.STATE_HOME, "pubsub")


class FetchError(RuntimeError):
    """The server could not be built; the message says why in one line."""


class ServerError(RuntimeError):
    """The server did not start or is not there; the message says why in one line."""


def binary_path():
    """Where the server is built: its name carries a digest of its sources and pinned versions, so a
    changed one is built again rather than a stale one reused."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(SOURCE)):
        with open(os.path.join(SOURCE, name), "rb") as source:
            digest.update(name.encode() + b"\0" + source.read())
    return os.path.join(CACHE, f"pubsub-server-{digest.hexdigest()[:10]}")


def fetch(log=print):
    """Build the server with go build; its path. Idempotent."""
    path = binary_path()
    if os.path.exists(path):
        log(f"pubsub: in place: {path}")
        return path
    (go,) = require("go")
    with tempfile.TemporaryDirectory(prefix="pubsub-server-") as work:
        module = os.path.join(work, "pubsub")
        shutil.copytree(SOURCE, module)
        log("pubsub: go build of Google's Pub/Sub test server (cloud.google.com/go/pubsub/v2/pstest)")
        ok, output = run([go, "build", "-o", os.path.join(work, "pubsub-server"), "."], cwd=module)
        if not ok:
            raise FetchError(f"go build of the Pub/Sub test server failed: {output.strip().splitlines()[-1:]}")
        os.makedirs(CACHE, exist_ok=True)
        shutil.move(os.path.join(work, "pubsub-server"), path + ".part")
        os.replace(path + ".part", path)
    log(f"pubsub: Google's Pub/Sub test server at {path}")
    return path


class PubSubServer:
    """The Pub/Sub test server whose log and process record live in `workdir`."""

    def __init__(self, workdir=DEFAULT_WORKDIR):
        self.workdir = os.path.abspath(workdir)
        self.port = None
        self.process = None  # processes.Started

    @property
    def emulator_host(self):
        """What PUBSUB_EMULATOR_HOST must say for clients to use this server."""
        return f"127.0.0.1:{self.port}"

    @classmethod
    def load(cls, workdir=DEFAULT_WORKDIR):
        """The server a `start` left in `workdir`, or ServerError."""
        server = cls(workdir)
        state = processes.load_record(server.workdir, "server.json", ServerError, "Pub/Sub server")
        server.port = state["port"]
        server.process = processes.Started(*state["process"]) if state["process"] else None
        return server

    def running(self):
        return self.process is not None and self.process.running()

    def start(self, timeout=30):
        """Start the server on a free loopback port; returns once it accepts connections."""
        path = binary_path()
        if not os.path.exists(path):
            raise ServerError("the Pub/Sub test server is not built: run python -m pipelines.runners fetch pubsub")
        try:
            processes.private_directory(self.workdir)
        except processes.NotPrivate as error:
            raise ServerError(str(error)) from None
        if os.path.exists(os.path.join(self.workdir, "server.json")) and PubSubServer.load(self.workdir).running():
            raise ServerError(f"a Pub/Sub server of {self.workdir} is running: stop it first, or choose --workdir")
        self.port = free_port()
        log = os.path.join(self.workdir, "server.log")
        with open(log, "ab") as out:
            process = subprocess.Popen([path, "-port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)  # outlives its command
        self.process = processes.Started.of(process.pid, marker=path)
        self._save()
        state = processes.wait_listening(process, self.port, timeout)
        if state == "listening":
            return self
        if state == "ended":
            raise ServerError(f"the Pub/Sub server ended as it started (exit status {process.returncode}); "
                              f"its log: {log}")
        self.stop()
        raise ServerError(f"the Pub/Sub server did not start listening within {timeout} s; its log: {log}")

    def create(self, project, topic, subscription):
        """Create a topic and a pull subscription to it (google-cloud-pubsub, which apache-beam[gcp]
        brings); the subscription's path, as --input_subscription takes it."""
        try:
            from google.cloud import pubsub_v1
        except ImportError:
            raise ServerError("creating topics needs google-cloud-pubsub: pip install 'apache-beam[gcp]'") from None
        previous = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.emulator_host
        try:
            publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
            topic_path = publisher.topic_path(project, topic)
            subscription_path = subscriber.subscription_path(project, subscription)
            publisher.create_topic(name=topic_path)
            subscriber.create_subscription(name=subscription_path, topic=topic_path)
            subscriber.close()
        finally:
            if previous is None:
                del os.environ["PUBSUB_EMULATOR_HOST"]
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
        return subscription_path

    def stop(self, timeout=10):
        """Stop the server if it is still the process started here; what it held is gone."""
        if self.process is not None:
            processes.stop([self.process], timeout)
        self.process = None
        self._save()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _save(self):
        state = {"port": self.port, "process": list(self.process) if self.process else None}
        processes.save_record(os.path.join(self.workdir, "server.json"), state)
