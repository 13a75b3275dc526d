"""ShapesBench's checks of one video against its prompt row: background, count, colour, shape, size, motion.

Also the two VBench-style quality scores of a video, temporal flicker and motion
smoothness. The measurements they read come from `shapes_analysis`.
"""

from __future__ import annotations

import math

import numpy as np

from kinema.models import shapes_world as sw
from kinema.models.shapes_analysis import AREA, BLOB_FRACTION, MIN_AREA, blur2d, components, find_background, measure_track, object_layers
from kinema.models.shapes_prompts import validate_row

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


def _template_scores(alpha: np.ndarray, cx: float, cy: float) -> dict[str, float]:
    """shape -> best soft IoU of `alpha` (2D coverage) with that shape's template of equal area."""
    area = float(alpha.sum())
    h, w = alpha.shape
    out = {}
    for shape in sw.SHAPES:
        r = math.sqrt(area / AREA[shape])
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
        tpl = np.concatenate([tpl] + [blur2d(tpl, s) for s in _TEMPLATE_BLURS])
        crop = alpha[y0:y1, x0:x1][None]
        inter = np.minimum(tpl, crop).sum((1, 2))
        union = np.maximum(tpl, crop).sum((1, 2)) + (area - crop.sum())  # blob mass outside the crop
        out[shape] = float((inter / np.maximum(union, 1e-6)).max())
    return out


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
    min_blob = BLOB_FRACTION * MIN_AREA * side * side

    bg_name, bg_rgb = find_background(frames)
    layers = object_layers(frames, bg_rgb)

    # count: significant blobs per frame over all colours, on up to 5 evenly spaced frames
    probe = np.unique(np.linspace(0, t_all - 1, min(5, t_all)).round().astype(int))
    counts = [
        sum(a >= min_blob for layer in layers.values() for a in components(layer[i] >= 0.5)) for i in probe
    ]
    detected_count = int(np.median(counts))

    objects = [_check_object(obj, layers.get(obj["color"]), min_blob, h, w) for obj in row["objects"]]

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


def _check_object(obj: dict, layer: np.ndarray | None, min_blob: float, h: int, w: int) -> dict:
    """The colour, shape, size (when `obj` states one) and motion checks of one expected object, and what was detected."""
    side = min(h, w)
    res = {"expected": dict(obj), "color": False, "shape": False, "motion": False}
    if "size" in obj:
        res["size"] = False
    res.update(detected_shape=None, detected_motion=None, detected_size=None)
    track = measure_track(layer, min_blob) if layer is not None else None
    if track is None:
        return res
    res["color"] = True
    tt = track["t"]
    picks = np.unique(np.linspace(0, len(tt) - 1, min(4, len(tt))).round().astype(int))
    scores = [_template_scores(layer[tt[j]], track["cx"][j], track["cy"][j]) for j in picks]
    mean = {s: float(np.mean([sc[s] for sc in scores])) for s in sw.SHAPES}
    shape = max(mean, key=mean.get)
    motion = _classify_motion(tt, track["cx"] / w, track["cy"] / h, track["area"] / side**2, track["sigs"])
    r_eq = math.sqrt(float(np.median(track["area"])) / AREA[obj["shape"]]) / side
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
    return res
