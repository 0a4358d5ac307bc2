import json

import pytest
import torch
from safetensors.torch import load_file

from finetower.checkpoint import latest_checkpoint
from finetower.dataset import open_samples
from finetower.errors import ArtifactError
from finetower.runs import load_run, run_fingerprint
from finetower.train import TrainConfig, evaluate_samples, resume, train


class Interrupt(Exception):
    pass


def stop_at(step):
    def on_step(state):
        if state.step == step:
            raise Interrupt

    return on_step


def test_learns_the_signal_and_writes_the_run(sample_files, tmp_path):
    run = tmp_path / "run"
    result = train(
        sample_files["train"],
        run,
        val_data=sample_files["val"],
        config=TrainConfig(epochs=4),
        progress=False,
    )
    assert result.history[-1]["val_auc"] > 0.75
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 4
    assert set(history[0]) == {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
    config = json.loads((run / "config.json").read_text())
    assert config["parameters"] == 16_577
    assert config["fingerprint"] == result.fingerprint == run_fingerprint(run)
    assert list((run / "logs").glob("events.out.tfevents.*"))
    loaded = load_run(run)
    val = open_samples(sample_files["val"])
    assert evaluate_samples(loaded, val).loss == pytest.approx(history[-1]["val_loss"], rel=1e-5)


def test_same_seed_same_model_other_seed_other_model(sample_files, tmp_path):
    config = TrainConfig(epochs=1, seed=3)
    a = train(sample_files["val"], tmp_path / "a", config=config, progress=False)
    b = train(sample_files["val"], tmp_path / "b", config=config, progress=False)
    c = train(
        sample_files["val"], tmp_path / "c", config=TrainConfig(epochs=1, seed=4), progress=False
    )
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


@pytest.mark.parametrize("text_mode", ["convert", "stream"])
def test_resumed_run_equals_uninterrupted_run(sample_files, tmp_path, text_mode):
    config = TrainConfig(epochs=2, checkpoint_every=10, seed=5, text_mode=text_mode)
    kwargs = dict(val_data=sample_files["val"], config=config, dropout=0.2, progress=False)
    whole = train(sample_files["train"], tmp_path / "whole", **kwargs)

    killed = tmp_path / "killed"
    with pytest.raises(Interrupt):
        train(sample_files["train"], killed, on_step=stop_at(65), **kwargs)
    assert latest_checkpoint(killed).name == "step-000000060"  # mid second epoch
    resumed = resume(killed, progress=False)

    assert resumed.fingerprint == whole.fingerprint
    assert resumed.history == whole.history
    a, b = (
        load_file(str(killed / "model.safetensors")),
        load_file(str(tmp_path / "whole" / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_twice_into_one_run_directory_is_refused(sample_files, tmp_path):
    train(sample_files["val"], tmp_path / "run", config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(ArtifactError, match="--resume"):
        train(sample_files["val"], tmp_path / "run", config=TrainConfig(epochs=1), progress=False)


def test_early_stopping_restores_the_best_weights(sample_files, tmp_path):
    # validation labels flipped: val loss is best after the first epoch, then worsens
    flipped = tmp_path / "flipped.txt"
    lines = sample_files["val"].read_text().splitlines()
    flipped.write_text("".join(("0" if x[0] == "1" else "1") + x[1:] + "\n" for x in lines))
    result = train(
        sample_files["train"],
        tmp_path / "run",
        val_data=flipped,
        config=TrainConfig(epochs=20, patience=2, lr=3e-3),
        progress=False,
    )
    assert result.stopped_early
    assert len(result.history) == 3
    assert result.best_epoch == 0
    best_val = evaluate_samples(load_run(tmp_path / "run"), open_samples(flipped)).loss
    assert best_val == pytest.approx(result.history[0]["val_loss"], rel=1e-5)


def test_large_batch_learning_rate_rules():
    assert TrainConfig(batch_size=4096, lr_rule="sqrt").effective_lr == pytest.approx(
        1e-3 * 32**0.5
    )
    assert TrainConfig(batch_size=4096, lr_rule="linear").effective_lr == pytest.approx(0.032)
    assert TrainConfig(batch_size=4096).effective_lr == 1e-3
