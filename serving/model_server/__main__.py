"""`python -m serving.model_server`: tensorflow_model_server's command line for the stand-in."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _flag_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description="A local stand-in for tensorflow_model_server (same flag names).",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: pick a free one)")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST)")
    p.add_argument("--model_config_file", help="a ModelServerConfig text proto (models.config)")
    p.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="re-read --model_config_file this often (0: never)",
    )
    p.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1,
        help="look for new versions under the base paths this often (0: only at start)",
    )
    p.add_argument("--model_name", default="default", help="without --model_config_file")
    p.add_argument("--model_base_path", help="without --model_config_file")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--grpc_max_threads", type=int, default=16)
    p.add_argument(
        "--enable_batching",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=False,
        help="accepted for the real binary's command line; the stand-in does not batch (warns)",
    )
    p.add_argument("--batching_parameters_file", help="accepted with --enable_batching (warns)")
    p.add_argument(
        "--bind_address",
        default="127.0.0.1",
        help="the stand-in's own flag: the address both ports listen on (0.0.0.0: every "
        "interface; nothing here authenticates callers)",
    )
    p.add_argument(
        "--allow_reload_config",
        action="store_true",
        help="the stand-in's own flag: accept HandleReloadConfigRequest (refused by default)",
    )
    args = p.parse_args(argv)
    if bool(args.model_config_file) == bool(args.model_base_path):
        p.error("give either --model_config_file or --model_base_path")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("serving.model_server")

    import tensorflow as tf

    from serving.model_server.grpc_service import grpc_server
    from serving.model_server.registry import (
        ModelRegistry,
        read_model_server_config,
        single_model_config,
    )
    from serving.model_server.rest import rest_server

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if args.enable_batching or args.batching_parameters_file:
        log.warning(
            "--enable_batching/--batching_parameters_file: the stand-in serves each request "
            "alone; batching needs tensorflow_model_server"
        )
    try:
        config = (
            read_model_server_config(args.model_config_file)
            if args.model_config_file
            else single_model_config(args.model_name, args.model_base_path)
        )
    except (OSError, ValueError, tf.errors.OpError) as err:
        print(f"model_server: {err}", file=sys.stderr)
        return 2
    registry = ModelRegistry(config)  # loads what is there before the ports open, as TF Serving
    for name in registry.model_names():
        if not registry.loaded_versions(name):
            log.warning("no complete version of %s yet; polling for one", name)
    failed = registry.failed_loads()
    if failed:
        for (name, version), message in sorted(failed.items()):
            print(
                f"model_server: loading {name} version {version} failed: {message}", file=sys.stderr
            )
        return 1
    try:
        grpc_srv, grpc_port = grpc_server(
            registry,
            f"{args.bind_address}:{args.port}",
            args.grpc_max_threads,
            allow_reload_config=args.allow_reload_config,
        )
    except (OSError, RuntimeError) as err:
        print(f"model_server: {err}", file=sys.stderr)
        return 1
    print(f"Running gRPC ModelServer at {args.bind_address}:{grpc_port} ...", flush=True)
    rest = None
    if args.rest_api_port:
        try:
            rest, rest_port = rest_server(registry, args.bind_address, args.rest_api_port)
        except OSError as err:
            print(f"model_server: cannot bind the REST port: {err}", file=sys.stderr)
            grpc_srv.stop(0)
            return 1
        print(f"Exporting HTTP/REST API at:{args.bind_address}:{rest_port} ...", flush=True)
    registry.start_polling(
        args.file_system_poll_wait_seconds,
        args.model_config_file,
        args.model_config_file_poll_wait_seconds,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    registry.stop()
    if rest is not None:
        rest.shutdown()
    grpc_srv.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
