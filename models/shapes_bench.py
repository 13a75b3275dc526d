"""ShapesBench: scores how well a video follows a ShapesWorld prompt, with classical image analysis.

Plain NumPy (no torch, no scipy) so `compare` and the benchmarks can score bundles without
the torch extra. For each video the scorer finds the background colour, segments the
objects by linear unmixing against the palette, and checks per expected object its
colour, shape, size (when the row states one) and motion, plus the object count; it also
reports temporal flicker and motion smoothness in the spirit of VBench.

Prompt rows are JSON lines:
    {"prompt": "...", "background": "black",
     "objects": [{"color": "red", "shape": "circle", "motion": "left", "size": "small"}]}
("size" optional). Objects of one row have distinct colours: colour is how the scorer tells
them apart.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from kinema.models import shapes_world as sw

DATA_DIR = Path(__file__).parent / "data"
PROMPTS_PATH = DATA_DIR / "shapes_prompts.jsonl"
HELDOUT_PROMPTS_PATH = DATA_DIR / "shapes_prompts_heldout.jsonl"

ATTRIBUTES = ("background", "count", "color", "shape", "size", "motion")

_COLOR_NAMES = tuple(sw.COLORS)
_PALETTE = np.array([sw.COLORS[c] for c in _COLOR_NAMES], np.float32)  # (K, 3)
_BG_NAMES = tuple(sw.BACKGROUNDS)
_BG_PALETTE = np.array([sw.BACKGROUNDS[b] for b in _BG_NAMES], np.float32)  # (B, 3)


def _unit_area(shape: str) -> float:
    """Area of `shape` as ShapesWorld draws it, in units of its nominal radius squared."""
    r = 100.0
    g = np.arange(-150, 150, dtype=np.float32) + 0.5
    return float(sw.coverage(shape, g[None, :], g[:, None], r, 0.0).sum()) / r**2


_AREA = {s: _unit_area(s) for s in sw.SHAPES}
# Smallest object ShapesWorld draws (a small star at the end of a shrink), as a fraction of
# min(H, W)**2; blobs below 40% of it are noise.
_MIN_AREA = _AREA["star"] * (sw.SIZE_RADIUS["small"] / sw.GROW_K) ** 2
_BLOB_FRACTION = 0.4
# A pixel belongs to an object when it is at least half that colour over the background and
# its colour lies within this RGB distance of the background-to-colour line.
_MAX_RESIDUAL = 70.0
# Symmetry period (radians) of each shape, for the rotations tried when matching templates.
_PERIOD = {"square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}
_TEMPLATE_STEP = math.radians(7.5)
_TEMPLATE_BLURS = (1.2,)  # pixels

# Motion thresholds, in fractions of the frame extent / area ratios.
_MOVE = 0.15  # net centroid displacement of a left/right/up/down move (true: 0.42)
_BOUNCE_LEG = 0.12  # both legs of a bounce, out and back (true: 0.40 each)
_GROW_RATIO = 1.6  # end/start area of grow (true: GROW_K**4 = 2.86)
_SPIN = 0.2  # angular-signature change of a spin (ShapesWorld spins score > 0.4, still objects 0)
_SIZE_SPLIT = math.sqrt(sw.SIZE_RADIUS["small"] * sw.SIZE_RADIUS["large"])


# ---------------------------------------------------------------------------- prompt rows


def validate_row(row: object, where: str = "row") -> dict:
    """The row itself when it is a valid prompt row; otherwise ValueError naming `where` and the problem."""

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(row, dict):
        raise bad(f"expected a JSON object, got {type(row).__name__}")
    extra = set(row) - {"prompt", "background", "objects"}
    if extra:
        raise bad(f"unknown keys {sorted(extra)}; allowed: prompt, background, objects")
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise bad('"prompt" must be a non-empty string')
    if row.get("background") not in sw.BACKGROUNDS:
        raise bad(f'"background" {row.get("background")!r} is not one of {", ".join(sw.BACKGROUNDS)}')
    objects = row.get("objects")
    if not isinstance(objects, list) or not 1 <= len(objects) <= 2:
        raise bad('"objects" must be a list of 1 or 2 objects')
    allowed = {"color": tuple(sw.COLORS), "shape": sw.SHAPES, "motion": sw.MOTIONS, "size": sw.SIZES}
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise bad(f"object {i} must be a JSON object")
        extra = set(obj) - set(allowed)
        if extra:
            raise bad(f"object {i} has unknown keys {sorted(extra)}; allowed: {', '.join(allowed)}")
        for key, values in allowed.items():
            if key == "size" and key not in obj:
                continue
            if obj.get(key) not in values:
                raise bad(f"object {i} {key} {obj.get(key)!r} is not one of {', '.join(values)}")
        if obj["shape"] == "circle" and obj["motion"] == "spin":
            raise bad(f"object {i} is a spinning circle, which looks the same as a still one")
    colors = [o["color"] for o in objects]
    if len(set(colors)) != len(colors):
        raise bad(f"objects must have distinct colours (the scorer tells them apart by colour), got {colors}")
    return row


def load_prompts(path: str | Path) -> list[dict]:
    """The validated prompt rows of a JSONL file; ValueError names the line and the problem."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            rows.append(validate_row(row, where))
    if not rows:
        raise ValueError(f"{path}: no prompt rows")
    return rows


