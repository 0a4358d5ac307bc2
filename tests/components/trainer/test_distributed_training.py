"""run_fn under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train one model.

The parent builds real inputs (ExampleGen's executor, a tf.Transform graph), then starts this
file twice as `--worker SPEC.json` with a TF_CONFIG each; the workers meet over loopback ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[3]
DIM = 16
WORKER_TIMEOUT_S = 420


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """ExampleGen output (train: two files, so each worker reads whole files; eval: one file,
    sharded by rows) and the transform graph fitted on the train rows."""
    from tfx.proto import example_gen_pb2

    from pipeline.demo_data import DemoData, demo_samples, write_recipe_csv
    from tests.components.example_gen.test_example_gen import run_executor
    from tests.tft_helpers import analyze

    root = tmp_path_factory.mktemp("distributed")
    labels, users, items, _ = demo_samples(
        DemoData(rows=1600, items=100, user_dim=DIM, item_dim=DIM)
    )
    for name, rows in (("train/a.csv", slice(0, 640)), ("train/b.csv", slice(640, 1280))):
        write_recipe_csv(root / "input" / name, labels[rows], users[rows], items[rows])
    write_recipe_csv(root / "input" / "eval.csv", labels[1280:], users[1280:], items[1280:])
    splits = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name="train", pattern="train/*.csv"),
            example_gen_pb2.Input.Split(name="eval", pattern="eval.csv"),
        ]
    )
    examples = run_executor(root, splits, example_gen_pb2.Output(), DIM, DIM)
    analyze(root, labels[:1280], users[:1280], items[:1280])
    return {"root": root, "examples_uri": examples.uri, "transform": str(root / "transform")}


def _spec(inputs: dict, out: Path, index: int, **config) -> dict:
    return {
        "examples_uri": inputs["examples_uri"],
        "transform": inputs["transform"],
        "out": str(out),
        "weights": str(out / "final_weights.npz"),
        "config": {
            "epochs": 2,
            "batch_size": 64,
            "seed": 5,
            "user_dim": DIM,
            "item_dim": DIM,
            "distribution": "multi_worker",
            **config,
        },
        "index": index,
    }


def _start_worker(spec: dict, out: Path, tf_config: dict | None):
    """This file as `--worker SPEC.json` in a subprocess; (process, log file, out)."""
    out.mkdir()
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(out / "log.txt", "w")  # noqa: SIM115 (closed by _wait_all)
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", str(spec_path)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log, out


def _wait_all(workers) -> None:
    """Wait for every worker (bounded); kill what is left; assert each exited 0."""
    try:
        for process, _, _ in workers:
            process.wait(timeout=WORKER_TIMEOUT_S)
    finally:
        for process, log, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for process, _, out in workers:
        assert process.returncode == 0, (out / "log.txt").read_text()[-4000:]


def test_two_workers_train_one_model_and_only_the_chief_exports(inputs, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _start_worker(
            _spec(inputs, tmp_path / f"worker{index}", index),
            tmp_path / f"worker{index}",
            {"cluster": cluster, "task": {"type": "worker", "index": index}},
        )
        for index in range(2)
    ]
    _wait_all(workers)

    chief, other = (tmp_path / "worker0", tmp_path / "worker1")
    first = np.load(chief / "final_weights.npz")
    second = np.load(other / "final_weights.npz")
    assert len(first.files) == 6  # two towers and the output layer, kernel and bias each
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])

    info = json.loads((chief / "model" / "finetower_model.json").read_text())
    assert info["history"]["loss"][1] < info["history"]["loss"][0]
    # the global batch of 64 is split over the two workers: the same steps as one worker
    assert info["training_epoch_steps"][0] == 1280 // 64
    for name in ("Format-Serving", "user_tower", "item_tower"):
        assert (chief / "model" / name / "saved_model.pb").is_file()
    assert not (other / "model").exists()  # the other worker saved into a discarded folder
    assert not (other / "model_run").exists()
    assert tf.io.gfile.glob(str(chief / "model_run" / "**" / "events.out.tfevents.*"))


def test_mirrored_on_one_machine_trains_and_exports(inputs, tmp_path):
    out = tmp_path / "mirrored"
    _wait_all([_start_worker(_spec(inputs, out, 0, distribution="mirrored"), out, None)])
    info = json.loads((out / "model" / "finetower_model.json").read_text())
    assert info["history"]["loss"][1] < info["history"]["loss"][0]
    assert (out / "model" / "user_tower" / "saved_model.pb").is_file()


def test_strategy_and_sharding_rules(monkeypatch):
    from components.trainer import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    default = distribute.strategy_for(None)
    assert default is tf.distribute.get_strategy()
    assert distribute.num_workers(default) == 1 and distribute.is_chief(default)
    assert distribute.per_replica_batch(128, default) == 128
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.strategy_for("multi_worker")
    with pytest.raises(ValueError, match="one_device, mirrored, multi_worker"):
        distribute.strategy_for("parameter_server")
    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.shard_policy(num_files=4, workers=2) == policy.FILE
    assert distribute.shard_policy(num_files=1, workers=2) == policy.DATA

    class ThreeReplicas:
        num_replicas_in_sync = 3

    with pytest.raises(ValueError, match="does not divide by the 3 replicas"):
        distribute.per_replica_batch(128, ThreeReplicas())
    # run_fn's explicit check, before any training work
    with pytest.raises(ValueError, match="batch_size 128 .* choose a multiple of 3"):
        distribute.check_global_batch(128, ThreeReplicas())
    distribute.check_global_batch(129, ThreeReplicas())


def _worker_main(spec_path: str) -> None:
    """One worker: run_fn on the parent's inputs; the final weights saved for comparison."""
    spec = json.loads(Path(spec_path).read_text())
    from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
    from tfx.components.util import tfxio_utils
    from tfx.types import artifact_utils, standard_artifacts

    from components.trainer import training

    examples = standard_artifacts.Examples()
    examples.uri = spec["examples_uri"]
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    out = Path(spec["out"])
    fn_args = FnArgs(
        train_files=[os.path.join(examples.uri, "Split-train", "*")],
        eval_files=[os.path.join(examples.uri, "Split-eval", "*")],
        transform_output=spec["transform"],
        serving_model_dir=str(out / "model" / "Format-Serving"),
        model_run_dir=str(out / "model_run"),
        data_accessor=DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
            record_batch_factory=None,
            data_view_decode_fn=None,
        ),
        custom_config=spec["config"],
    )
    export_all = training.export.export_all

    def export_and_record(model, *args, **kwargs):
        weights = {v.name: v.numpy() for v in model.weights}
        np.savez(spec["weights"], **{f"w{i}": weights[k] for i, k in enumerate(sorted(weights))})
        return export_all(model, *args, **kwargs)

    training.export.export_all = export_and_record
    training.run_fn(fn_args)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit("usage: test_distributed_training.py --worker SPEC.json")
