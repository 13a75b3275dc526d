"""The comparison's numbers: end-to-end video error and per-graph SQNR (JSON-safe: no infinities)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kinema.quantize import metrics


def finite(v: float) -> float | None:
    """JSON has no infinity: identical outputs are recorded as null ("identical" in the tables)."""
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def video_metrics(ref: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> dict:
    """End-to-end error of a set of uint8 videos against the reference set (same order).

    psnr_db pools the squared error over every video (one PSNR of the whole set);
    ssim, temporal_psnr_db and frame_change are means over the videos.
    """
    sq = sum(float(np.sum((r.astype(np.float64) - o.astype(np.float64)) ** 2)) for r, o in zip(ref, other))
    n = sum(r.size for r in ref)
    mse = sq / n
    return {
        "psnr_db": finite(math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)),
        "ssim": round(float(np.mean([metrics.video_ssim(r, o) for r, o in zip(ref, other)])), 5),
        "temporal_psnr_db": finite(float(np.mean([min(metrics.temporal_psnr_db(r, o), 99.0) for r, o in zip(ref, other)]))) if mse else None,
        "frame_change": round(float(np.mean([metrics.frame_change(o) for o in other])), 4),
        "videos": len(ref),
    }


def component_sqnr(ref_out: list[list[np.ndarray]], other_out: list[list[np.ndarray]], names: list[str], feeds: list[dict]) -> dict:
    """Pooled SQNR per output; text embeddings only over real tokens (padding is masked out downstream)."""
    res = {}
    for j, o in enumerate(names):
        sig = noise = 0.0
        for f, r, q in zip(feeds, ref_out, other_out):
            a, b = np.asarray(r[j], np.float64), np.asarray(q[j], np.float64)
            if o == "text_embeds" and "attention_mask" in f:
                keep = f["attention_mask"].astype(bool)
                a, b = a[keep], b[keep]
            sig += float(np.sum(a * a))
            noise += float(np.sum((a - b) ** 2))
        res[o] = finite(math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig else -math.inf))
    return res


def adherence(frames: np.ndarray, row: dict | None) -> float | None:
    """ShapesBench adherence of a video to its prompt row; None without a row."""
    if row is None:
        return None
    from kinema.models import shapes_bench

    return float(shapes_bench.score_video(frames, row)["adherence"])


__all__ = ["adherence", "component_sqnr", "finite", "video_metrics"]