# ---------------------------------------------------------------------------- image analysis


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


def _components(mask: np.ndarray) -> list[int]:
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


def _background(frames: np.ndarray) -> tuple[str | None, np.ndarray]:
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


def _object_layers(frames: np.ndarray, bg: np.ndarray) -> dict[str, np.ndarray]:
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


def _template_scores(alpha: np.ndarray, cx: float, cy: float) -> dict[str, float]:
    """shape -> best soft IoU of `alpha` (2D coverage) with that shape's template of equal area."""
    area = float(alpha.sum())
    h, w = alpha.shape
    out = {}
    for shape in sw.SHAPES:
        r = math.sqrt(area / _AREA[shape])
        half = int(math.ceil(sw.BOUND[shape] * r)) + 3
        x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half + 1)
        y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half + 1)
        px = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, None, :]
        py = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[None, :, None]
        if shape == "circle":
            angles = np.zeros((1, 1, 1), np.float32)
        else:
            angles = np.arange(0.0, _PERIOD[shape], _TEMPLATE_STEP, dtype=np.float32)[:, None, None]
        tpl = sw.coverage(shape, px, py, np.float32(r), angles)  # (A, h', w')
        # Also match blurred templates: a decoder's soft edges round off star tips and corners.
        tpl = np.concatenate([tpl] + [_blur2d(tpl, s) for s in _TEMPLATE_BLURS])
        crop = alpha[y0:y1, x0:x1][None]
        inter = np.minimum(tpl, crop).sum((1, 2))
        union = np.maximum(tpl, crop).sum((1, 2)) + (area - crop.sum())  # blob mass outside the crop
        out[shape] = float((inter / np.maximum(union, 1e-6)).max())
    return out


def _blur2d(x: np.ndarray, sigma: float) -> np.ndarray:
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


