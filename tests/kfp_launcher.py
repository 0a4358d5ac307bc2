"""Run a compiled KFP pipeline spec (kubeflow.runner's YAML) here, step by step, the way the
open-source KFP v2 backend runs it: tasks in DAG order; for each, the executor input its
launcher builds (parameters from the spec and the pipeline parameters, input artifacts from
the producers' outputs with the metadata their executors reported, output artifacts under
`<pipeline root>/<pipeline name>/<run id>/<task>/<key>`), then the container's command and args
with `{{$}}` replaced, in a subprocess. What the image would hold under its code dir is this
checkout (`code_dir` paths are mapped back). Only container executors are run; any other kind
is an error here, as it is for the open-source backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class StepResult:
    task: str
    returncode: int
    stderr: str
    outputs: dict = field(default_factory=dict)


def dag_order(spec: dict) -> list[str]:
    """Task names with every task after the tasks it depends on (ties by name)."""
    tasks = spec["root"]["dag"]["tasks"]
    done: list[str] = []
    pending = dict(sorted(tasks.items()))
    while pending:
        ready = [n for n, t in pending.items() if set(t.get("dependentTasks", [])) <= set(done)]
        if not ready:
            raise ValueError(f"a cycle or an unknown task among {sorted(pending)}")
        for name in ready:
            done.append(name)
            del pending[name]
    return done


def _parameter_value(source: dict, pipeline_parameters: dict):
    if "componentInputParameter" in source:
        return pipeline_parameters[source["componentInputParameter"]]
    if "runtimeValue" in source:
        return source["runtimeValue"]["constant"]
    raise ValueError(f"parameter source {sorted(source)} is not supported here")


def executor_input(
    spec: dict,
    task_name: str,
    produced: dict[str, dict[str, list]],
    pipeline_parameters: dict,
    run_root: str,
    output_file: str,
) -> dict:
    """The executor input (KFP's `{{$}}`) for one task."""
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    inputs = task.get("inputs", {})
    artifacts = {}
    for key, source in inputs.get("artifacts", {}).items():
        producer = source["taskOutputArtifact"]
        artifacts[key] = {
            "artifacts": produced[producer["producerTask"]][producer["outputArtifactKey"]]
        }
    outputs = {}
    for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items():
        outputs[key] = {
            "artifacts": [
                {
                    "name": f"{task_name}-{key}-{uuid.uuid4().hex[:8]}",
                    "type": definition["artifactType"],
                    "uri": f"{run_root}/{task_name}/{key}",
                    "metadata": {},
                }
            ]
        }
    return {
        "inputs": {
            "parameterValues": {
                key: _parameter_value(source, pipeline_parameters)
                for key, source in inputs.get("parameters", {}).items()
            },
            "artifacts": artifacts,
        },
        "outputs": {"artifacts": outputs, "outputFile": output_file},
    }


def _merge_reported(given: dict[str, list], output_file: Path) -> dict[str, list]:
    """Output artifacts with the metadata (and URIs) the executor reported, as KFP's launcher
    records them for downstream tasks."""
    if not output_file.exists():
        return given
    reported = json.loads(output_file.read_text()).get("artifacts", {})
    merged = {}
    for key, artifacts in given.items():
        merged[key] = reported.get(key, {}).get("artifacts") or artifacts
        for mine, theirs in zip(artifacts, merged[key], strict=False):
            theirs.setdefault("name", mine["name"])
            theirs.setdefault("type", mine["type"])
            theirs.setdefault("uri", mine["uri"])
    return merged


def image_only_files(workdir: Path, code_dir: str = "/pipeline") -> Path:
    """A folder holding the files the Dockerfile copies into the code dir under another name
    (kubeflow/artifact_types.py as finetower.py): with the checkout, the image's code dir."""
    folder = workdir / "image_code_dir"
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO / "kubeflow" / "Dockerfile").read_text()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "COPY" and parts[1].endswith(".py"):
            target = parts[2]
            if target.startswith(code_dir + "/") and target[len(code_dir) + 1 :] != parts[1]:
                shutil.copy(REPO / parts[1], folder / target[len(code_dir) + 1 :])
    return folder


def run_compiled(
    spec: dict,
    pipeline_root: str,
    workdir: Path,
    *,
    code_dir: str = "/pipeline",
    parameters: dict | None = None,
    timeout: float = 1800,
) -> list[StepResult]:
    """Run every task of `spec`; stops at the first failing step. Returns one result a step."""
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    pipeline_parameters = {k: v.get("defaultValue") for k, v in declared.items()}
    pipeline_parameters.update(parameters or {})
    run_root = f"{pipeline_root.rstrip('/')}/{spec['pipelineInfo']['name']}/{uuid.uuid4().hex[:8]}"
    executors = spec["deploymentSpec"]["executors"]
    produced: dict[str, dict[str, list]] = {}
    results = []
    python_path = [str(image_only_files(workdir, code_dir)), str(REPO)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([*python_path, env.get("PYTHONPATH", "")])
    for task_name in dag_order(spec):
        task = spec["root"]["dag"]["tasks"][task_name]
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        kind = sorted(executors[label])
        if kind != ["container"]:
            raise ValueError(f"{task_name}: executor kind {kind} does not run on open-source KFP")
        container = executors[label]["container"]
        output_file = workdir / task_name / "executor_output.json"
        output_file.parent.mkdir(parents=True, exist_ok=True)
        given = executor_input(
            spec, task_name, produced, pipeline_parameters, run_root, str(output_file)
        )
        text = json.dumps(given).replace(f"{code_dir}/", f"{REPO}/")
        args = [
            text if a == "{{$}}" else a.replace(f"{code_dir}/", f"{REPO}/")
            for a in container["args"]
        ]
        command = [sys.executable if c == "python" else c for c in container["command"]]
        done = subprocess.run(
            [*command, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        outputs = _merge_reported(
            {k: v["artifacts"] for k, v in given["outputs"]["artifacts"].items()}, output_file
        )
        results.append(StepResult(task_name, done.returncode, done.stderr, outputs))
        if done.returncode != 0:
            break
        produced[task_name] = outputs
    return results
