"""kinema's invisible watermark (and an optional visible mark), NumPy only.

Method: spread-spectrum in the luma, on a smooth low-frequency carrier. A fixed public key
seeds PCG64, which draws a 32x32 grid of standard normal values (zero mean, unit variance).
The grid is stretched over the whole frame by bilinear interpolation between cell centres
(so it is a smooth field at any frame size and aspect ratio) and added, times `STRENGTH`
levels, to R, G and B alike (a change of luma only) in every frame, then rounded and clipped.

Detection needs no original: average the luma over all frames (moving content blurs out,
the static pattern adds up), resample to the 32x32 grid by area averaging (so any size read
back works: upscaled, downscaled, a different aspect), take a high-pass (each cell minus the
mean of its 3x3 neighbourhood, removing smooth content), clip outliers at 3 robust standard
deviations (object edges), and compute the normalised correlation with the expected pattern
after the same steps, times sqrt(1024). Without the watermark that score is roughly standard
normal; `THRESHOLD` was set from scores measured on clips without it
(benchmarks/watermark_robustness.py). The key is public: anyone can detect the mark, and
anyone who knows this method can weaken it. It says "made by kinema", not who made it.

It survives what a video usually goes through (H.264 re-encoding, rescaling, a left-right
flip: the score is the larger of the correlations with the template and with its mirror
image) because the carrier lives at frequencies a codec keeps; it does not survive cropping
or heavy blurring.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GRID = 32  # carrier cells per side
KEY = 0x6B696E656D61  # "kinema"
STRENGTH = 2.0  # peak-ish amplitude in 8-bit levels (the carrier has unit standard deviation)
SMALL_SIDE = 128  # frames with a shorter side get proportionally more strength (2x at 64x64)
THRESHOLD = 4.0  # detection score above which the mark is reported present
NAME = "kinema-wm1"  # recorded in the video's metadata and manifest
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # BT.709, the matrix kinema's files are tagged with
_TEMPLATE_SIDE = 8 * GRID


@dataclass(frozen=True)
class Detection:
    """A watermark check: the score, the threshold it was held to, and the verdict."""

    score: float
    threshold: float
    present: bool


@lru_cache(maxsize=8)
def pattern(key: int = KEY) -> np.ndarray:
    """The keyed (GRID, GRID) float64 grid: zero mean, unit standard deviation."""
    p = np.random.Generator(np.random.PCG64(key)).standard_normal((GRID, GRID))
    return (p - p.mean()) / p.std()


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights between cell centres, edges clamped."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = x - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - f)
    np.add.at(m, (np.arange(n_out), i1), f)
    return m


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights averaging the input pixels each output cell covers (fractional overlap)."""
    edges = np.arange(n_out + 1) * n_in / n_out
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    m = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return m / m.sum(1, keepdims=True)


@lru_cache(maxsize=16)
def carrier(height: int, width: int, key: int = KEY) -> np.ndarray:
    """The pattern stretched smoothly over a (height, width) frame, float32, unit-variance grid values."""
    return (_interp_matrix(height, GRID) @ pattern(key) @ _interp_matrix(width, GRID).T).astype(np.float32)


def strength_for(height: int, width: int) -> float:
    """The amplitude used at a frame size: STRENGTH, raised for frames under SMALL_SIDE pixels a side.

    A small frame has few pixels per carrier cell and a codec spends few bits on it, so the
    mark needs more amplitude to survive there (measured in benchmarks/watermark_robustness.py).
    """
    return STRENGTH * max(1.0, SMALL_SIDE / min(height, width))


