"""The procedural world the built-in `tiny` family trains on: moving coloured shapes with captions.

Plain NumPy (no torch, no Pillow) so the runtime-side scorer (`shapes_bench`) can render
references without the torch extra. A clip is described by a frozen `ClipSpec`; `render`
turns it into uint8 frames [T, H, W, 3] with analytic signed-distance anti-aliasing, and
`caption` / `canonical_caption` turn it into text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
# Saturated, mutually distant colours; none is close to a background (no gray object).
COLORS = {
    "red": (230, 30, 30),
    "green": (40, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (245, 225, 40),
    "orange": (250, 140, 20),
    "purple": (150, 60, 210),
    "cyan": (40, 215, 225),
    "pink": (250, 120, 190),
}
BACKGROUNDS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down", "bounce", "spin", "grow", "shrink", "still")

# Nominal radius as a fraction of min(H, W). Small stays ~2 latent pixels wide at 8x
# spatial compression of a 64x64 clip even at the end of a shrink.
SIZE_RADIUS = {"small": 0.12, "large": 0.2}
# Linear travel of left/right/up/down and the excursion of a bounce, as a fraction of
# the frame extent along the motion axis.
TRAVEL = 0.42
BOUNCE_AMPLITUDE = 0.40
# grow/shrink scale from r/GROW_K to r*GROW_K: area changes by GROW_K**4 (~2.9x).
GROW_K = 1.3
# Total rotation of a spin over the clip. Less than half the square's 90-degree symmetry
# per frame even at T=5, so the turning direction is never aliased.
SPIN_DEGREES = 120.0

# Per-shape geometry relative to the nominal radius r: (a, n, m) for the polygon/star SDF
# (circumradius a*r, n points, m sharpness) and the bounding radius used for placement.
_SQUARE_HALF = 0.8
_POLY = {"square": (_SQUARE_HALF * math.sqrt(2.0), 4, 2.0), "triangle": (1.25, 3, 2.0), "star": (1.25, 5, 3.2)}
BOUND = {"circle": 1.0, "square": _SQUARE_HALF * math.sqrt(2.0), "triangle": 1.25, "star": 1.25}

# (color, shape, motion) combinations never sampled for training: generalisation probes.
HELD_OUT = frozenset(
    {
        ("red", "star", "grow"),
        ("green", "triangle", "spin"),
        ("blue", "circle", "bounce"),
        ("yellow", "square", "shrink"),
        ("orange", "circle", "up"),
        ("purple", "star", "left"),
        ("cyan", "square", "down"),
        ("pink", "triangle", "right"),
    }
)


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str
    size: str
    motion: str

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, tuple(COLORS)),
            ("size", self.size, SIZES),
            ("motion", self.motion, MOTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"object {field} {value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ClipSpec:
    background: str
    objects: tuple[ObjectSpec, ...]

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r} is not one of {', '.join(BACKGROUNDS)}")
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a clip has 1 or 2 objects, got {len(self.objects)}")
        object.__setattr__(self, "objects", tuple(self.objects))


def is_heldout(spec: ClipSpec) -> bool:
    """True when any object of `spec` is a held-out (color, shape, motion) combination."""
    return any((o.color, o.shape, o.motion) in HELD_OUT for o in spec.objects)


def sample_spec(rng: np.random.Generator, *, allow_heldout: bool = False, two_objects: float = 0.5) -> ClipSpec:
    """A random clip: 1-2 objects of distinct colours (two with probability `two_objects`), never a spinning circle, at most one large."""
    while True:
        n = 1 if rng.random() < 1.0 - two_objects else 2
        colors = rng.choice(len(COLORS), size=n, replace=False)
        objects = []
        for i in range(n):
            shape = SHAPES[rng.integers(len(SHAPES))]
            motions = MOTIONS if shape != "circle" else tuple(m for m in MOTIONS if m != "spin")
            motion = motions[rng.integers(len(motions))]
            size = SIZES[rng.integers(len(SIZES))]
            objects.append(ObjectSpec(shape, list(COLORS)[colors[i]], size, motion))
        if n == 2 and all(o.size == "large" for o in objects):
            continue  # two large objects cannot always stay apart at 64x64
        spec = ClipSpec(list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))], tuple(objects))
        if allow_heldout or not is_heldout(spec):
            return spec


# ---------------------------------------------------------------------------- rendering


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, r: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) of `shape` with nominal radius r rotated by angle.

    px, py are offsets from the centre in pixels (y down); r and angle broadcast against them.
    Polygons and the star use Inigo Quilez's sdStar (regular polygon when m == 2).
    """
    if shape == "circle":
        return np.sqrt(px * px + py * py) - r
    if shape == "square":
        angle = angle + math.pi / 4  # sdStar puts a vertex on the axis; turn it into an upright square
    c, s = np.cos(angle), np.sin(angle)
    # rotate into the shape frame and flip y so a vertex points up on screen
    qx = c * px + s * py
    qy = -(-s * px + c * py)
    a, n, m = _POLY[shape]
    rad = a * r
    an = math.pi / n
    en = math.pi / m
    acs = (math.cos(an), math.sin(an))
    ecs = (math.cos(en), math.sin(en))
    bn = np.mod(np.arctan2(qx, qy), 2.0 * an) - an
    length = np.sqrt(qx * qx + qy * qy)
    x = length * np.cos(bn) - rad * acs[0]
    y = length * np.abs(np.sin(bn)) - rad * acs[1]
    h = np.clip(-(x * ecs[0] + y * ecs[1]), 0.0, rad * acs[1] / ecs[1])
    x = x + ecs[0] * h
    y = y + ecs[1] * h
    return np.sqrt(x * x + y * y) * np.sign(x)


