"""`python -m serving.recall --serving_dir DIR/serving --output_dir DIR --tf_serving
localhost:8500 [--redis_url URL] [--host 127.0.0.1 --port 8000] [--api_key_file PATH]`.

Secrets never on the command line (anyone on the host reads argv with `ps`): the API key comes
from $FINETOWER_API_KEY or `--api_key_file`, a Redis URL with a password from
$FINETOWER_REDIS_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from components.common.user_vectors import DEFAULT_LAST_N
from serving.recall import skew_log
from serving.recall.app import DEFAULT_MAX_IN_FLIGHT, build_service, serve
from serving.recall.http import DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S
from serving.recall.service import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S

API_KEY_ENV = "FINETOWER_API_KEY"
REDIS_URL_ENV = "FINETOWER_REDIS_URL"


def _api_key(path: str | None) -> str | None:
    """The key in `path` (first line), else $FINETOWER_API_KEY, else None."""
    if path is not None:
        try:
            key = Path(path).read_text().strip()
        except OSError as error:
            sys.exit(f"--api_key_file {path}: {error.strerror}")
        if not key:
            sys.exit(f"--api_key_file {path}: empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _redis_url(given: str | None) -> str | None:
    if given is not None and urlsplit(given).password is not None:
        sys.exit(f"--redis_url holds a password: put the URL in ${REDIS_URL_ENV} instead")
    return given or os.environ.get(REDIS_URL_ENV) or None


def _serving_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving_log",
        default=None,
        help="log a sample of the user vectors sent to the user tower into this folder (CSV "
        "u1..uD, for the pipeline's skew check); off by default",
    )
    parser.add_argument(
        "--serving_log_rate",
        type=float,
        default=skew_log.DEFAULT_RATE,
        help="the fraction of user vectors logged (seeded sampling)",
    )
    parser.add_argument("--serving_log_seed", type=int, default=0)
    parser.add_argument(
        "--serving_log_rows_per_file", type=int, default=skew_log.DEFAULT_ROWS_PER_FILE
    )
    parser.add_argument(
        "--serving_log_max_files",
        type=int,
        default=skew_log.DEFAULT_MAX_FILES,
        help="the newest files kept; older ones are deleted",
    )
    parser.add_argument(
        "--serving_log_queue_rows",
        type=int,
        default=skew_log.DEFAULT_QUEUE_ROWS,
        help="rows waiting for the writer; beyond, rows are dropped and counted",
    )
    parser.add_argument(
        "--serving_log_flush_s",
        type=float,
        default=skew_log.DEFAULT_FLUSH_S,
        help="a file is written at the latest this long after its first row",
    )


def _serving_log(parser: argparse.ArgumentParser, args) -> skew_log.ServingLog | None:
    if not args.serving_log:
        return None
    try:
        settings = skew_log.LogSettings(
            folder=args.serving_log,
            rate=args.serving_log_rate,
            seed=args.serving_log_seed,
            rows_per_file=args.serving_log_rows_per_file,
            max_files=args.serving_log_max_files,
            queue_rows=args.serving_log_queue_rows,
            flush_s=args.serving_log_flush_s,
        )
    except ValueError as error:
        parser.error(str(error))
    return skew_log.ServingLog(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.recall", description=__doc__)
    parser.add_argument("--serving_dir", required=True, help="the Pusher's serving folder")
    parser.add_argument(
        "--output_dir", required=True, help="holds item_embeddings/<v> and ann_index/<v>"
    )
    parser.add_argument("--tf_serving", default="localhost:8500", help="TF Serving gRPC target")
    parser.add_argument(
        "--redis_url",
        default=None,
        help=f"follow the store's current version (default ${REDIS_URL_ENV}; no password here)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api_key_file",
        default=None,
        help=f"file holding the key required in X-API-Key (default: ${API_KEY_ENV}, else none)",
    )
    parser.add_argument(
        "--max_in_flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="recall requests answered at once; beyond: an immediate 503 with Retry-After",
    )
    parser.add_argument(
        "--header_timeout_s",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="a request's headers must arrive within this (else 408 and close)",
    )
    parser.add_argument(
        "--body_timeout_s",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="a request's body must arrive within this (else 408)",
    )
    parser.add_argument(
        "--history_last_n",
        type=int,
        default=None,
        help="for versions that record no user vector recipe: a history's user vector is the "
        f"mean of its last N items' pretrained vectors (default {DEFAULT_LAST_N}); a version's "
        "recorded recipe wins, and a disagreeing value is logged",
    )
    _serving_log_flags(parser)
    parser.add_argument("--poll_s", type=float, default=DEFAULT_POLL_S, help="version checks")
    parser.add_argument(
        "--timeout_s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="each request's deadline from its arrival (queue, Redis, TF Serving): then 503",
    )
    parser.add_argument("--log_level", default="info")
    args = parser.parse_args(argv)
    service = build_service(
        serving_dir=args.serving_dir,
        output_dir=args.output_dir,
        tf_serving=args.tf_serving,
        redis_url=_redis_url(args.redis_url),
        last_n=args.history_last_n,
        poll_s=args.poll_s,
        timeout_s=args.timeout_s,
        serving_log=_serving_log(parser, args),
    )
    serve(
        service,
        host=args.host,
        port=args.port,
        api_key=_api_key(args.api_key_file),
        log_level=args.log_level,
        max_in_flight=args.max_in_flight,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
    )


if __name__ == "__main__":
    main()
