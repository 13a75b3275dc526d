"""ShapesBench's image analysis: the background, each palette colour's object layer, blobs and tracks.

Plain NumPy (no torch, no scipy), like the rest of the scorer. The background is read from
the frame border; objects are segmented by linear unmixing against the palette; a layer's
track is its per-frame centroid, area and angular signature, which the checks in
`shapes_score` read.
"""

from __future__ import annotations

import math

import numpy as np

from kinema.models import shapes_world as sw

_COLOR_NAMES = tuple(sw.COLORS)
_PALETTE = np.array([sw.COLORS[c] for c in _COLOR_NAMES], np.float32)  # (K, 3)
_BG_NAMES = tuple(sw.BACKGROUNDS)
_BG_PALETTE = np.array([sw.BACKGROUNDS[b] for b in _BG_NAMES], np.float32)  # (B, 3)


def _unit_area(shape: str) -> float:
    """Area of `shape` as ShapesWorld draws it, in units of its nominal radius squared."""
    r = 100.0
    g = np.arange(-150, 150, dtype=np.float32) + 0.5
    return float(sw.coverage(shape, g[None, :], g[:, None], r, 0.0).sum()) / r**2


AREA = {s: _unit_area(s) for s in sw.SHAPES}
# Smallest object ShapesWorld draws (a small star at the end of a shrink), as a fraction of
# min(H, W)**2; blobs below 40% of it are noise.
MIN_AREA = AREA["star"] * (sw.SIZE_RADIUS["small"] / sw.GROW_K) ** 2
BLOB_FRACTION = 0.4
# A pixel belongs to an object when it is at least half that colour over the background and
# its colour lies within this RGB distance of the background-to-colour line.
_MAX_RESIDUAL = 70.0


def _shift_or(m: np.ndarray) -> np.ndarray:
    """3x3 dilation over the last two axes (outside the frame counts as empty)."""
    p = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)])
    h, w = m.shape[-2:]
    out = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            out |= p[..., dy : dy + h, dx : dx + w]
    return out


def _erode(m: np.ndarray) -> np.ndarray:
    return ~_shift_or(~m)


def components(mask: np.ndarray) -> list[int]:
    """Areas of the 8-connected components of a 2D bool mask, largest first (run-length union-find)."""
    parent: list[int] = []
    sizes: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[tuple[int, int, int]] = []  # (run id, start, end) of the previous row, end exclusive
    for y in range(mask.shape[0]):
        row = mask[y]
        if not row.any():
            prev = []
            continue
        d = np.diff(np.concatenate(([0], row.view(np.int8), [0])))
        cur = []
        for s, e in zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()):
            i = len(parent)
            parent.append(i)
            sizes.append(e - s)
            for j, ps, pe in prev:
                if ps <= e and s <= pe:  # overlapping or diagonally touching
                    ri, rj = find(i), find(j)
                    if ri != rj:
                        parent[ri] = rj
            cur.append((i, s, e))
        prev = cur
    areas: dict[int, int] = {}
    for i, n in enumerate(sizes):
        r = find(i)
        areas[r] = areas.get(r, 0) + n
    return sorted(areas.values(), reverse=True)


def find_background(frames: np.ndarray) -> tuple[str | None, np.ndarray]:
    """(palette name or None, measured RGB) of the background from the frame border.

    The measured colour is the per-channel median of all border pixels; it names a palette
    background only when that is the nearest one and most border pixels lie close to it.
    """
    f = frames
    border = np.concatenate([f[:, 0], f[:, -1], f[:, :, 0], f[:, :, -1]], 1).reshape(-1, 3).astype(np.float32)
    rgb = np.median(border, 0)
    d = np.linalg.norm(_BG_PALETTE - rgb, axis=1)
    k = int(np.argmin(d))
    near = np.linalg.norm(border - rgb, axis=1) < 40.0
    if d[k] > 60.0 or near.mean() < 0.6:
        return None, rgb
    return _BG_NAMES[k], rgb