def coverage(shape: str, px: np.ndarray, py: np.ndarray, r, angle) -> np.ndarray:
    """Anti-aliased coverage in [0, 1]: a one-pixel-wide linear ramp across the SDF zero."""
    return np.clip(0.5 - shape_sdf(shape, px, py, np.asarray(r), np.asarray(angle)), 0.0, 1.0)


@dataclass(frozen=True)
class _Track:
    cx: np.ndarray  # (T,) centre x in pixels
    cy: np.ndarray  # (T,)
    r: np.ndarray  # (T,) nominal radius in pixels
    angle: np.ndarray  # (T,) radians
    bound: np.ndarray  # (T,) bounding radius in pixels


def _offsets(motion: str, u: np.ndarray, rng: np.random.Generator, w: int, h: int) -> tuple:
    """Unit-free centre offsets (dx, dy) in pixels along the clip for a motion; in-place motions give zeros."""
    zero = np.zeros_like(u)
    if motion in ("left", "right"):
        d = TRAVEL * w * u
        return (-d if motion == "left" else d), zero
    if motion in ("up", "down"):
        d = TRAVEL * h * u
        return zero, (-d if motion == "up" else d)
    if motion == "bounce":
        turn = rng.uniform(0.4, 0.6)
        tri = np.where(u <= turn, u / turn, (1.0 - u) / (1.0 - turn))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if rng.random() < 0.5:
            return sign * BOUNCE_AMPLITUDE * w * tri, zero
        return zero, sign * BOUNCE_AMPLITUDE * h * tri
    return zero, zero


def _track(obj: ObjectSpec, frames: int, h: int, w: int, rng: np.random.Generator) -> tuple:
    """Per-frame (radius, angle, dx, dy, bounding radius) of one object, relative to its start position."""
    u = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    r0 = SIZE_RADIUS[obj.size] * min(h, w)
    if obj.motion == "grow":
        r = r0 * GROW_K ** (2.0 * u - 1.0)
    elif obj.motion == "shrink":
        r = r0 * GROW_K ** (1.0 - 2.0 * u)
    else:
        r = np.full_like(u, r0)
    angle0 = 0.0 if obj.shape == "circle" else rng.uniform(-0.3, 0.3)
    if obj.motion == "spin":
        direction = 1.0 if rng.random() < 0.5 else -1.0
        angle = angle0 + direction * math.radians(SPIN_DEGREES) * u
    else:
        angle = np.full_like(u, angle0)
    dx, dy = _offsets(obj.motion, u, rng, w, h)
    return r, angle, dx, dy, r * BOUND[obj.shape]


