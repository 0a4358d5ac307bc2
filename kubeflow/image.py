"""The container image every pipeline step runs in (and Dataflow/Flink/Spark workers).

Built from kubeflow/Dockerfile on the official TFX image; the tag is configuration:

    docker build -f kubeflow/Dockerfile -t "$(python -m kubeflow.image)" .

`FINETOWER_IMAGE` names the whole image (e.g. europe-docker.pkg.dev/p/r/finetower:0.2.0);
otherwise `FINETOWER_IMAGE_REPOSITORY` (default `finetower`) and `FINETOWER_IMAGE_TAG` (default
the project's version) make it.
"""

from __future__ import annotations

import os
import sys

# the Dockerfile's FROM (its ARG default); tests keep the two equal
TFX_BASE_IMAGE = "tensorflow/tfx:1.21.0"
# where the Dockerfile puts our code inside the image (its WORKDIR and PYTHONPATH)
CODE_DIR = "/pipeline"
IMAGE_REPOSITORY = "finetower"
IMAGE_TAG = "0.2.0"  # pyproject.toml's version


def default_image(environ=os.environ) -> str:
    """FINETOWER_IMAGE, else FINETOWER_IMAGE_REPOSITORY:FINETOWER_IMAGE_TAG (with defaults)."""
    if environ.get("FINETOWER_IMAGE"):
        return environ["FINETOWER_IMAGE"]
    repository = environ.get("FINETOWER_IMAGE_REPOSITORY") or IMAGE_REPOSITORY
    return f"{repository}:{environ.get('FINETOWER_IMAGE_TAG') or IMAGE_TAG}"


if __name__ == "__main__":
    print(default_image())
    sys.exit(0)
