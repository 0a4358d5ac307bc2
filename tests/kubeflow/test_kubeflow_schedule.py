"""`kubeflow.submit --schedule`: a recurring run through kfp's recurring-run API (the client's
calls recorded, as tests/test_kubeflow_submit.py records a one-off run)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kubeflow import submit
from tests.kubeflow.test_kubeflow_submit import RecordingClient, endpoint, package  # noqa: F401


class SchedulingClient(RecordingClient):
    def create_recurring_run(self, **kwargs):
        self.calls.append(("create_recurring_run", kwargs))
        return SimpleNamespace(recurring_run_id="rr1")


def test_schedule_creates_a_recurring_run_not_a_run(package, endpoint):  # noqa: F811
    args = ["--endpoint", endpoint, "--package", str(package), "--run_name", "daily"]
    job = submit.parse_args([*args, "--schedule", "0 3 * * *"])
    client = SchedulingClient()
    ids = submit.submit(job, client=client)
    assert ids["recurring_run_id"] == "rr1" and "run_id" not in ids
    names = [call[0] for call in client.calls]
    assert "run_pipeline" not in names and names[-1] == "create_recurring_run"
    request = client.calls[-1][1]
    assert request["cron_expression"] == "0 0 3 * * *"  # KFP's cron has seconds first
    assert request["max_concurrency"] == 1 and request["no_catchup"] is True
    assert request["pipeline_root"] == "gs://b/ft/tfx"
    assert request["pipeline_id"] == "p1" and request["version_id"] == "v1"
    assert request["job_name"] == "daily"


@pytest.mark.parametrize(
    ("given", "cron"), [("0 3 * * *", "0 0 3 * * *"), ("5 0 3 * * 1", "5 0 3 * * 1")]
)
def test_crontab_lines_become_kfp_cron(given, cron):
    assert submit.kfp_cron(given) == cron


def test_a_bad_schedule_is_refused_by_name(package, capsys):  # noqa: F811
    status = submit.main(["--endpoint", "http://127.0.0.1:9", "--package", str(package),
                          "--schedule", "daily"])  # fmt: skip
    assert status == 2
    assert "--schedule 'daily'" in capsys.readouterr().err