def _start_range(d: np.ndarray, bound: np.ndarray, extent: int) -> tuple[float, float]:
    """Interval of start coordinates keeping every frame's bounding circle inside [0, extent]."""
    margin = 1.0
    lo = float(np.max(bound - d)) + margin
    hi = float(np.min(extent - bound - d)) - margin
    if lo > hi:  # does not fit: centre the trajectory
        mid = 0.5 * (extent - float(d.max() + d.min()))
        return mid, mid
    return lo, hi


def _tracks(spec: ClipSpec, frames: int, h: int, w: int, rng: np.random.Generator) -> list[_Track]:
    geoms = [_track(o, frames, h, w, rng) for o in spec.objects]
    ranges = [(_start_range(dx, b, w), _start_range(dy, b, h)) for (_, _, dx, dy, b) in geoms]

    if len(geoms) == 1:
        (r, angle, dx, dy, b), ((xlo, xhi), (ylo, yhi)) = geoms[0], ranges[0]
        return [_Track(rng.uniform(xlo, xhi) + dx, rng.uniform(ylo, yhi) + dy, r, angle, b)]
    # Two objects: draw many candidate start pairs at once and keep the first whose bounding
    # circles stay apart over the whole clip (else the one with the widest minimum gap).
    k = 256
    starts = [
        (rng.uniform(xlo, xhi, k), rng.uniform(ylo, yhi, k)) for (xlo, xhi), (ylo, yhi) in ranges
    ]  # per object: (K,), (K,)
    (_, _, dxa, dya, ba), (_, _, dxb, dyb, bb) = geoms
    (xa, ya), (xb, yb) = starts
    dist = np.hypot((xa[:, None] + dxa) - (xb[:, None] + dxb), (ya[:, None] + dya) - (yb[:, None] + dyb))  # (K, T)
    gap = (dist - ba - bb).min(1)  # (K,)
    ok = np.flatnonzero(gap >= 1.0)
    i = int(ok[0]) if len(ok) else int(np.argmax(gap))
    return [
        _Track(x[i] + dx, y[i] + dy, r, angle, b)
        for (r, angle, dx, dy, b), (x, y) in zip(geoms, starts)
    ]


