"""Does normalizing the pretrained vectors cost quality? The recipe (bare tf_keras, 2 epochs,
batch 128, Adam 1e-3) on real item2vec vectors, per normalization, over seeds.

    python benchmarks/bench_normalize.py [--data ../shared/data/ml-100k] [--seeds 3]

Data: MovieLens (u.data; $FINETOWER_ML100K or ../shared/data/ml-100k). Item vectors: gensim
skip-gram (128-d) over each user's items in time order. Samples: for each interaction after a
user's fifth, the user vector is the mean of the previous 5 items' vectors, the item is the
positive, 4 uniform items the user never touched are negatives. Split by time (last 20% eval).
Statistics of z-score come from the train split, as Transform computes them. Prints val AUC.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MODES = ("none", "zscore", "zscore_global", "l2")


def samples(data: Path, seed: int = 0, window: int = 5, negatives: int = 4):
    import pandas as pd
    from gensim.models import Word2Vec

    log = pd.read_csv(data / "u.data", sep="\t", names=["user", "item", "rating", "time"])
    log = log.sort_values(["time", "user"], kind="stable")
    histories = [g.astype(str).tolist() for _, g in log.groupby("user")["item"]]
    w2v = Word2Vec(
        histories, vector_size=128, window=5, sg=1, negative=5, min_count=1, epochs=10,
        seed=1, workers=1,
    )  # fmt: skip
    items = np.array(sorted(int(k) for k in w2v.wv.index_to_key))
    vectors = np.stack([w2v.wv[str(i)] for i in items]).astype(np.float32)
    row = {item: k for k, item in enumerate(items)}
    rng = np.random.default_rng(seed)
    users, pos, labels, times = [], [], [], []
    for _, g in log.groupby("user"):
        seen = g["item"].map(row).to_numpy()
        own = set(seen.tolist())
        for k in range(window, len(seen)):
            user = vectors[seen[k - window : k]].mean(0)
            picks = [seen[k]]
            while len(picks) < 1 + negatives:
                j = int(rng.integers(len(items)))
                if j not in own:
                    picks.append(j)
            for n, j in enumerate(picks):
                users.append(user), pos.append(j), labels.append(n == 0)
                times.append(g["time"].iloc[k])
    users, item_vectors = np.stack(users), vectors[np.array(pos)]
    labels, times = np.array(labels, np.float32)[:, None], np.array(times)
    train = times <= np.quantile(times, 0.8)
    return users, item_vectors, labels, train


def normalize(x: np.ndarray, mode: str, train: np.ndarray) -> np.ndarray:
    ref = x[train]
    if mode == "zscore":  # per dimension, as components/transform does
        return (x - ref.mean(0)) / ref.std(0)
    if mode == "zscore_global":  # one mean and deviation over the whole tensor
        return (x - ref.mean()) / ref.std()
    if mode == "l2":
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("FINETOWER_ML100K") or REPO.parent / "shared" / "data" / "ml-100k"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    import tf_keras as keras
    from sklearn.metrics import roc_auc_score

    from components.trainer.model import build_dssm

    users, items, labels, train = samples(Path(args.data))
    print(f"{len(labels):,} samples ({train.sum():,} train), 128-d item2vec vectors")
    results = {}
    for mode in MODES:
        u, i = normalize(users, mode, train), normalize(items, mode, train)
        aucs = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = build_dssm(128, 128, 1e-3)
            model.fit([u[train], i[train]], labels[train], batch_size=128, epochs=2, verbose=0)
            scores = model.predict([u[~train], i[~train]], batch_size=4096, verbose=0).ravel()
            aucs.append(roc_auc_score(labels[~train].ravel(), scores))
        results[mode] = aucs
        print(f"{mode:14s} val AUC " + " ".join(f"{a:.4f}" for a in aucs), flush=True)
    base = np.mean(results["none"])
    for mode in MODES[1:]:
        print(f"{mode:14s} - none: {np.mean(results[mode]) - base:+.4f} (mean over seeds)")


if __name__ == "__main__":
    main()
