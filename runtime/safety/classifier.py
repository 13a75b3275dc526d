"""The prompt policy's learned part: a linear classifier over character n-grams of the normalised prompt.

Word lists miss what they do not list: a stem in an unlisted inflection, a compound, a new
misspelling. Character n-grams (3 to 5 letters, inside word boundaries) of the normalised
words share pieces with what the classifier was trained on, in any language written in
Latin letters. The weights (`data/policy_head.npz`, trained by `train_head.py`
on the development prompt set) score each category; a prompt is refused when the chance that
it is benign falls below the threshold stored with the weights. NumPy only, well under a
millisecond a prompt.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from .words import tokens

HEAD_PATH = Path(__file__).resolve().parents[1] / "data" / "policy_head.npz"
DIM = 1 << 15
NGRAMS = (3, 4, 5)
BENIGN = "benign"


def features(prompt: str) -> np.ndarray:
    """Hashed, L2-normalised bag of the normalised words and their character n-grams."""
    words, _ = tokens(prompt)
    idx = set()
    for w in words:
        idx.add(zlib.crc32(("w:" + w).encode()) % DIM)
        padded = f"<{w}>"
        for n in NGRAMS:
            for i in range(len(padded) - n + 1):
                idx.add(zlib.crc32(padded[i:i + n].encode()) % DIM)
    x = np.zeros(DIM, np.float32)
    if idx:
        x[list(idx)] = 1.0 / np.sqrt(len(idx))
    return x


class Head:
    """Softmax regression: `classes` (the benign class first), weights (DIM, classes), bias, refusal threshold."""

    def __init__(self, classes: list[str], weight: np.ndarray, bias: np.ndarray, threshold: float):
        if classes[0] != BENIGN or weight.shape != (DIM, len(classes)) or bias.shape != (len(classes),):
            raise ValueError("policy head: classes, weights and bias do not fit")
        self.classes, self.weight, self.bias, self.threshold = classes, weight.astype(np.float32), bias.astype(np.float32), float(threshold)

    def probabilities(self, prompt: str) -> dict[str, float]:
        x = features(prompt)
        nz = np.flatnonzero(x)
        z = x[nz] @ self.weight[nz] + self.bias
        p = np.exp(z - z.max())
        p /= p.sum()
        return dict(zip(self.classes, map(float, p)))

    def verdict(self, prompt: str) -> tuple[str, float] | None:
        """(category, its probability) when the prompt is refused, else None."""
        p = self.probabilities(prompt)
        if p[BENIGN] >= 1.0 - self.threshold:
            return None
        cat = max((c for c in self.classes if c != BENIGN), key=p.get)
        return cat, p[cat]

    def save(self, path: Path = HEAD_PATH) -> None:
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, classes=np.array(self.classes), weight=self.weight.astype(np.float16),
                                bias=self.bias, threshold=np.float32(self.threshold))
        tmp.replace(path)


@lru_cache(maxsize=1)
def default_head() -> Head | None:
    """The shipped head, or None when the file is missing."""
    if not HEAD_PATH.is_file():
        return None
    with np.load(HEAD_PATH, allow_pickle=False) as f:
        return Head([str(c) for c in f["classes"]], f["weight"], f["bias"], float(f["threshold"]))


__all__ = ["BENIGN", "DIM", "HEAD_PATH", "Head", "default_head", "features"]