def render(
    spec: ClipSpec,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """uint8 frames (T, H, W, 3) of `spec`; `rng` (or an int seed, None = 0) picks positions and phases."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"frames >= 1 and height, width >= 8 required, got {frames}x{height}x{width}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
    tracks = _tracks(spec, frames, height, width, rng)
    img = np.empty((frames, height, width, 3), np.float32)
    img[:] = np.asarray(BACKGROUNDS[spec.background], np.float32)
    t_idx = np.arange(frames)[:, None, None]
    for obj, tr in zip(spec.objects, tracks):
        # Evaluate the SDF only in a per-frame window around the object: (T, S, S).
        size = int(math.ceil(2.0 * float(tr.bound.max()))) + 3
        ox = np.floor(tr.cx - 0.5 * size).astype(np.int64)  # (T,)
        oy = np.floor(tr.cy - 0.5 * size).astype(np.int64)
        ar = np.arange(size)
        xs = ox[:, None] + ar[None, :]  # (T, S) pixel columns
        ys = oy[:, None] + ar[None, :]
        px = (xs + 0.5 - tr.cx[:, None])[:, None, :]  # (T, 1, S)
        py = (ys + 0.5 - tr.cy[:, None])[:, :, None]  # (T, S, 1)
        cov = coverage(obj.shape, px, py, tr.r[:, None, None], tr.angle[:, None, None])  # (T, S, S)
        xs_c = np.clip(xs, 0, width - 1)[:, None, :]
        ys_c = np.clip(ys, 0, height - 1)[:, :, None]
        inside = ((xs >= 0) & (xs < width))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
        a = (cov * inside).astype(np.float32)[..., None]  # (T, S, S, 1)
        color = np.asarray(COLORS[obj.color], np.float32)
        region = img[t_idx, ys_c, xs_c]  # (T, S, S, 3)
        img[t_idx, ys_c, xs_c] = region + a * (color - region)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- captions

_SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
}
_SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
_MOTION_WORDS = {
    "left": ("moving left", "sliding to the left", "drifting leftwards", "going left", "moving to the left", "travelling left"),
    "right": ("moving right", "sliding to the right", "drifting rightwards", "going right", "moving to the right", "travelling right"),
    "up": ("moving up", "rising", "drifting upwards", "floating up", "going up", "moving upward"),
    "down": ("moving down", "falling", "sinking", "drifting downwards", "going down", "moving downward"),
    "bounce": ("bouncing", "bouncing back and forth", "bouncing off a wall", "bouncing to and fro"),
    "spin": ("spinning", "rotating", "turning", "spinning in place", "rotating in place"),
    "grow": ("growing", "getting bigger", "expanding", "growing larger", "swelling up"),
    "shrink": ("shrinking", "getting smaller", "contracting", "shrinking away"),
    "still": ("standing still", "not moving", "staying still", "sitting still", "staying in place"),
}
_CANONICAL_MOTION = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "bounce": "bouncing",
    "spin": "spinning",
    "grow": "growing",
    "shrink": "shrinking",
    "still": "standing still",
}
_ONE = (
    "{o} on a {bg} background",
    "{o}, {bg} backdrop",
    "on {bg}, {o}",
    "{o} against a {bg} background",
    "a {bg} background with {o}",
    "{o} over {bg}",
    "{o} on {bg}",
)
_TWO = (
    "{o1} and {o2} on a {bg} background",
    "{o1} and {o2}, {bg} backdrop",
    "on {bg}, {o1} and {o2}",
    "{o1} beside {o2}, on a {bg} background",
    "a {bg} background with {o1} and {o2}",
    "{o1} next to {o2} on {bg}",
)


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def _object_phrase(o: ObjectSpec, rng: np.random.Generator) -> str:
    noun = f"{o.color} {_pick(rng, _SHAPE_WORDS[o.shape])}"
    if rng.random() < 0.5:
        noun = f"{_pick(rng, _SIZE_WORDS[o.size])} {noun}"
    return f"{_article(noun)} {_pick(rng, _MOTION_WORDS[o.motion])}"


def caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """A randomly phrased caption (templates, synonyms, size sometimes omitted); at most ~20 words."""
    bg = spec.background
    if len(spec.objects) == 1:
        return _pick(rng, _ONE).format(o=_object_phrase(spec.objects[0], rng), bg=bg)
    o1, o2 = (_object_phrase(o, rng) for o in spec.objects)
    return _pick(rng, _TWO).format(o1=o1, o2=o2, bg=bg)


def canonical_caption(spec: ClipSpec) -> str:
    """The one fixed phrasing, e.g. 'a small red circle moving left on a black background'."""
    parts = [_article(f"{o.size} {o.color} {o.shape}") + " " + _CANONICAL_MOTION[o.motion] for o in spec.objects]
    return f"{' and '.join(parts)} on a {spec.background} background"


# ---------------------------------------------------------------------------- prompt rows


def stated_size(prompt: str, color: str) -> bool:
    """Whether `prompt` names the size of its `color` object: captions put the size word right before the colour."""
    words = "|".join(w for ws in _SIZE_WORDS.values() for w in ws)
    return re.search(rf"\b({words}) {color}\b", prompt) is not None


def spec_to_row(spec: ClipSpec, prompt: str) -> dict:
    """The JSONL prompt row for `spec` (format shared with `shapes_bench.load_prompts`).

    An object's "size" is in the row only when the prompt states it (captions omit it half
    the time): a size the prompt does not ask for is not checked.
    """
    objects = []
    for o in spec.objects:
        obj = {"color": o.color, "shape": o.shape, "motion": o.motion}
        if stated_size(prompt, o.color):
            obj["size"] = o.size
        objects.append(obj)
    return {"prompt": prompt, "background": spec.background, "objects": objects}


def row_to_spec(row: dict) -> ClipSpec:
    """The ClipSpec of a prompt row; a row without "size" renders its objects small."""
    return ClipSpec(
        row["background"],
        tuple(ObjectSpec(o["shape"], o["color"], o.get("size", "small"), o["motion"]) for o in row["objects"]),
    )
