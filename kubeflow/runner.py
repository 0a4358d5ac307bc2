"""Compile the same `create_pipeline` with KubeflowV2DagRunner.

    python -m kubeflow.runner --output_dir DIR [--image IMAGE] [--pipeline_root gs://...]

writes `DIR/<pipeline name>.json` (a Vertex PipelineJob) and `DIR/<pipeline name>.yaml` (the
KFP IR, to upload in the Kubeflow UI). Data paths, pipeline root and image come from flags or
FINETOWER_* environment variables (pipeline/configs.py); component code is referenced by
dotted path inside the image, so nothing is uploaded at compile time.

`tfx pipeline create --engine vertex --pipeline_path kubeflow/runner.py` compiles through the
same `compile_pipeline` (TFX 1.21's `--engine kubeflow` imports the removed KFP v1 runner).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script (the tfx CLI): import the repo's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from pipeline import configs  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402

DEFAULT_IMAGE = os.environ.get("FINETOWER_IMAGE", "finetower:latest")


def compile_pipeline(
    config: configs.PipelineConfig, output_dir: str, image: str
) -> dict[str, Path]:
    """Write the PipelineJob JSON and the KFP IR YAML; return their paths."""
    from tfx import v1 as tfx

    if not config.train_data:
        raise SystemExit(
            "kubeflow.runner: set --train_data (or FINETOWER_TRAIN_DATA): the "
            "embedded demo data lives on this machine, not in the cluster"
        )
    pipeline = create_pipeline(
        config, config.train_data, config.val_data, config.items, local_metadata=False
    )
    os.makedirs(output_dir, exist_ok=True)
    name = config.pipeline_name
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir,
        output_filename=f"{name}.json",
    )
    runner.run(pipeline)  # may be called once per runner
    job_path = Path(output_dir) / f"{name}.json"
    if not job_path.exists():  # `tfx pipeline create` patched run(): it writes its own file
        return {}
    job = json.loads(job_path.read_text())
    yaml_path = Path(output_dir) / f"{name}.yaml"
    yaml_path.write_text(yaml.safe_dump(job["pipelineSpec"], sort_keys=False))
    return {"json": job_path, "yaml": yaml_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=os.environ.get("FINETOWER_KFP_OUTPUT_DIR", "kfp"))
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--pipeline_root")
    parser.add_argument("--train_data")
    parser.add_argument("--val_data")
    parser.add_argument("--items")
    parser.add_argument("--pipeline_output_dir", dest="output_dir_in_cluster")
    args = parser.parse_args(argv)
    config = configs.from_environment(
        train_data=args.train_data,
        val_data=args.val_data,
        items=args.items,
        output_dir=args.output_dir_in_cluster,
    )
    if args.pipeline_root:
        config.output_dir = args.pipeline_root
    for kind, path in compile_pipeline(config, args.output_dir, args.image).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