def _classify_motion(t: np.ndarray, cx: np.ndarray, cy: np.ndarray, area: np.ndarray, sigs: np.ndarray) -> str:
    """One of ShapesWorld's MOTIONS from a track (times, centroids as frame fractions, areas, signatures)."""
    n = len(t)
    k = max(1, n // 6)
    pos = np.stack([cx, cy], 1)  # (n, 2)
    start, end = pos[:k].mean(0), pos[-k:].mean(0)
    # bounce: along some axis, the track goes out and comes back by a clear amount
    for axis in (0, 1):
        p = pos[:, axis]
        i = int(np.argmax(np.abs(p - start[axis])))
        out_leg, back_leg = p[i] - start[axis], p[i] - end[axis]
        if abs(out_leg) >= _BOUNCE_LEG and abs(back_leg) >= _BOUNCE_LEG and out_leg * back_leg > 0:
            return "bounce"
    net = end - start
    axis = int(np.argmax(np.abs(net)))
    if abs(net[axis]) >= _MOVE and abs(net[axis]) >= 1.5 * abs(net[1 - axis]):
        return ("left", "right", "up", "down")[2 * axis + int(net[axis] > 0)]
    ratio = area[-k:].mean() / max(area[:k].mean(), 1e-9)
    if ratio >= _GROW_RATIO:
        return "grow"
    if ratio <= 1 / _GROW_RATIO:
        return "shrink"
    if n >= 9:  # a 3-frame moving average: rotation is slow, pixel noise is not (short clips turn too fast)
        sigs = (sigs[:-2] + sigs[1:-1] + sigs[2:]) / 3.0
    change = np.abs(sigs - sigs[0]).sum(1)  # L1 distance in [0, 2]
    if change.max() >= _SPIN:
        return "spin"
    return "still"


def _measure(layer: np.ndarray, min_blob: float) -> dict | None:
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


def flicker_score(frames: np.ndarray) -> float:
    """VBench-style temporal flicker: mean over consecutive pairs of (255 - mean|f_t - f_{t-1}|) / 255.

    1.0 for a static video; lower when frames change (by motion or by flicker).
    """
    f = frames.astype(np.float32)
    if len(f) < 2:
        return 1.0
    return float((255.0 - np.abs(f[1:] - f[:-1]).mean()) / 255.0)


def smoothness_score(frames: np.ndarray) -> float:
    """Motion smoothness: how well each odd frame is predicted from its neighbours.

    (255 - mean|f_i - (f_{i-1} + f_{i+1}) / 2|) / 255 over odd i with both neighbours; VBench
    interpolates with a learned model, here the prediction is the linear midpoint.
    """
    f = frames.astype(np.float32)
    idx = np.arange(1, len(f) - 1, 2)
    if len(idx) == 0:
        return 1.0
    return float((255.0 - np.abs(f[idx] - 0.5 * (f[idx - 1] + f[idx + 1])).mean()) / 255.0)


def score_video(frames: np.ndarray, row: dict) -> dict:
    """Per-check booleans, detected attributes, `adherence` (mean of the checks), flicker, smoothness.

    Checks: background; object count (significant 8-connected blobs of any palette colour, the
    median over frames, equals the number of objects); per expected object: colour (a blob of
    that colour in at least half the frames), shape (best template match: each shape at the
    blob's area, over rotations), size when stated (equivalent radius vs the geometric mean of
    small and large), motion (classified from the centroid track, area trend and angular
    signature). Shape, size and motion of a missing object are False.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be uint8 (T>=2, H, W, 3), got {frames.dtype} {frames.shape}")
    validate_row(row)
    t_all, h, w, _ = frames.shape
    side = min(h, w)
    min_blob = _BLOB_FRACTION * _MIN_AREA * side * side

    bg_name, bg_rgb = _background(frames)
    layers = _object_layers(frames, bg_rgb)

    # count: significant blobs per frame over all colours, on up to 5 evenly spaced frames
    probe = np.unique(np.linspace(0, t_all - 1, min(5, t_all)).round().astype(int))
    counts = [
        sum(a >= min_blob for layer in layers.values() for a in _components(layer[i] >= 0.5)) for i in probe
    ]
    detected_count = int(np.median(counts))

    objects = []
    for obj in row["objects"]:
        res = {"expected": dict(obj), "color": False, "shape": False, "motion": False}
        if "size" in obj:
            res["size"] = False
        res.update(detected_shape=None, detected_motion=None, detected_size=None)
        layer = layers.get(obj["color"])
        track = _measure(layer, min_blob) if layer is not None else None
        if track is not None:
            res["color"] = True
            tt = track["t"]
            picks = np.unique(np.linspace(0, len(tt) - 1, min(4, len(tt))).round().astype(int))
            scores = [_template_scores(layer[tt[j]], track["cx"][j], track["cy"][j]) for j in picks]
            mean = {s: float(np.mean([sc[s] for sc in scores])) for s in sw.SHAPES}
            shape = max(mean, key=mean.get)
            motion = _classify_motion(
                tt, track["cx"] / w, track["cy"] / h, track["area"] / side**2, track["sigs"]
            )
            r_eq = math.sqrt(float(np.median(track["area"])) / _AREA[obj["shape"]]) / side
            size = "small" if r_eq < _SIZE_SPLIT else "large"
            res.update(
                shape=shape == obj["shape"],
                motion=motion == obj["motion"],
                detected_shape=shape,
                detected_motion=motion,
                detected_size=size,
            )
            if "size" in obj:
                res["size"] = size == obj["size"]
        objects.append(res)

    checks = [bg_name == row["background"], detected_count == len(row["objects"])]
    for res in objects:
        checks += [res[a] for a in ("color", "shape", "size", "motion") if a in res]
    return {
        "prompt": row["prompt"],
        "background": bg_name == row["background"],
        "detected_background": bg_name,
        "count": detected_count == len(row["objects"]),
        "detected_count": detected_count,
        "objects": objects,
        "adherence": float(np.mean(checks)),
        "flicker": flicker_score(frames),
        "smoothness": smoothness_score(frames),
    }


# ---------------------------------------------------------------------------- aggregation


def aggregate(scored_rows: Sequence[dict]) -> dict:
    """Per-attribute accuracy, overall `adherence` (mean of the per-video adherences), mean flicker and smoothness.

    An attribute's accuracy pools its checks over all videos (and objects); "size" counts only
    objects whose row states a size and is None when none does. `motion_by_kind` is the
    motion accuracy per expected motion. `rows` holds the per-video results.
    """
    if not scored_rows:
        raise ValueError("aggregate needs at least one scored video")
    pooled: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    by_motion: dict[str, list[bool]] = {}
    for s in scored_rows:
        pooled["background"].append(s["background"])
        pooled["count"].append(s["count"])
        for res in s["objects"]:
            for a in ("color", "shape", "size", "motion"):
                if a in res:
                    pooled[a].append(res[a])
            by_motion.setdefault(res["expected"]["motion"], []).append(res["motion"])
    return {
        "n": len(scored_rows),
        "adherence": float(np.mean([s["adherence"] for s in scored_rows])),
        "accuracy": {a: (float(np.mean(v)) if v else None) for a, v in pooled.items()},
        "motion_by_kind": {m: float(np.mean(v)) for m, v in sorted(by_motion.items())},
        "flicker": float(np.mean([s["flicker"] for s in scored_rows])),
        "smoothness": float(np.mean([s["smoothness"] for s in scored_rows])),
        "rows": list(scored_rows),
    }


def ground_truth_generate(row: dict, seed: int, frames: int = 17, height: int = 64, width: int = 64) -> np.ndarray:
    """ShapesWorld's own render of the row's spec, rng seeded by `seed`: what a perfect model would draw."""
    return sw.render(sw.row_to_spec(row), frames, height, width, rng=np.random.default_rng(seed))


def run_bench(rows: Iterable[dict], seeds: Sequence[int], generate: Callable[[str, int], np.ndarray]) -> dict:
    """Scores generate(prompt, seed) for every row and seed; returns `aggregate` of them."""
    scored = []
    for row in rows:
        for seed in seeds:
            s = score_video(generate(row["prompt"], seed), row)
            s["seed"] = seed
            scored.append(s)
    return aggregate(scored)


# ---------------------------------------------------------------------------- prompt files


def make_prompt_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(in-distribution rows, held-out rows), deterministic for `seed`.

    In-distribution: every legal (shape, motion) alone twice (random colour, size,
    background) plus 70 sampled clips, mostly with two objects; captions are varied.
    Held-out: each HELD_OUT combination alone and next to an in-distribution object.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for shape in sw.SHAPES:
        for motion in sw.MOTIONS:
            if shape == "circle" and motion == "spin":
                continue
            for _ in range(2):
                while True:
                    obj = sw.ObjectSpec(shape, _pick(rng, tuple(sw.COLORS)), _pick(rng, sw.SIZES), motion)
                    spec = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj,))
                    if not sw.is_heldout(spec):
                        break
                rows.append(sw.spec_to_row(spec, sw.caption(spec, rng)))
    while len(rows) < 70 + 70:
        spec = sw.sample_spec(rng)
        if len(spec.objects) == 1 and rng.random() < 0.7:
            continue
        rows.append(sw.spec_to_row(spec, sw.caption(spec, rng)))

    held = []
    for color, shape, motion in sorted(sw.HELD_OUT):
        obj = sw.ObjectSpec(shape, color, _pick(rng, sw.SIZES), motion)
        spec = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj,))
        held.append(sw.spec_to_row(spec, sw.caption(spec, rng)))
        while True:
            other = sw.sample_spec(rng).objects[0]
            pair = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj, other))
            if other.color != color and not (other.size == obj.size == "large") and not sw.is_heldout(
                sw.ClipSpec(pair.background, (other,))
            ):
                break
        held.append(sw.spec_to_row(pair, sw.caption(pair, rng)))
    return rows, held


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def write_prompt_files(directory: str | Path = DATA_DIR, seed: int = 0) -> tuple[Path, Path]:
    """Writes shapes_prompts.jsonl and shapes_prompts_heldout.jsonl into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows, held = make_prompt_rows(seed)
    paths = directory / PROMPTS_PATH.name, directory / HELDOUT_PROMPTS_PATH.name
    for path, data in zip(paths, (rows, held)):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
        tmp.replace(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m kinema.models.shapes_bench write-prompts | ground-truth`."""
    parser = argparse.ArgumentParser(prog="shapes_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write-prompts", help="regenerate the prompt files in models/data")
    gt = sub.add_parser("ground-truth", help="score ShapesWorld's own renders (checks the scorer)")
    gt.add_argument("--prompts", default=str(PROMPTS_PATH))
    gt.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    gt.add_argument("--frames", type=int, default=17)
    gt.add_argument("--height", type=int, default=64)
    gt.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    if args.cmd == "write-prompts":
        for p in write_prompt_files():
            print(p)
        return
    rows = load_prompts(args.prompts)
    by_prompt = {r["prompt"]: r for r in rows}
    result = run_bench(
        rows,
        args.seeds,
        lambda prompt, seed: ground_truth_generate(by_prompt[prompt], seed, args.frames, args.height, args.width),
    )
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
