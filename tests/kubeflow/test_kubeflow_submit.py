"""kubeflow.submit without a cluster: arguments, the run-time pipeline root, the calls it makes
to kfp.Client (a recording stand-in, behind a real HTTP endpoint on 127.0.0.1), and a clear,
bounded failure on an unreachable endpoint."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from kubeflow import submit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def package(tmp_path) -> Path:
    """A compiled pair as kubeflow.runner writes it: finetower.yaml + finetower.json."""
    spec = {
        "pipelineInfo": {"name": "finetower"},
        "root": {"dag": {"tasks": {}}},
        "schemaVersion": "2.0.0",
        "components": {},
        "deploymentSpec": {"executors": {}},
    }
    (tmp_path / "finetower.yaml").write_text(yaml.safe_dump(spec))
    job = {"pipelineSpec": spec, "runtimeConfig": {"gcsOutputDirectory": "gs://b/ft/tfx"}}
    (tmp_path / "finetower.json").write_text(json.dumps(job))
    return tmp_path / "finetower.yaml"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint():
    """An HTTP server on 127.0.0.1 answering every GET (kfp's healthz included) with 200."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = b'{"multi_user": false}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class RecordingClient:
    """kfp.Client's surface that submit uses; records every call."""

    def __init__(self, pipeline_id=None, versions=()):
        self.calls: list[tuple] = []
        self._pipeline_id = pipeline_id
        self._versions = list(versions)

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", name))
        return self._pipeline_id

    def upload_pipeline(self, path, pipeline_name):
        self.calls.append(("upload_pipeline", path, pipeline_name))
        return SimpleNamespace(pipeline_id="p1")

    def list_pipeline_versions(self, pipeline_id, page_token="", page_size=10):
        self.calls.append(("list_pipeline_versions", pipeline_id))
        return SimpleNamespace(pipeline_versions=self._versions, next_page_token="")

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        self.calls.append(("upload_pipeline_version", path, pipeline_version_name, pipeline_id))
        return SimpleNamespace(pipeline_version_id="v1")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("create_experiment", name, namespace))
        return SimpleNamespace(experiment_id="e1")

    def run_pipeline(self, **kwargs):
        self.calls.append(("run_pipeline", kwargs))
        return SimpleNamespace(run_id="r1")


def test_pipeline_root_is_given_at_run_time_from_the_compiled_job(package, monkeypatch):
    monkeypatch.delenv("FINETOWER_OUTPUT_DIR", raising=False)
    job = submit.parse_args(["--endpoint", "http://127.0.0.1:1", "--package", str(package)])
    assert job.pipeline_root == "gs://b/ft/tfx"  # runtimeConfig of the JSON beside it
    assert job.pipeline_name == job.experiment == "finetower"
    assert job.version_name == submit.version_name_for(package, "finetower")
    assert re.fullmatch(r"finetower-[0-9a-f]{12}", job.version_name)
    given = submit.parse_args(
        ["--endpoint", "http://x:1", "--package", str(package), "--pipeline_root", "gs://o/r"]
    )
    assert given.pipeline_root == "gs://o/r"
    (package.with_suffix(".json")).unlink()
    with pytest.raises(submit.SubmitError, match="no pipeline root"):
        submit.parse_args(["--endpoint", "http://x:1", "--package", str(package)])
    env = {"FINETOWER_OUTPUT_DIR": "gs://env/out/"}
    assert submit.pipeline_root_for(package, None, env) == "gs://env/out/tfx"


def test_compiled_package_names_its_pipeline_root_as_the_default(tmp_path):
    """The KFP IR names the compiled root as `defaultPipelineRoot` (issue 19: without it a UI
    upload falls back to the cluster's minio://, which tf.io.gfile cannot write); a run's
    own root still wins (test_pipeline_root_is_given_at_run_time_from_the_compiled_job)."""
    from kubeflow.runner import compile_pipeline
    from pipeline.configs import PipelineConfig

    config = PipelineConfig(train_data="gs://b/d/train", output_dir="gs://b/ft")
    paths = compile_pipeline(config, str(tmp_path), image="r/finetower:1")
    spec = yaml.safe_load(paths["yaml"].read_text())
    assert spec["defaultPipelineRoot"] == "gs://b/ft/tfx"
    assert submit.pipeline_root_for(paths["yaml"], None, {}) == "gs://b/ft/tfx"


def test_arguments_are_checked(package, capsys):
    with pytest.raises(SystemExit) as exited:
        submit.parse_args(["--package", str(package)])
    assert exited.value.code == 2 and "--endpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        submit.parse_args(["--endpoint", "http://x:1", "--package", str(package), "--timeout", "0"])
    with pytest.raises(submit.SubmitError, match="no pipeline package"):
        submit.parse_args(["--endpoint", "http://x:1", "--package", str(package) + ".missing"])
    not_ir = package.parent / "other.yaml"
    not_ir.write_text("a: 1\n")
    with pytest.raises(submit.SubmitError, match="not a KFP pipeline spec"):
        submit.parse_args(["--endpoint", "http://x:1", "--package", str(not_ir)])
    with pytest.raises(submit.SubmitError, match="expected http"):
        submit.check_reachable("127.0.0.1:8080")


def test_submit_creates_pipeline_version_experiment_and_run(package, endpoint):
    job = submit.parse_args(["--endpoint", endpoint, "--package", str(package), "--run_name", "r"])
    client = RecordingClient()
    ids = submit.submit(job, client=client)
    assert ids == {"pipeline_id": "p1", "version_id": "v1", "experiment_id": "e1", "run_id": "r1"}
    names = [call[0] for call in client.calls]
    assert names == [
        "get_pipeline_id",
        "upload_pipeline",
        "list_pipeline_versions",
        "upload_pipeline_version",
        "create_experiment",
        "run_pipeline",
    ]
    run = client.calls[-1][1]
    assert run["pipeline_root"] == "gs://b/ft/tfx"
    assert run["version_id"] == "v1" and run["pipeline_id"] == "p1" and run["job_name"] == "r"


def test_the_same_package_twice_reuses_its_version(package, endpoint):
    job = submit.parse_args(["--endpoint", endpoint, "--package", str(package)])
    existing = SimpleNamespace(display_name=job.version_name, pipeline_version_id="v0")
    client = RecordingClient(pipeline_id="p0", versions=[existing])
    ids = submit.submit(job, client=client)
    assert ids["pipeline_id"] == "p0" and ids["version_id"] == "v0"
    assert "upload_pipeline" not in [c[0] for c in client.calls]
    assert "upload_pipeline_version" not in [c[0] for c in client.calls]


def test_unreachable_endpoint_fails_fast_and_says_so(package):
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kubeflow.submit", "--endpoint", url, "--package", str(package)]
        + ["--timeout", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    assert f"kubeflow.submit: cannot reach the Kubeflow Pipelines endpoint {url}" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 60  # refused at once: no kfp retries with back-off
