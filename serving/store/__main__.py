"""`python -m serving.store rollback --to N [--serving_dir DIR]` and `... unpin`.

rollback: makes pushed version N (its newest kept store version) `current` in Redis and pins it
there — publishes are refused until `unpin` — and, with `--serving_dir`, writes the pin file
that the recall service and the config writer honour. The Redis URL comes from `--redis_url`'s
environment variable (default FINETOWER_REDIS_URL), never from argv: it may hold a password.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from serving.store.layout import StoreError
from serving.store.naming import pushed_version_of
from serving.store.pin import clear_pin, write_pin
from serving.store.rollback import rollback, unpin

REDIS_URL_ENV = "FINETOWER_REDIS_URL"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.store", description=__doc__)
    parser.add_argument(
        "--redis_url_env",
        default=REDIS_URL_ENV,
        help=f"environment variable holding the Redis URL (default {REDIS_URL_ENV})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    back = commands.add_parser("rollback", help="serve an older pushed version and pin it")
    back.add_argument("--to", type=int, required=True, help="the pushed version to serve")
    back.add_argument("--serving_dir", default=None, help="also write the pin file here")
    free = commands.add_parser("unpin", help="let new publishes move current again")
    free.add_argument("--serving_dir", default=None, help="also remove the pin file here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url = os.environ.get(args.redis_url_env)
    if not url:
        print(f"error: set ${args.redis_url_env} to the Redis URL", file=sys.stderr)
        return 2
    try:
        if args.command == "rollback":
            result = rollback(url, to=args.to, pin=True)
            if args.serving_dir is not None:
                version = pushed_version_of(result["current"])
                result["pin_file"] = str(
                    write_pin(args.serving_dir, args.to if version is None else version,
                              result["current"])
                )  # fmt: skip
        else:
            result = {"unpinned": unpin(url)}
            if args.serving_dir is not None:
                result["pin_file_removed"] = clear_pin(args.serving_dir)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
