"""Train the prompt policy's classifier head on the development prompt sets (never the held-out one).

    python -m kinema.runtime.safety.train_head [--check]

Softmax regression over the hashed character n-grams of `runtime/safety/classifier.py`,
fitted by full-batch gradient descent with L2 weight decay (NumPy only). The refusal
threshold is chosen by 5-fold cross-validation on the same rows: the lowest probability
of "violating" above every benign row's score from the folds that did not see it. `--check`
prints the cross-validated figures without writing `runtime/data/policy_head.npz`. The
held-out prompt set is never read here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .classifier import BENIGN, DIM, HEAD_PATH, Head, features

DATA = Path(__file__).resolve().parents[2] / "tests" / "runtime" / "data"  # a checkout's prompt sets
# The first multilingual held-out set was measured once, then became development data.
TRAIN_SETS = (DATA / "policy_v2_dev.jsonl", DATA / "policy_v2_heldout_a.jsonl", DATA / "policy_prompts.jsonl")
CLASSES = [BENIGN, "violence", "sexual", "sexual_minors", "hate"]
MAX_BENIGN_REFUSED = 0.0


def load_rows(paths=TRAIN_SETS) -> list[dict]:
    rows = []
    for p in paths:
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def fit(x: np.ndarray, y: np.ndarray, steps: int = 1000, lr: float = 4.0, decay: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression by gradient descent; class weights balance the benign and violating rows."""
    n, k = len(y), len(CLASSES)
    onehot = np.eye(k, dtype=np.float32)[y]
    counts = np.bincount(y, minlength=k).astype(np.float32)
    sample_w = (n / (k * np.maximum(counts, 1)))[y][:, None]
    w = np.zeros((DIM, k), np.float32)
    b = np.zeros(k, np.float32)
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * sample_w / n
        w -= lr * (x.T @ g + decay * w)
        b -= lr * g.sum(0)
    return w, b


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each row's probability of being violating, from a head that did not see it."""
    order = np.random.default_rng(seed).permutation(len(y))
    p_bad = np.zeros(len(y), np.float32)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        w, b = fit(x[train], y[train])
        z = x[test] @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p_bad[test] = 1.0 - p[:, 0]
    return p_bad


def pick_threshold(p_bad: np.ndarray, benign: np.ndarray) -> float:
    """The lowest threshold that refuses at most MAX_BENIGN_REFUSED of the benign rows (and never below 0.5)."""
    scores = np.sort(p_bad[benign])[::-1]
    allowed = int(np.floor(MAX_BENIGN_REFUSED * len(scores)))
    return float(max(0.5, scores[allowed] + 1e-4 if allowed < len(scores) else 0.5))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kinema.runtime.safety.train_head", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print the cross-validated figures, write nothing")
    args = ap.parse_args(argv)
    rows = load_rows()
    x = np.stack([features(r["prompt"]) for r in rows])
    y = np.array([CLASSES.index(r["expect"] or BENIGN) for r in rows])
    p_bad = cross_validate(x, y)
    benign = y == 0
    t = pick_threshold(p_bad, benign)
    refused = p_bad >= t
    print(f"{len(rows)} rows; threshold {t:.3f}: cross-validated recall {refused[~benign].mean():.3f}, "
          f"benign refused {refused[benign].mean():.3f} ({refused[benign].sum()} of {benign.sum()})")
    if args.check:
        return
    w, b = fit(x, y)
    Head(CLASSES, w, b, t).save(HEAD_PATH)
    print(f"wrote {HEAD_PATH}")


if __name__ == "__main__":
    main()
