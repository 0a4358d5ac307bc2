"""Container entrypoint for open-source Kubeflow Pipelines v2: TFX's own, after putting back
the artifact types the KFP backend dropped.

    python -m kubeflow.entrypoint --finetower_artifact_types JSON <TFX entrypoint args>

TFX's entrypoint (`tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`) turns
each artifact of its executor input back into a TFX class by the artifact's type title. Vertex
passes the compiled titles (`tfx.Examples`, `finetower.ItemEmbeddings`); the open-source KFP v2
driver has been seen passing `system.*` titles (`system.Dataset`, `system.Model`) or no type at
all, and the entrypoint then fails to import a class or builds a plain Artifact without split
names. kubeflow.runner writes, into each step of the KFP YAML, the compiled type of every input
and output; this module restores those types where the backend gave none or a `system.*` one,
and runs TFX's entrypoint unchanged. Artifacts that arrive properly typed are left alone, so on
a backend without the gap it does nothing.
"""

from __future__ import annotations

import json
import sys

import yaml

ARTIFACT_TYPES_FLAG = "--finetower_artifact_types"
INVOCATION_FLAG = "--json_serialized_invocation_args"
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def needs_type(kind: dict | None) -> bool:
    """True when an artifact's type is missing, untitled or a KFP `system.*` one."""
    if not kind:
        return True
    if "schemaTitle" in kind:
        title = kind["schemaTitle"]
    else:
        title = (yaml.safe_load(kind.get("instanceSchema") or "") or {}).get("title", "")
    return not title or title.startswith("system.")


def restore_artifact_types(executor_input: dict, types: dict) -> dict:
    """`executor_input` (the JSON of KFP's `{{$}}`) with each artifact whose type `needs_type`
    given its compiled type from `types` ({"inputs"|"outputs": {key: instanceSchema}})."""
    for side in ("inputs", "outputs"):
        compiled = types.get(side, {})
        for key, entry in executor_input.get(side, {}).get("artifacts", {}).items():
            if key not in compiled:
                continue
            for artifact in entry.get("artifacts", []):
                if needs_type(artifact.get("type")):
                    artifact["type"] = {"instanceSchema": compiled[key]}
    return executor_input


def _flag_value(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """(value of `flag`, argv without it); accepts `--flag value` and `--flag=value`."""
    rest, value, i = [], None, 0
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(flag + "="):
            value = argv[i][len(flag) + 1 :]
        else:
            rest.append(argv[i])
        i += 1
    return value, rest


def rewrite_argv(argv: list[str]) -> list[str]:
    """TFX's entrypoint arguments, the executor input's artifact types restored."""
    raw_types, rest = _flag_value(argv, ARTIFACT_TYPES_FLAG)
    if raw_types is None:
        return rest
    invocation, rest = _flag_value(rest, INVOCATION_FLAG)
    if invocation is None:
        raise SystemExit(f"kubeflow.entrypoint: {INVOCATION_FLAG} is missing")
    restored = restore_artifact_types(json.loads(invocation), json.loads(raw_types))
    return [INVOCATION_FLAG, json.dumps(restored), *rest]


def main(argv: list[str] | None = None) -> None:
    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entry

    args = rewrite_argv(list(sys.argv[1:] if argv is None else argv))
    app.run(tfx_entry.main, argv=[sys.argv[0], *args], flags_parser=tfx_entry._parse_flags)


if __name__ == "__main__":
    main()
