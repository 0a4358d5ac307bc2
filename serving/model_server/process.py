"""A model server in a subprocess, for tests and local tools: the stand-in
(`python -m serving.model_server`) or a real `tensorflow_model_server`, on loopback ports,
ready once every model of its config has an AVAILABLE version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import portpicker
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc

from serving.model_server.registry import read_model_server_config

REAL_BINARY = "tensorflow_model_server"
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def real_binary() -> str | None:
    """The path of tensorflow_model_server when it is on PATH."""
    return shutil.which(REAL_BINARY)


class ModelServerProcess:
    """`with ModelServerProcess(config) as server: server.grpc_target ...`; `stop()` and
    `start()` again keep the same ports (a restart)."""

    def __init__(
        self,
        model_config_file: str | os.PathLike,
        *,
        binary: str | None = None,
        log_path: str | os.PathLike | None = None,
        extra_flags: tuple[str, ...] = (),
        ready_timeout_s: float = 180.0,
    ):
        self.model_config_file = str(model_config_file)
        self.binary = binary
        self.grpc_port = portpicker.pick_unused_port()
        self.rest_port = portpicker.pick_unused_port()
        self.log_path = Path(log_path or f"{self.model_config_file}.server.log")
        self.extra_flags = tuple(extra_flags)
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def command(self) -> list[str]:
        flags = [
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_config_file={self.model_config_file}",
            *self.extra_flags,
        ]
        if self.binary:
            return [self.binary, *flags]
        return [sys.executable, "-m", "serving.model_server", "--bind_address=127.0.0.1", *flags]

    def start(self) -> ModelServerProcess:
        """Start the server and wait until every configured model has an AVAILABLE version."""
        if self._process is not None and self._process.poll() is None:
            return self
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        repo = Path(__file__).resolve().parents[2]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo
            )
        self.wait_until_ready(self.ready_timeout_s)
        return self

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_until_ready(self, timeout_s: float) -> None:
        config = read_model_server_config(self.model_config_file)
        names = [m.name for m in config.model_config_list.config]
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            waiting = list(names)
            while waiting:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"model server exited with {self._process.returncode}:\n{self._log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"model server not ready within {timeout_s} s (waiting for {waiting}):"
                        f"\n{self._log_tail()}"
                    )
                name = waiting[0]
                request = get_model_status_pb2.GetModelStatusRequest(
                    model_spec=model_pb2.ModelSpec(name=name)
                )
                try:
                    response = stub.GetModelStatus(request, timeout=1.0)
                    if any(s.state == _AVAILABLE for s in response.model_version_status):
                        waiting.pop(0)
                        continue
                except grpc.RpcError:
                    pass  # not listening yet, or the model is still loading
                time.sleep(0.2)  # a poll interval, bounded by the deadline above

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll `predicate()` until it returns a truthy value (returned), at most `timeout_s`;
    TimeoutError names `what` otherwise. Exceptions of the predicate count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:  # not there yet: keep polling until the deadline
            last = err
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s" + (f" ({last})" if last else ""))
        time.sleep(interval_s)  # a poll interval, bounded by the deadline
