"""Upload the compiled KFP IR to a Kubeflow Pipelines endpoint and start a run.

    python -m kubeflow.submit --endpoint http://localhost:8080 [--package kfp/finetower.yaml] \
        [--experiment finetower] [--pipeline_root gs://.../finetower/tfx] [--namespace NS]

Creates the pipeline (or finds it by name), uploads the package as a new version named by its
content hash (the same package twice: the existing version is reused), creates the experiment if
needed, and starts a run of that version. The pipeline root is given to the run, at run time:
`--pipeline_root`, else the `gcsOutputDirectory` of the PipelineJob JSON compiled beside the
package (kubeflow.runner writes both), else `FINETOWER_OUTPUT_DIR/tfx`.

The endpoint is probed first with a bounded timeout, so an unreachable one fails in seconds with
a message saying what to check, not after kfp's retries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 10.0
HEALTHZ = "/apis/v2beta1/healthz"


class SubmitError(Exception):
    """What went wrong, in one line for the user."""


@dataclass
class Submission:
    endpoint: str
    package: Path
    pipeline_name: str
    version_name: str
    experiment: str
    run_name: str
    pipeline_root: str
    namespace: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    schedule: str | None = None  # KFP's 6-field cron (seconds first); None: one run now


def kfp_cron(schedule: str) -> str:
    """KFP's cron (`second minute hour day month weekday`) for a crontab line's five fields
    (`0 3 * * *`: 03:00 every day); six fields pass as they are. SubmitError otherwise."""
    fields = schedule.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise SubmitError(
            f"--schedule {schedule!r}: a cron expression of 5 fields (minute hour day month "
            "weekday) or 6 (second first)"
        )
    return " ".join(fields)


def read_package(package: Path) -> dict:
    """The KFP IR (pipelineSpec) in `package`; raises SubmitError when it is not one."""
    import yaml

    if not package.is_file():
        raise SubmitError(f"no pipeline package at {package} (run python -m kubeflow.runner)")
    spec = yaml.safe_load(package.read_text())
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise SubmitError(f"{package} is not a KFP pipeline spec (no pipelineInfo/root)")
    return spec


def pipeline_root_for(package: Path, given: str | None, environ=os.environ) -> str:
    """The run's pipeline root: `given`, else the compiled job's, else FINETOWER_OUTPUT_DIR/tfx."""
    if given:
        return given
    job = package.with_suffix(".json")
    if job.is_file():
        root = json.loads(job.read_text()).get("runtimeConfig", {}).get("gcsOutputDirectory")
        if root:
            return root
    if environ.get("FINETOWER_OUTPUT_DIR"):
        return environ["FINETOWER_OUTPUT_DIR"].rstrip("/") + "/tfx"
    raise SubmitError(
        "no pipeline root: pass --pipeline_root, or compile with kubeflow.runner (its JSON "
        "beside the package carries one), or set FINETOWER_OUTPUT_DIR"
    )


def version_name_for(package: Path, pipeline_name: str) -> str:
    """`<pipeline>-<first 12 hex of the package's sha256>`: one version per distinct package."""
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    return f"{pipeline_name}-{digest}"


def check_reachable(endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise SubmitError unless `endpoint` answers HTTP within `timeout_s` (any status counts:
    a 401/403 from an auth proxy is still a reachable endpoint)."""
    parsed = urllib.parse.urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SubmitError(f"--endpoint {endpoint!r}: expected http(s)://host[:port]")
    try:
        urllib.request.urlopen(endpoint.rstrip("/") + HEALTHZ, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (TimeoutError, urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SubmitError(
            f"cannot reach the Kubeflow Pipelines endpoint {endpoint} within {timeout_s:g} s "
            f"({reason}); is the API reachable (e.g. `kubectl port-forward -n kubeflow "
            f"svc/ml-pipeline-ui 8080:80`)?"
        ) from None


def submit(job: Submission, client=None) -> dict[str, str]:
    """Pipeline, version, experiment and run; returns their ids. `client`: a kfp.Client
    (made for `job.endpoint` when None)."""
    check_reachable(job.endpoint, job.timeout_s)
    if client is None:
        import kfp

        client = kfp.Client(host=job.endpoint, namespace=job.namespace or "kubeflow")
    package = str(job.package)
    pipeline_id = client.get_pipeline_id(job.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=job.pipeline_name)
        pipeline_id = pipeline.pipeline_id
    version_id = _existing_version(client, pipeline_id, job.version_name)
    if version_id is None:
        version = client.upload_pipeline_version(
            package, pipeline_version_name=job.version_name, pipeline_id=pipeline_id
        )
        version_id = version.pipeline_version_id
    experiment = client.create_experiment(job.experiment, namespace=job.namespace)
    ids = {
        "pipeline_id": pipeline_id,
        "version_id": version_id,
        "experiment_id": experiment.experiment_id,
    }
    if job.schedule:  # a recurring run: one run per cron tick, never two at once
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=job.run_name,
            cron_expression=job.schedule,
            max_concurrency=1,
            no_catchup=True,
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_root=job.pipeline_root,
        )
        return {**ids, "recurring_run_id": recurring.recurring_run_id}
    run = client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=job.run_name,
        pipeline_id=pipeline_id,
        version_id=version_id,
        pipeline_root=job.pipeline_root,
    )
    return {**ids, "run_id": run.run_id}


def _existing_version(client, pipeline_id: str, name: str) -> str | None:
    token = ""
    while True:
        page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=100)
        for version in page.pipeline_versions or []:
            if version.display_name == name:
                return version.pipeline_version_id
        token = page.next_page_token
        if not token:
            return None


def parse_args(argv: list[str] | None = None, environ=os.environ) -> Submission:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="KFP API, e.g. http://localhost:8080")
    parser.add_argument("--package", default="kfp/finetower.yaml", type=Path)
    parser.add_argument("--experiment", default=None, help="default: the pipeline's name")
    parser.add_argument("--pipeline_root", help="default: the compiled job's root")
    parser.add_argument("--run_name", help="default: <pipeline>-<UTC time>")
    parser.add_argument("--namespace", help="multi-user Kubeflow: the profile's namespace")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, dest="timeout_s")
    parser.add_argument(
        "--schedule", help="a recurring run on this cron, e.g. '0 3 * * *' (03:00 every day)"
    )
    args = parser.parse_args(argv)
    if args.timeout_s <= 0:
        parser.error("--timeout must be positive")
    spec = read_package(args.package)
    name = spec["pipelineInfo"]["name"]
    return Submission(
        endpoint=args.endpoint,
        package=args.package,
        pipeline_name=name,
        version_name=version_name_for(args.package, name),
        experiment=args.experiment or name,
        run_name=args.run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        pipeline_root=pipeline_root_for(args.package, args.pipeline_root, environ),
        namespace=args.namespace,
        timeout_s=args.timeout_s,
        schedule=kfp_cron(args.schedule) if args.schedule else None,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        job = parse_args(argv)
        ids = submit(job)
    except SubmitError as error:
        print(f"kubeflow.submit: {error}", file=sys.stderr)
        return 2
    for key, value in ids.items():
        print(f"{key}: {value}")
    print(f"pipeline_root: {job.pipeline_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
