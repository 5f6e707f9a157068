"""The backfill's and the relay's Dataflow jobs, built offline: the Dataflow commands of docs/runners.md
with Beam's --dry_run=True (DataflowRunner builds the job and submits nothing; apache-beam[gcp]).
Checked: this package's setup file built and staged as the workers' dependency, Runner v2, Streaming
Engine for the relay (a batch job without it for the backfill), the relay's Pub/Sub read, and no device
secret anywhere in either job. Nothing may leave the machine: every connection and name lookup beyond
loopback fails, and the test says which were tried. What only a real project can show (the service
accepting the job, workers installing the package, IAM) stays out of reach here."""
import importlib.util
import json
import os
import re
import shlex
import socket
import tarfile

import fastavro
import pytest

from pipelines import backfill, stream

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


def docs_command(module, local):
    """docs/runners.md's Dataflow command for `module`, its placeholders filled in, and each option in
    `local` ({option: path}) given a local file instead of its gs:// path, which only a real project
    can read. Run from the repository root (--setup_file ./setup.py), as the docs say."""
    argv = [arg.replace("PROJECT", "my-project").replace("REGION", "europe-west1").replace("BUCKET", "my-bucket")
            for arg in readme_command(module)]
    for option, path in local.items():
        assert argv[argv.index(option) + 1].startswith("gs://my-bucket/"), (option, argv)
        argv[argv.index(option) + 1] = str(path)
    return argv


def local_credentials(tmp_path):
    """Read at launch (checks.check_credentials): a local copy stands in for gs://.../devices.csv."""
    credentials = tmp_path / "devices.json"
    credentials.write_text(json.dumps([{"productKey": "a1DryRun", "deviceName": "d-1", "deviceSecret": SECRET}]))
    return credentials


def check_job(job, offline, module, job_type):
    """What Dataflow needs of either job: Runner v2, the type of job, this package's sdist staged with
    `module` in it, and no secret anywhere in the job or its options. The pipeline's proto."""
    from apache_beam.options.pipeline_options import DebugOptions
    from apache_beam.portability.api import beam_runner_api_pb2

    assert "use_runner_v2" in job.options.view_as(DebugOptions).experiments
    assert str(job.proto.type) in (f"JOB_TYPE_{job_type}", str({"BATCH": 1, "STREAMING": 2}[job_type])), (
        job.proto.type)  # the enum (Beam 2.62) or its number (2.77)
    pipeline = job.proto_pipeline
    (sdk,) = [env for env in pipeline.components.environments.values() if env.dependencies]
    staged = {}
    for dependency in sdk.dependencies:
        to = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload).staged_name
        staged[to] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
    assert "workflow.tar.gz" in staged, staged  # setup.py's sdist: what every worker installs
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        names = sdist.getnames()
    assert any(name.endswith(f"/pipelines/{module}.py") for name in names), names[:20]
    assert any(name.endswith("/connector/beam/__init__.py") for name in names), names[:20]
    assert SECRET.encode() not in serialized(job)
    assert not offline, f"tried to reach {sorted(set(offline))}"
    return pipeline


def serialized(job):
    """The job as Dataflow would receive it: the pipeline, the job's request and the options."""
    return job.proto_pipeline.SerializeToString() + str(job.proto).encode() + json.dumps(
        job.options.get_all_options(), default=str).encode()


def test_the_docs_relay_command_builds_a_streaming_engine_runner_v2_job_offline(offline, built_jobs, tmp_path,
                                                                                monkeypatch, capsys):
    argv = docs_command("pipelines.stream", {"--credentials": local_credentials(tmp_path)})
    monkeypatch.chdir(ROOT)
    status = stream.run([*argv, "--dry_run=True"])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    assert "built the job and did not submit it" in out
    (job,) = built_jobs
    from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions

    assert "enable_streaming_engine" in job.options.view_as(DebugOptions).experiments
    assert job.options.view_as(GoogleCloudOptions).enable_streaming_engine
    pipeline = check_job(job, offline, "stream", "STREAMING")
    transforms = [t.spec.urn for t in pipeline.components.transforms.values()]
    assert "beam:transform:pubsub_read:v1" in transforms
    assert b"projects/my-project/subscriptions/readings" in serialized(job)


def test_the_docs_backfill_command_builds_a_batch_runner_v2_job_offline(offline, built_jobs, tmp_path, monkeypatch,
                                                                        capsys):
    history = tmp_path / "history.avro"  # matched at launch: a local file stands in for gs://
    schema = {"type": "record", "name": "Reading", "fields": [
        {"name": name, "type": kind} for name, kind in
        (("productKey", "string"), ("deviceName", "string"), ("ts", "long"), ("kwh", "double"))]}
    with open(history, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema),
                        [{"productKey": "a1DryRun", "deviceName": "d-1", "ts": 1_700_000_000_000, "kwh": 1.5}])
    argv = docs_command("pipelines.backfill", {"--credentials": local_credentials(tmp_path), "--input": history})
    monkeypatch.chdir(ROOT)
    status = backfill.run([*argv, "--dry_run=True"])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    assert "backfill: --dry_run: DataflowRunner built the job and did not submit it" in out
    assert "Dry run: nothing was published" not in out  # Beam's dry run, not the backfill's plan
    (job,) = built_jobs
    from apache_beam.options.pipeline_options import DebugOptions

    # Not GoogleCloudOptions.enable_streaming_engine: newer Beams default it to true, for streaming jobs.
    assert "enable_streaming_engine" not in job.options.view_as(DebugOptions).experiments
    pipeline = check_job(job, offline, "backfill", "BATCH")
    names = " ".join(t.unique_name for t in pipeline.components.transforms.values())
    assert "Publish" in names and "DeadLetters" in names and "Plan" not in names
    assert b"gs://my-bucket/backfill/dead-letter/failed" in serialized(job)