def _unmix(frames: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: nearest palette colour k, its coverage a in [0, 1], and the residual distance.

    Each pixel is modelled as (1 - a) * background + a * colour_k (anti-aliased or blurred
    edges are exactly such mixtures), so a blurry red edge on white is red at a = 0.5, not pink.
    """
    x = frames.astype(np.float32) - bg.astype(np.float32)  # (T, H, W, 3)
    k = np.zeros(x.shape[:3], np.int64)
    a_k = np.zeros(x.shape[:3], np.float32)
    r_k = np.zeros(x.shape[:3], np.float32)
    # Pixels within a few levels of the background have coverage < 0.1 for every colour: skip them.
    d = (_PALETTE - bg).astype(np.float32)  # (K, 3)
    dd = (d * d).sum(1)  # (K,)
    xx = (x * x).sum(-1)
    sel = xx >= (0.1 * math.sqrt(float(dd.min()))) ** 2
    xs, xxs = x[sel], xx[sel]  # (N, 3), (N,)
    xd = xs @ d.T  # (N, K)
    a = np.clip(xd / dd, 0.0, 1.0)
    res = xxs[:, None] - 2 * a * xd + a * a * dd  # squared residual (N, K)
    best = np.argmin(res, 1)
    rows = np.arange(len(best))
    k[sel] = best
    a_k[sel] = a[rows, best]
    r_k[sel] = np.sqrt(np.maximum(res[rows, best], 0.0))
    r_k[~sel] = np.sqrt(xx[~sel])
    return k, a_k, r_k


def object_layers(frames: np.ndarray, bg: np.ndarray) -> dict[str, np.ndarray]:
    """colour name -> (T, H, W) float coverage of the cleaned blobs of that colour.

    Speckle is removed by a 3x3 opening; the blob is then regrown inside the raw mask
    (geodesic reconstruction) so thin star tips survive.
    """
    k, a, r = _unmix(frames, bg)
    solid = (a >= 0.5) & (r < _MAX_RESIDUAL)
    layers = {}
    for ci in np.unique(k[solid]):
        raw = solid & (k == ci)  # (T, H, W)
        core = _shift_or(_erode(raw))
        if not core.any():
            continue
        for _ in range(4):
            core = _shift_or(core) & raw
        # Soft coverage over the blob and a one-pixel ring, so edge pixels count fractionally.
        ring = _shift_or(core) & (k == ci) & (r < _MAX_RESIDUAL)
        layers[_COLOR_NAMES[ci]] = np.where(ring, a, 0.0).astype(np.float32)
    return layers



def blur2d(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes (zero outside)."""
    r = int(math.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (0, 0)])
    x = sum(k[i] * p[..., i : i + h, :] for i in range(2 * r + 1))
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 0), (r, r)])
    return sum(k[i] * p[..., :, i : i + w] for i in range(2 * r + 1))


def _signature(alpha: np.ndarray, cx: float, cy: float, bins: int = 24) -> np.ndarray:
    """Angular mass distribution around the centroid (radius-weighted), normalised to sum 1."""
    ys, xs = np.nonzero(alpha > 0)
    wgt = alpha[ys, xs]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    rad = np.hypot(dx, dy)
    phi = (np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * bins
    # Linear binning so a sub-pixel shift does not jump mass between bins.
    i0 = np.floor(phi).astype(int) % bins
    f = phi - np.floor(phi)
    sig = np.bincount(i0, wgt * rad * (1 - f), bins) + np.bincount((i0 + 1) % bins, wgt * rad * f, bins)
    return sig / max(sig.sum(), 1e-9)



def measure_track(layer: np.ndarray, min_blob: float) -> dict | None:
    """Track of one colour layer (T, H, W): per-frame centroid, area and signature where present."""
    t_all, h, w = layer.shape
    area = layer.sum((1, 2))
    present = area >= min_blob
    if present.sum() < max(2, math.ceil(0.5 * t_all)):
        return None
    t = np.flatnonzero(present)
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    cx = (layer[t].sum(1) * xs).sum(1) / area[t]
    cy = (layer[t].sum(2) * ys).sum(1) / area[t]
    sigs = np.stack([_signature(layer[i], cx[j], cy[j]) for j, i in enumerate(t)])
    return {"t": t, "cx": cx, "cy": cy, "area": area[t], "sigs": sigs}
