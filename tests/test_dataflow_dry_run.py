"""The relay's Dataflow job, built offline: the Dataflow command of docs/runners.md with Beam's --dry_run=True
(DataflowRunner builds the job and submits nothing; apache-beam[gcp]). Checked: this package's setup
file built and staged as the workers' dependency, Runner v2 and Streaming Engine, the Pub/Sub read in the
job, and no device secret anywhere in it. Nothing may leave the machine: every connection and name
lookup beyond loopback fails, and the test says which were tried. What only a real project can show
(the service accepting the job, workers installing the package, IAM) stays out of reach here."""
import importlib.util
import json
import os
import re
import shlex
import socket
import tarfile

import pytest

from pipelines import stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "dry-run-secret-Zq81xW"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def readme_command(module):
    """docs/runners.md's Dataflow command for `module` (its ```sh block under '### Dataflow'), as argv."""
    with open(os.path.join(ROOT, "docs", "runners.md"), encoding="utf-8") as page:
        text = page.read()
    block = re.search(r"### Dataflow\n+[^`]*```sh\n(.*?)```", text, re.S).group(1)
    for command in block.replace("\\\n", " ").split("\n\n"):
        argv = shlex.split(command)
        if argv[:3] == ["python", "-m", module]:
            return argv[3:]
    raise AssertionError(f"no {module} command in docs/runners.md's Dataflow section")


@pytest.fixture
def offline(monkeypatch):
    """Every connection or name lookup beyond loopback fails; the list of those tried."""
    tried = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            tried.append(address[0])
            raise OSError(f"offline test: no connection to {address[0]}")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in (*LOOPBACK, None):
            tried.append(host)
            raise socket.gaierror(f"offline test: no lookup of {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google-auth: do not probe for a metadata server
    return tried


@pytest.fixture
def built_jobs(monkeypatch):
    """The jobs DataflowRunner builds (with --dry_run it returns them on its result)."""
    if importlib.util.find_spec("apache_beam.runners.dataflow.internal.apiclient") is None or \
            importlib.util.find_spec("google.cloud.pubsub_v1") is None:
        pytest.fail("Dataflow's dry run needs apache-beam[gcp] (the test extras install it)")
    from apache_beam.runners.dataflow import dataflow_runner

    jobs, run_pipeline = [], dataflow_runner.DataflowRunner.run_pipeline

    def capture(runner, pipeline, options):
        result = run_pipeline(runner, pipeline, options)
        jobs.append(result.job)
        return result

    monkeypatch.setattr(dataflow_runner.DataflowRunner, "run_pipeline", capture)
    return jobs


def test_the_readmes_relay_command_builds_a_streaming_engine_runner_v2_job_offline(offline, built_jobs, tmp_path,
                                                                                   monkeypatch, capsys):
    credentials = tmp_path / "devices.json"  # read at launch: a local copy stands in for gs://BUCKET/secure/...
    credentials.write_text(json.dumps([{"productKey": "a1DryRun", "deviceName": "d-1", "deviceSecret": SECRET}]))
    argv = [arg.replace("PROJECT", "my-project").replace("REGION", "europe-west1").replace("BUCKET", "my-bucket")
            for arg in readme_command("pipelines.stream")]
    argv[argv.index("--credentials") + 1] = str(credentials)
    monkeypatch.chdir(ROOT)  # --setup_file ./setup.py: run from the repository root, as the README says
    status = stream.run([*argv, "--dry_run=True"])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    assert "built the job and did not submit it" in out
    (job,) = built_jobs
    from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions
    from apache_beam.portability.api import beam_runner_api_pb2

    experiments = set(job.options.view_as(DebugOptions).experiments)
    assert {"use_runner_v2", "enable_streaming_engine"} <= experiments, sorted(experiments)
    assert job.options.view_as(GoogleCloudOptions).enable_streaming_engine
    assert str(job.proto.type) in ("JOB_TYPE_STREAMING", "2")  # the enum (Beam 2.62) or its number (2.77)
    pipeline = job.proto_pipeline
    (sdk,) = [env for env in pipeline.components.environments.values() if env.dependencies]
    staged = {}
    for dependency in sdk.dependencies:
        to = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload).staged_name
        staged[to] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
    assert "workflow.tar.gz" in staged, staged  # setup.py's sdist: what every worker installs
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        names = sdist.getnames()
    assert any(name.endswith("/pipelines/stream.py") for name in names), names[:20]
    assert any(name.endswith("/connector/beam/__init__.py") for name in names), names[:20]
    transforms = [t.spec.urn for t in pipeline.components.transforms.values()]
    assert "beam:transform:pubsub_read:v1" in transforms
    serialized = pipeline.SerializeToString() + str(job.proto).encode() + json.dumps(
        job.options.get_all_options(), default=str).encode()
    assert SECRET.encode() not in serialized
    assert b"projects/my-project/subscriptions/readings" in serialized
    assert not offline, f"tried to reach {sorted(set(offline))}"
