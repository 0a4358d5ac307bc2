"""`python -m serving.recall --serving_dir DIR/serving --output_dir DIR --tf_serving
localhost:8500 [--redis_url URL] [--host 127.0.0.1 --port 8000 --api_key KEY]`."""

from __future__ import annotations

import argparse
import os

from components.item2vec.user_vectors import DEFAULT_LAST_N
from serving.recall.app import build_service, serve
from serving.recall.service import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S

API_KEY_ENV = "FINETOWER_API_KEY"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.recall", description=__doc__)
    parser.add_argument("--serving_dir", required=True, help="the Pusher's serving folder")
    parser.add_argument(
        "--output_dir", required=True, help="holds item_embeddings/<v> and ann_index/<v>"
    )
    parser.add_argument("--tf_serving", default="localhost:8500", help="TF Serving gRPC target")
    parser.add_argument("--redis_url", default=None, help="follow the store's current version")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api_key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"required in X-API-Key on every request (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--history_last_n",
        type=int,
        default=DEFAULT_LAST_N,
        help="a history's user vector is the mean of its last N items' pretrained vectors",
    )
    parser.add_argument("--poll_s", type=float, default=DEFAULT_POLL_S, help="version checks")
    parser.add_argument(
        "--timeout_s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="per call to TF Serving and Redis: past it a request gets 503",
    )
    parser.add_argument("--log_level", default="info")
    args = parser.parse_args(argv)
    service = build_service(
        serving_dir=args.serving_dir,
        output_dir=args.output_dir,
        tf_serving=args.tf_serving,
        redis_url=args.redis_url,
        last_n=args.history_last_n,
        poll_s=args.poll_s,
        timeout_s=args.timeout_s,
    )
    serve(service, host=args.host, port=args.port, api_key=args.api_key, log_level=args.log_level)


if __name__ == "__main__":
    main()
