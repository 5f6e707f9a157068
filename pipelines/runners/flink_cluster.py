"""A Flink session cluster on this machine: a JobManager and N TaskManagers, each its own JVM, on loopback.

Started from the distribution of the Flink release the job server was built with (flink_dist), the way
Flink's own scripts start them (BashJavaUtils sizes each JVM from the configuration), with a
configuration written for a small machine: 1 GB for the JobManager, 2 GB and 2 slots per TaskManager,
heap state with checkpoints in the work directory, a fixed-delay restart strategy, and heartbeats short
enough that a lost TaskManager is noticed in seconds. Its processes are recorded in the work directory
(a private one: ~/.iot-platform-beam/flink-cluster by default), so `stop` and `status` work from another
process; `stop` signals only the JVMs it can prove are still the ones it started (processes.Started). Jobs reach it with
`--runner=FlinkRunner --flink_master=localhost:<rest port>`.
"""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

from . import flink_dist, processes
from .tools import require

DEFAULT_WORKDIR = os.path.join(processes.STATE_HOME, "flink-cluster")
DEFAULT_REST_PORT = 8081
DEFAULT_RPC_PORT = 6123
ENTRY_POINTS = {"jobmanager": "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                "taskmanager": "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"}
# What Flink's default configuration passes to every JVM so that it runs on Java 17: these packages
# exported and opened to code on the class path (Flink serializes JDK collections by reflection).
JAVA_17_EXPORTS = ["java.base/sun.net.util", "java.rmi/sun.rmi.registry", "java.security.jgss/sun.security.krb5"]
JAVA_17_OPENS = [f"java.base/{name}" for name in (
    "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text", "java.time",
    "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks")]
JAVA_17_OPTIONS = ([f"--add-exports={name}=ALL-UNNAMED" for name in JAVA_17_EXPORTS]
                   + [f"--add-opens={name}=ALL-UNNAMED" for name in JAVA_17_OPENS])
LOG4J = """rootLogger.level = INFO
rootLogger.appenderRef.file.ref = File
appender.file.name = File
appender.file.type = File
appender.file.fileName = ${sys:log.file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""


class ClusterError(RuntimeError):
    """The cluster did not start or is not there; the message says why in one line."""


class FlinkCluster:
    """A session cluster of Flink `release` whose state lives in `workdir`."""

    def __init__(self, release, workdir=DEFAULT_WORKDIR, rest_port=DEFAULT_REST_PORT, slots=2,
                 rpc_port=DEFAULT_RPC_PORT):
        self.release, self.workdir, self.rest_port, self.slots = release, os.path.abspath(workdir), rest_port, slots
        self.rpc_port = rpc_port
        self.jobmanager = None  # pid
        self.taskmanagers = []  # pids, in start order
        self._started = {}  # pid -> processes.Started, what proves a pid is still the JVM started here

    @classmethod
    def load(cls, workdir=DEFAULT_WORKDIR):
        """The cluster a `start` left in `workdir`, or ClusterError."""
        state = processes.load_record(workdir, "cluster.json", ClusterError, "Flink cluster")
        cluster = cls(state["release"], workdir, state["rest_port"], state["slots"], state["rpc_port"])
        cluster.jobmanager, cluster.taskmanagers = state["jobmanager"], state["taskmanagers"]
        cluster._started = {started[0]: processes.Started(*started) for started in state["started"]}
        return cluster

    @property
    def master(self):
        """What --flink_master takes."""
        return f"localhost:{self.rest_port}"

    def start(self, taskmanagers=2, timeout=120):
        """Write the configuration, start the JobManager and `taskmanagers` TaskManagers, and wait until
        every TaskManager has registered."""
        if not os.path.exists(flink_dist.dist_jar(self.release)):
            raise ClusterError(f"Flink {self.release} is not fetched: run python -m pipelines.runners fetch flink")
        require("java")
        for port in (self.rest_port, self.rpc_port):
            if not _free(port):
                raise ClusterError(f"port {port} on localhost is taken (another Flink cluster?): choose "
                                   f"--rest-port and --rpc-port, or stop that one")
        try:
            processes.private_directory(self.workdir)
        except processes.NotPrivate as error:
            raise ClusterError(str(error)) from None
        for name in ("conf", "log", "checkpoints"):
            os.makedirs(os.path.join(self.workdir, name), exist_ok=True)
        self._write_configuration()
        self.jobmanager = self._start("jobmanager")
        self._save()
        self._wait(lambda overview: overview is not None, timeout, "the JobManager's REST endpoint")
        for _ in range(taskmanagers):
            self.start_taskmanager(wait=False)
        self._wait(lambda overview: overview and overview["taskmanagers"] >= taskmanagers, timeout,
                   f"{taskmanagers} TaskManagers to register")
        return self

    def start_taskmanager(self, wait=True, timeout=120):
        """Start one more TaskManager; its pid. With wait, until it has registered with the JobManager."""
        name = f"taskmanager-{len(self.taskmanagers)}"
        pid = self._start("taskmanager", len(self.taskmanagers))
        self.taskmanagers.append(pid)
        self._save()
        if wait:
            self._wait(lambda overview: overview and any(tm["id"] == name for tm in self._registered()), timeout,
                       f"{name} to register")
        return pid

    def live_taskmanagers(self):
        return [pid for pid in self.taskmanagers if self._running(pid)]

    def _running(self, pid):
        return pid in self._started and self._started[pid].running()

    def busy_taskmanagers(self):
        """The pids of the TaskManagers that run part of a job (some of their slots are taken)."""
        busy = {tm["id"] for tm in self._registered() if tm["freeSlots"] < tm["slotsNumber"]}
        return [pid for number, pid in enumerate(self.taskmanagers) if f"taskmanager-{number}" in busy]

    def _registered(self):
        """The TaskManagers the JobManager knows of (dicts; their "id" is the name given at start)."""
        return self.rest("/taskmanagers")["taskmanagers"]

    def rest(self, path, timeout=5):
        """GET one of the JobManager's REST resources (/overview, /jobs, /jobs/<id>/checkpoints...) as JSON."""
        with urllib.request.urlopen(f"http://{self.master}{path}", timeout=timeout) as reply:
            return json.load(reply)

    def overview(self):
        """The JobManager's /overview (taskmanagers, slots, jobs running...), or None when it does not answer."""
        try:
            return self.rest("/overview", timeout=2)
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def stop(self, timeout=20):
        """Stop every process this cluster started and still runs: TaskManagers first, then the JobManager.
        A recorded pid that now names another process (the JVM ended, the number was reused) is left alone."""
        processes.stop([self._started[pid] for pid in [*self.taskmanagers, self.jobmanager] if pid in self._started],
                       timeout)
        self.jobmanager, self.taskmanagers, self._started = None, [], {}
        self._save()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _write_configuration(self):
        settings = {
            "jobmanager.rpc.address": "localhost", "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.bind-host": "localhost",
            "taskmanager.host": "localhost", "taskmanager.bind-host": "localhost",
            "rest.address": "localhost", "rest.bind-address": "localhost", "rest.port": self.rest_port,
            "jobmanager.memory.process.size": "1024m", "taskmanager.memory.process.size": "2048m",
            "taskmanager.memory.managed.fraction": 0.1,  # Beam keeps its state on the heap
            "taskmanager.numberOfTaskSlots": self.slots, "parallelism.default": self.slots,
            "cluster.evenly-spread-out-slots": "true",  # a job's tasks on every TaskManager, not the first one
            "state.backend.type": "hashmap",
            "state.checkpoints.dir": "file://" + os.path.join(self.workdir, "checkpoints"),
            "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": 10,
            "restart-strategy.fixed-delay.delay": "2 s",
            "heartbeat.interval": 1000, "heartbeat.timeout": 8000,
        }
        with open(os.path.join(self.workdir, "conf", "config.yaml"), "w", encoding="utf-8") as handle:
            handle.writelines(f"{key}: {value}\n" for key, value in settings.items())
        with open(os.path.join(self.workdir, "conf", "log4j.properties"), "w", encoding="utf-8") as handle:
            handle.write(LOG4J)

    def _start(self, role, number=0):
        """Start one JVM of `role` as Flink's scripts would; its pid."""
        (java,) = require("java")
        home, conf = flink_dist.home(self.release), os.path.join(self.workdir, "conf")
        lib = os.path.join(home, "lib")
        jars = sorted(os.path.join(lib, name) for name in os.listdir(lib) if name.endswith(".jar"))
        classpath = os.pathsep.join(sorted(jars, key=lambda jar: "flink-dist" in jar))  # flink-dist last
        jvm, dynamic = self._resources(java, role, classpath, conf)
        name = f"{role}-{number}" if role == "taskmanager" else role
        log4j = "file:" + os.path.join(conf, "log4j.properties")
        command = [java, *jvm, *JAVA_17_OPTIONS, f"-Dlog.file={os.path.join(self.workdir, 'log', name + '.log')}",
                   f"-Dlog4j.configuration={log4j}", f"-Dlog4j.configurationFile={log4j}",
                   "-classpath", classpath, ENTRY_POINTS[role], "--configDir", conf, *dynamic]
        if role == "jobmanager":
            command += ["--executionMode", "cluster"]
        else:  # named after its number, so the JobManager's reports can be told apart by pid
            command += ["-D", f"taskmanager.resource-id={name}"]
        with open(os.path.join(self.workdir, "log", name + ".out"), "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # outlives the command that started it
        self._started[process.pid] = processes.Started.of(process.pid, marker=self.workdir)
        return process.pid

    def _resources(self, java, role, classpath, conf):
        """(JVM memory options, dynamic -D settings) for `role`, computed by Flink's BashJavaUtils."""
        utils = os.path.join(flink_dist.home(self.release), "bin", "bash-java-utils.jar")
        command = "GET_JM_RESOURCE_PARAMS" if role == "jobmanager" else "GET_TM_RESOURCE_PARAMS"
        done = subprocess.run([java, "-classpath", os.pathsep.join([utils, classpath]),
                               "org.apache.flink.runtime.util.bash.BashJavaUtils", command, "--configDir", conf],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        results = [line.split(":", 1)[1].split() for line in done.stdout.splitlines()
                   if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")]
        if done.returncode != 0 or len(results) < 2:
            raise ClusterError(f"Flink could not size the {role}'s memory: {done.stdout.strip().splitlines()[-1:]}")
        return results[0], results[1]

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(self.overview()):
                return
            if self.jobmanager and not self._running(self.jobmanager):
                break
            time.sleep(0.5)
        raise ClusterError(f"timed out waiting for {what}; logs in {os.path.join(self.workdir, 'log')}")

    def _save(self):
        state = {"release": self.release, "rest_port": self.rest_port, "rpc_port": self.rpc_port, "slots": self.slots,
                 "jobmanager": self.jobmanager, "taskmanagers": self.taskmanagers,
                 "started": [list(started) for started in self._started.values()]}
        processes.save_record(os.path.join(self.workdir, "cluster.json"), state)


def _free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
