"""What the server serves: the models of a ModelServerConfig, each with the versions its
version policy asks for, loaded once complete; polled so new pushes and config edits are seen.

Like TF Serving: only numeric folders under a model's base path are versions; a version is
loaded once `saved_model.pb` is present; a new version is loaded before an old one is unloaded
(availability-preserving); a version that fails to load is reported as END with its error.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server.errors import ServingError
from serving.model_server.servable import Servable, is_complete

log = logging.getLogger("serving.model_server")

State = get_model_status_pb2.ModelVersionStatus.State


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parse a `--model_config_file` (text proto); a clear error names the file."""
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a ModelServerConfig text proto: {err}") from err
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: needs a model_config_list")
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ValueError(f"{path}: every model needs a name and a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {model.name}: platform {model.model_platform!r}")
    return config


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config `--model_name/--model_base_path` stand for."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base_path)
    model.model_platform = "tensorflow"
    return config


def complete_versions(base_path: str) -> list[int]:
    """The numeric, complete version folders under `base_path`, ascending."""
    if not tf.io.gfile.isdir(base_path):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(base_path))
    found = (int(n) for n in names if n.isdigit())
    return sorted(v for v in found if is_complete(os.path.join(base_path, str(v))))


def aspired_versions(policy, available: list[int]) -> list[int]:
    """The versions a ModelVersionPolicy serves out of `available` (ascending)."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return list(available)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    keep = policy.latest.num_versions if choice == "latest" else 1
    return list(available[-max(keep, 1) :])


@dataclass
class _Model:
    config: model_server_config_pb2.ModelConfig
    loaded: dict[int, Servable] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    unloaded: set[int] = field(default_factory=set)


class ModelRegistry:
    """The servables of a ModelServerConfig; `resolve` and `status` are thread-safe."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig):
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one sync at a time (poll thread, reload RPC)
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.apply_config(config)

    # -- config and file system ------------------------------------------------------------
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serve the models of `config`: new ones added, dropped ones unloaded, policies and
        labels updated; then load what the file system holds."""
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._sync_lock:  # no poll loads from an old base path meanwhile
            with self._lock:
                for name in list(self._models):
                    if name not in wanted:
                        log.info("model %s removed from the config: unloading", name)
                        del self._models[name]
                for name, model_config in wanted.items():
                    model = self._models.get(name)
                    if model is None:
                        self._models[name] = _Model(config=model_config)
                    elif model.config != model_config:
                        if model.config.base_path != model_config.base_path:
                            model.loaded.clear()
                            model.failed.clear()
                        model.config = model_config
            self._sync_all()

    def sync(self) -> None:
        """Load the aspired versions not yet loaded, then unload the others."""
        with self._sync_lock:
            self._sync_all()

    def _sync_all(self) -> None:
        with self._lock:
            models = list(self._models.items())
        for name, model in models:
            self._sync_model(name, model)

    def _sync_model(self, name: str, model: _Model) -> None:
        config = model.config
        aspired = aspired_versions(config.model_version_policy, complete_versions(config.base_path))
        for version in aspired:
            if version in model.loaded or version in model.failed:
                continue
            path = os.path.join(config.base_path, str(version))
            try:
                servable = Servable(name, version, path)
            except Exception as err:  # a broken SavedModel must not stop the others
                log.error("loading %s version %d from %s failed: %s", name, version, path, err)
                with self._lock:
                    model.failed[version] = f"{type(err).__name__}: {err}"
                continue
            with self._lock:
                model.loaded[version] = servable
                model.unloaded.discard(version)
            log.info("loaded %s version %d from %s", name, version, path)
        with self._lock:
            for version in [v for v in model.loaded if v not in aspired]:
                del model.loaded[version]
                model.unloaded.add(version)
                log.info("unloaded %s version %d", name, version)

    def start_polling(
        self,
        file_system_poll_s: float,
        config_path: str | None = None,
        config_poll_s: float = 0,
    ) -> None:
        """Poll the base paths every `file_system_poll_s` (0: never) and `config_path` every
        `config_poll_s` (0: never), in a daemon thread."""
        if file_system_poll_s <= 0 and not (config_path and config_poll_s > 0):
            return
        period = min(s for s in (file_system_poll_s, config_poll_s) if s > 0)

        def poll():
            waited_fs = waited_config = 0.0
            while not self._stop.wait(period):
                waited_fs += period
                waited_config += period
                if config_path and config_poll_s > 0 and waited_config >= config_poll_s:
                    waited_config = 0.0
                    self._reload_config_file(config_path)
                if file_system_poll_s > 0 and waited_fs >= file_system_poll_s:
                    waited_fs = 0.0
                    try:
                        self.sync()
                    except (OSError, tf.errors.OpError) as err:  # e.g. a bucket that blinked
                        log.error("polling the base paths failed, retrying: %s", err)

        self._thread = threading.Thread(target=poll, name="model-poll", daemon=True)
        self._thread.start()

    def _reload_config_file(self, path: str) -> None:
        try:
            config = read_model_server_config(path)
        except (OSError, ValueError, tf.errors.OpError) as err:
            log.error("keeping the current config: %s", err)
            return
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._lock:
            current = {name: model.config for name, model in self._models.items()}
        if wanted != current:
            log.info("config %s changed: applying it", path)
            self.apply_config(config)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- requests ------------------------------------------------------------------------
    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The loaded servable a ModelSpec asks for: a version, a label, or the latest."""
        with self._lock:
            model = self._models.get(spec.name)
            if model is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: model '{spec.name}' is not served "
                    f"(served: {', '.join(sorted(self._models)) or 'none'})",
                )
            choice = spec.WhichOneof("version_choice")
            if choice == "version":
                version = spec.version.value
            elif choice == "version_label":
                labels = model.config.version_labels
                if spec.version_label not in labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {spec.version_label} "
                        f"(model {spec.name} has: {', '.join(sorted(labels)) or 'none'})",
                    )
                version = labels[spec.version_label]
            else:
                if not model.loaded:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Latest({spec.name}): no version loaded",
                    )
                return model.loaded[max(model.loaded)]
            if version not in model.loaded:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({spec.name}, {version}); "
                    f"loaded versions: {sorted(model.loaded) or 'none'}",
                )
            return model.loaded[version]

    def status(self, spec: model_pb2.ModelSpec) -> list[get_model_status_pb2.ModelVersionStatus]:
        """GetModelStatus' answer: every version known for the model (or the one asked for)."""
        with self._lock:
            model = self._models.get(spec.name)
            if model is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
                )
            states = {v: (State.END, "") for v in model.unloaded}
            states.update({v: (State.END, message) for v, message in model.failed.items()})
            states.update({v: (State.AVAILABLE, "") for v in model.loaded})
            choice = spec.WhichOneof("version_choice")
            if choice == "version_label":
                if spec.version_label not in model.config.version_labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {spec.version_label}",
                    )
                wanted = model.config.version_labels[spec.version_label]
            else:
                wanted = spec.version.value if choice == "version" else None
        if wanted is not None:
            if wanted not in states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {wanted} of model {spec.name}",
                )
            states = {wanted: states[wanted]}
        if not states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        answer = []
        for version in sorted(states):
            state, message = states[version]
            status = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
            if message:
                status.status.error_code = 13  # tensorflow.error.INTERNAL
                status.status.error_message = message
            answer.append(status)
        return answer

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def loaded_versions(self, name: str) -> list[int]:
        with self._lock:
            model = self._models.get(name)
            return sorted(model.loaded) if model else []

    def failed_loads(self) -> dict[tuple[str, int], str]:
        """(model, version) -> the error of each version that failed to load."""
        with self._lock:
            return {
                (name, version): message
                for name, model in self._models.items()
                for version, message in model.failed.items()
            }
