"""Every module the compiled steps import is in the image: our code in a folder the Dockerfile
copies, third-party packages in the base image (tensorflow/tfx:1.21.0: tfx[docker-image] and its
dependencies) or in kubeflow/requirements-image.txt. No container engine runs here, so the
image is read from its Dockerfile and the import graph from the code (ast), starting from what
the compiled YAML names: executor classes, run_fn/preprocessing_fn, the entrypoint module and
the custom artifact types' module."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from kubeflow import image as image_config
from kubeflow.runner import compile_pipeline
from pipeline.configs import PipelineConfig

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "kubeflow" / "Dockerfile"
# the official image installs TFX with these extras (tfx/tools/docker/Dockerfile)
BASE_IMAGE = [("tfx", {"docker-image"})]
DOTTED = re.compile(r"^[a-z_][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@pytest.fixture(scope="module")
def compiled_spec(tmp_path_factory) -> dict:
    config = PipelineConfig(train_data="gs://b/d/t.csv", output_dir="gs://b/o")
    out = tmp_path_factory.mktemp("kfp")
    return yaml.safe_load(compile_pipeline(config, str(out), image="i:1")["yaml"].read_text())


def copied_paths() -> dict[str, str]:
    """Dockerfile COPY: repository path -> path under the image's code dir."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    copies = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and parts[2].startswith(image_config.CODE_DIR + "/"):
            copies[parts[1]] = parts[2][len(image_config.CODE_DIR) + 1 :]
    return copies


def entry_modules(spec: dict) -> set[str]:
    """Dotted module paths the compiled steps import first."""
    found = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container", {})
        command = container.get("command", [])
        if command[:2] == ["python", "-m"]:
            found.add(command[2])
        args = container.get("args", [])
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--executor_class_path":
                found.add(value.rsplit(".", 1)[0])
    for task in spec["root"]["dag"]["tasks"].values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            value = parameter.get("runtimeValue", {}).get("constant")
            if isinstance(value, str) and DOTTED.match(value) and value.endswith("_fn"):
                found.add(value.rsplit(".", 1)[0])
    for component in spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                title = yaml.safe_load(artifact["artifactType"]["instanceSchema"])["title"]
                if not title.startswith("tfx."):
                    found.add(title.split(".")[0])  # finetower.ItemEmbeddings: module finetower
    return found


def image_file(module: str, copies: dict[str, str]) -> Path | None:
    """This checkout's file of `module` as the image lays it out, or None if not first-party."""
    candidates = {}
    for source, target in copies.items():
        if source.endswith("/"):
            for path in (REPO / source).rglob("*.py"):
                rel = target + str(path.relative_to(REPO / source))
                candidates[rel[:-3].replace("/", ".").removesuffix(".__init__")] = path
        elif source.endswith(".py"):
            candidates[target[:-3].replace("/", ".")] = REPO / source
    return candidates.get(module)


def first_party_roots() -> set[str]:
    return {"pipeline", "components", "kubeflow", "serving", "finetower", "tests", "tools"}


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute module names imported anywhere in `path` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n}


def module_closure(entries: set[str], copies: dict[str, str]) -> tuple[dict, set[str], set[str]]:
    """(first-party module -> file, first-party modules missing from the image, third-party
    top-level names) reachable from `entries`."""
    found, missing, third_party = {}, set(), set()
    todo = sorted(entries)
    while todo:
        module = todo.pop()
        if module in found or module in missing:
            continue
        root = module.split(".")[0]
        if root not in first_party_roots():
            third_party.add(root)
            continue
        path = image_file(module, copies)
        if path is None:
            # `from package import name`: name may be an attribute, not a module
            parent = module.rpartition(".")[0]
            if parent and image_file(parent, copies) is not None:
                continue
            missing.add(module)
            continue
        found[module] = path
        todo.extend(imports_of(path, module))
    return found, missing, third_party


def distribution_closure(roots: list[tuple[str, set[str]]]) -> set[str]:
    """Normalised distribution names installed by `roots` (name, extras), transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            wanted = {""} | extras
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": e}) for e in wanted
            ):
                continue
            todo.append((requirement.name, set(requirement.extras)))
    return seen


def image_requirements() -> list[tuple[str, set[str]]]:
    lines = (REPO / "kubeflow" / "requirements-image.txt").read_text().splitlines()
    names = [line.split("#")[0].split("==")[0].strip() for line in lines]
    return [(n, set()) for n in names if n]


def test_every_module_the_compiled_steps_import_is_in_the_image(compiled_spec):
    copies = copied_paths()
    entries = entry_modules(compiled_spec)
    assert {"kubeflow.entrypoint", "finetower", "components.trainer.training"} <= entries
    assert "components.latest_blessed.component" in entries
    found, missing, third_party = module_closure(entries, copies)
    assert not missing, f"imported by the compiled steps but not copied into the image: {missing}"
    assert "components.pusher.serving_layout" in found  # reached through the Pusher

    installed = distribution_closure(BASE_IMAGE + image_requirements())
    providers = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    absent = {}
    for name in sorted(third_party - stdlib):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(name, [])}
        if not dists & installed:
            absent[name] = sorted(dists) or ["(not installed here either)"]
    assert not absent, f"third-party modules the image may lack: {json.dumps(absent)}"


def test_the_check_sees_a_module_the_image_would_lack(compiled_spec, tmp_path, monkeypatch):
    """The same check fails when the Dockerfile stops copying components/."""
    copies = {k: v for k, v in copied_paths().items() if k != "components/"}
    _, missing, _ = module_closure(entry_modules(compiled_spec), copies)
    assert "components.trainer.training" in missing