def embed(frames: np.ndarray, strength: float | None = None, key: int = KEY) -> np.ndarray:
    """uint8 (T, H, W, 3) frames with the watermark added to every frame's luma (strength: `strength_for`)."""
    h, w = frames.shape[1:3]
    strength = strength_for(h, w) if strength is None else strength
    c = carrier(h, w, key) * np.float32(strength)  # (H, W)
    out = frames.astype(np.float32) + c[None, :, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _highpass(g: np.ndarray) -> np.ndarray:
    pad = np.pad(g, 1, mode="reflect")
    h, w = g.shape
    box = sum(pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    return g - box


@lru_cache(maxsize=1)
def _round_trip() -> np.ndarray:
    """(GRID, GRID): grid -> carrier at a reference size -> area-averaged back to the grid (both linear)."""
    return _area_matrix(GRID, _TEMPLATE_SIDE) @ _interp_matrix(_TEMPLATE_SIDE, GRID)


@lru_cache(maxsize=4)
def _template(key: int = KEY) -> np.ndarray:
    """What detection expects to find: the pattern taken through the carrier, the resampling and the high-pass."""
    m = _round_trip()
    t = _highpass(m @ pattern(key) @ m.T)
    return t - t.mean()


def residual(luma: np.ndarray) -> np.ndarray:
    """(GRID, GRID): a (H, W) mean luma image area-averaged to the grid, high-passed, outliers clipped."""
    h, w = luma.shape
    g = _area_matrix(GRID, h) @ luma.astype(np.float64) @ _area_matrix(GRID, w).T  # (GRID, GRID)
    r = _highpass(g)
    s = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-6  # robust standard deviation
    r = np.clip(r, -3 * s, 3 * s)
    return r - r.mean()


def score_residual(r: np.ndarray, key: int = KEY) -> float:
    """Normalised correlation of a `residual` with the key's template, times sqrt(GRID*GRID).

    The larger of two: against the template and against its mirror image, so a video
    flipped left to right keeps its mark (every step of detection commutes with the flip).
    """
    t = _template(key) if key == KEY else _template.__wrapped__(key)  # wrong-key sweeps skip the cache
    denom = np.sqrt((r * r).sum() * (t * t).sum())
    if denom == 0:
        return 0.0
    return float(max((r * t).sum(), (r * t[:, ::-1]).sum()) / denom * GRID)


def score_mean_luma(luma: np.ndarray, key: int = KEY) -> float:
    """The detection score of a (H, W) mean luma image (see the module doc)."""
    return score_residual(residual(luma), key)


def detect(frames, key: int = KEY, threshold: float = THRESHOLD) -> Detection:
    """Look for the watermark in RGB uint8 frames of any size: a (T, H, W, 3) array or an iterable of (H, W, 3)."""
    s = score_mean_luma(mean_luma(frames), key)
    return Detection(s, threshold, s > threshold)


def mean_luma(frames) -> np.ndarray:
    """The (H, W) float64 mean BT.709 luma of RGB frames (an array or an iterable)."""
    luma, n = None, 0
    for f in frames:  # one frame at a time: no float copy of the whole clip
        y = np.asarray(f, np.float32) @ _LUMA
        luma = y.astype(np.float64) if luma is None else luma + y
        n += 1
    if n == 0:
        raise ValueError("no frames to look for the watermark in")
    return luma / n


# ---------------------------------------------------------------------------- visible mark

_GLYPHS = {  # 5x7 bitmaps
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "I": ["11111", "00100", "00100", "00100", "00100", "00100", "11111"],
}


def visible_mark(frame: np.ndarray, text: str = "AI") -> np.ndarray:
    """The (H, W, 3) uint8 frame with a small "AI" label in the bottom-right corner (a copy)."""
    h, w = frame.shape[:2]
    px = max(1, min(h, w) // 96)  # glyph pixel size: 2 at 256x256, 1 at 64x64
    glyph_w, glyph_h, gap, pad = 5 * px, 7 * px, px, 2 * px
    box_w = len(text) * glyph_w + (len(text) - 1) * gap + 2 * pad
    box_h = glyph_h + 2 * pad
    if box_w + 2 * px > w or box_h + 2 * px > h:
        return frame.copy()  # too small to label
    out = frame.copy()
    y0, x0 = h - box_h - px, w - box_w - px
    region = out[y0:y0 + box_h, x0:x0 + box_w].astype(np.float32)
    out[y0:y0 + box_h, x0:x0 + box_w] = np.rint(region * 0.45).astype(np.uint8)  # darkened backing box
    for i, ch in enumerate(text):
        bits = np.array([[c == "1" for c in row] for row in _GLYPHS[ch]])
        mask = np.kron(bits, np.ones((px, px), bool))
        gx = x0 + pad + i * (glyph_w + gap)
        out[y0 + pad:y0 + pad + glyph_h, gx:gx + glyph_w][mask] = 255
    return out
