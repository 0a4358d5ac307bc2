"""`python -m components.serving_config --serving_dir DIR/serving --output_dir DIR --version N`

What the pipeline's ServingConfig step does, by hand: infra-validate version N (unless
`--skip_infra_validation`), write models.config naming it beside what is served and what Redis
or a rollback pin names, and prune (`--keep_versions`). An operator's way to name a rolled-back
version at once (after `python -m serving.store rollback --to N --serving_dir DIR/serving`).
The Redis URL comes from $FINETOWER_REDIS_URL (never argv: it may hold a password).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from components.common.errors import ArtifactError
from components.serving_config.component import serve_version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m components.serving_config", description=__doc__)
    p.add_argument("--serving_dir", required=True)
    p.add_argument("--output_dir", required=True, help="holds ann_index/<version>")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--keep_versions", type=int, default=0)
    p.add_argument("--base_path_prefix", default=None)
    p.add_argument("--skip_infra_validation", action="store_true")
    p.add_argument("--labels_for_unavailable", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = serve_version(
            args.serving_dir,
            args.output_dir,
            args.version,
            base_path_prefix=args.base_path_prefix,
            keep=args.keep_versions,
            redis_url=os.environ.get("FINETOWER_REDIS_URL") or None,
            infra_validate=not args.skip_infra_validation,
            labels_for_unavailable=args.labels_for_unavailable,
        )
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
