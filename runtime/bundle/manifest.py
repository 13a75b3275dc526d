"""The typed manifest: one frozen tree, one strict parser, one serialiser.

`parse_manifest(data)` turns manifest.json's object into a `Manifest`. It refuses an
unknown key, a wrong type, a missing field and a value out of range, each with one line
naming the key path (`sampler.steps = 0 is outside [1, 1000]`). Nothing is defaulted
that describes the model: a field with a default here is an option of the format (an
empty negative prompt, no previews), never a model parameter. Sections that belong to a
tool (`model`, `quantization`, `tools`, `preview`, `text_encoder`) are JSON objects the
tool checks itself. `to_dict` writes the same tree back.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields

from ..errors import BundleError
from ..video.constants import MAX_FPS, MIN_FPS

FORMAT_NAME = "kinema-bundle"
FORMAT_VERSION = 1
PREDICTION_TYPES = ("flow", "epsilon", "v")
COMPONENTS_REQUIRED = ("text_encoder", "denoiser", "decoder_prefix", "decoder_step")
COMPONENTS_OPTIONAL = ("encoder",)
# Generous bounds that still stop a hostile manifest from asking for absurd work.
MAX_FRAMES_LIMIT = 4097
MAX_SIDE_LIMIT = 8192
MAX_TOKENS_LIMIT = 4096
MAX_FLOW_TIMESTEP = 1000.0  # a flow model's timesteps are σ * 1000


def _in(lo, hi):
    return {"range": (lo, hi)}


def _one_of(*choices):
    return {"choices": choices}


@dataclass(frozen=True)
class Signature:
    name: str
    dtype: str
    shape: list  # ints and axis names


@dataclass(frozen=True)
class FileEntry:
    file: str
    bytes: int = field(metadata=_in(0, 1 << 40))
    sha256: str


@dataclass(frozen=True)
class Component:
    file: str
    bytes: int = field(metadata=_in(0, 1 << 40))
    sha256: str
    inputs: list[Signature]
    outputs: list[Signature]
    precision: str | None = None
    external_data: list[FileEntry] | None = None
    export_check: dict | None = None  # the exporter's measured difference against PyTorch


@dataclass(frozen=True)
class Tokenizer:
    file: str
    bytes: int = field(metadata=_in(0, 1 << 30))
    sha256: str
    max_length: int = field(metadata=_in(1, MAX_TOKENS_LIMIT))
    pad_id: int = field(metadata=_in(0, 1 << 31))
    clean: str = field(default="none", metadata=_one_of("none", "unescape-whitespace"))  # engine/prompt_text.py


@dataclass(frozen=True)
class Latent:
    channels: int = field(metadata=_in(1, 1024))
    temporal_compression: int = field(metadata=_in(1, 1024))
    spatial_compression: int = field(metadata=_in(1, 1024))
    normalised: bool


@dataclass(frozen=True)
class VideoRules:
    """What sizes and lengths a bundle's graphs accept, and its defaults."""

    fps: float = field(metadata=_in(MIN_FPS, MAX_FPS))
    frames: int = field(metadata=_in(1, MAX_FRAMES_LIMIT))
    height: int = field(metadata=_in(1, MAX_SIDE_LIMIT))
    width: int = field(metadata=_in(1, MAX_SIDE_LIMIT))
    size_multiple: int = field(metadata=_in(1, 256))
    min_side: int = field(metadata=_in(1, MAX_SIDE_LIMIT))
    max_side: int = field(metadata=_in(1, MAX_SIDE_LIMIT))
    max_frames: int = field(metadata=_in(1, MAX_FRAMES_LIMIT))
    frame_multiple: int = field(metadata=_in(1, 64))  # frames = frame_multiple * k + frame_offset (4k+1 for a 4x causal VAE)
    frame_offset: int = field(metadata=_in(0, 63))


@dataclass(frozen=True)
class VpSchedule:
    """The training noise schedule of an epsilon or v model: every value from the model's own scheduler."""

    num_train_timesteps: int = field(metadata=_in(1, 100_000))
    beta_start: float = field(metadata=_in(0.0, 1.0))
    beta_end: float = field(metadata=_in(0.0, 1.0))
    beta_schedule: str = field(metadata=_one_of("linear", "scaled_linear"))


@dataclass(frozen=True)
class SamplerDefaults:
    prediction: str = field(metadata=_one_of(*PREDICTION_TYPES))
    schedule: str
    sampler: str
    steps: int = field(metadata=_in(1, 1000))
    guidance: float = field(metadata=_in(0.0, 100.0))
    shift: float = field(metadata=_in(1e-9, 1000.0))
    negative_prompt: str = ""
    spacing: str = field(default="leading", metadata=_one_of("leading", "trailing"))
    vp: VpSchedule | None = None  # required unless prediction is "flow"
    # A step-distilled flow model's own steps on the 0-1000 scale before the shift, `steps` of them
    # (sampling/schedules.py: flow_sigmas_listed); None: the sampler's grid for any step count.
    timesteps: list[float] | None = None


@dataclass(frozen=True)
class MergedLora:
    """A LoRA merged into the denoiser's weights at export, in the order they were applied."""

    file: str  # the file's name, without its folder
    sha256: str
    scale: float = field(metadata=_in(-100.0, 100.0))
    ignored_keys: int = field(default=0, metadata=_in(0, 1 << 31))  # keys matching no module, left out


@dataclass(frozen=True)
class Conditioning:
    text: bool
    cond_latents: bool
    negative_prompt: bool
    known_frames: list[str] | None = None  # None: any position


@dataclass(frozen=True)
class Cache:
    input: str
    output: str


@dataclass(frozen=True)
class Decoder:
    caches: list[Cache]
    prefix_latent_frames: int = field(default=1, metadata=_in(1, 64))
    step_latent_frames: int = field(default=1, metadata=_in(1, 64))


@dataclass(frozen=True)
class Manifest:
    format: str = field(metadata=_one_of(FORMAT_NAME))
    format_version: int = field(metadata=_in(1, FORMAT_VERSION))
    family: str
    components: dict[str, Component]
    tokenizer: Tokenizer
    files: list[FileEntry]
    latent: Latent
    video: VideoRules
    sampler: SamplerDefaults
    decoder: Decoder
    name: str | None = None
    created_by: str | None = None
    conditioning: Conditioning | None = None
    text_encoder: dict | None = None
    model: dict | None = None
    preview: dict | None = None
    quantization: dict | None = None
    tools: dict | None = None
    optimization: dict | None = None  # graph passes applied after export (quantize/fuse.py)
    loras: list[MergedLora] | None = None


def _fail(path: str, msg: str):
    raise BundleError(f"manifest: {path} {msg}")


def _parse(kind, value, path: str, meta=None):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        return _parse(options[0], value, path, meta)
    if origin is list:
        if not isinstance(value, list):
            _fail(path, f"= {_short(value)} is not a list")
        (item,) = typing.get_args(kind) or (object,)
        return tuple(_parse(item, v, f"{path}[{i}]") for i, v in enumerate(value)) if item is not object else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            _fail(path, f"= {_short(value)} is not an object")
        _, item = typing.get_args(kind)
        return {k: _parse(item, v, f"{path}.{k}") for k, v in value.items()}
    if kind is list:
        if not isinstance(value, list):
            _fail(path, f"= {_short(value)} is not a list")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            _fail(path, f"= {_short(value)} is not an object")
        return value
    if hasattr(kind, "__dataclass_fields__"):
        return parse_section(kind, value, path)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
    }[kind](value)
    if not ok:
        _fail(path, f"= {_short(value)} is not a {'number' if kind is float else kind.__name__}")
    meta = meta or {}
    if "range" in meta and not meta["range"][0] <= value <= meta["range"][1]:
        _fail(path, f"= {value!r} is outside [{meta['range'][0]:g}, {meta['range'][1]:g}]")
    if "choices" in meta and value not in meta["choices"]:
        _fail(path, f"= {value!r} is not one of {', '.join(map(repr, meta['choices']))}")
    return float(value) if kind is float else value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_section(cls, data, path: str):
    """One section of the tree from its JSON object: unknown, missing and mistyped keys named by path."""
    if not isinstance(data, dict):
        _fail(path, f"= {_short(data)} is not an object")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            _fail(f"{path}.{key}" if path else key, f"is not a field of this format (known: {', '.join(known)})")
    kw = {}
    for name, f in known.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                _fail(where, "is missing")
            continue
        kw[name] = _parse(hints[name], data[name], where, f.metadata)
    return cls(**kw)


def parse_manifest(data) -> Manifest:
    """The typed manifest from manifest.json's object; BundleError naming the key path of the first problem."""
    if not isinstance(data, dict):
        raise BundleError("manifest.json must hold a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise BundleError(f"manifest format {data.get('format')!r} is not {FORMAT_NAME!r}")
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(f"manifest format_version {version} is newer than this kinema supports ({FORMAT_VERSION}); upgrade kinema to use it")
    m = parse_section(Manifest, data, "")
    _cross_check(m)
    return m


def _cross_check(m: Manifest) -> None:
    """Rules between fields: required components, side limits, the schedule a prediction type needs."""
    for name in COMPONENTS_REQUIRED:
        if name not in m.components:
            _fail(f"components.{name}", "is missing")
    for name in m.components:
        if name not in COMPONENTS_REQUIRED + COMPONENTS_OPTIONAL:
            _fail(f"components.{name}", f"is not a component of this format ({', '.join(COMPONENTS_REQUIRED + COMPONENTS_OPTIONAL)})")
    v = m.video
    if v.min_side > v.max_side:
        _fail("video.min_side", f"= {v.min_side} is larger than video.max_side = {v.max_side}")
    if m.sampler.prediction != "flow" and m.sampler.vp is None:
        _fail("sampler.vp", f"is missing: a {m.sampler.prediction} model needs its training schedule")
    _check_timesteps(m.sampler)


def _check_timesteps(s: SamplerDefaults) -> None:
    ts = s.timesteps
    if ts is None:
        return
    if s.prediction != "flow":
        _fail("sampler.timesteps", f"is given for a {s.prediction} model; a timestep list is for flow models")
    if len(ts) != s.steps:
        _fail("sampler.timesteps", f"has {len(ts)} entries but sampler.steps = {s.steps}; they must be equal")
    for i, t in enumerate(ts):
        if not 0.0 < t <= MAX_FLOW_TIMESTEP:
            _fail(f"sampler.timesteps[{i}]", f"= {t!r} is outside (0, {MAX_FLOW_TIMESTEP:g}]")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        _fail("sampler.timesteps", "must be strictly descending")


def to_dict(section) -> dict:
    """The JSON object of a typed section (None fields left out), as parse_section reads it back."""
    out = {}
    for f in fields(section):
        value = getattr(section, f.name)
        if value is None:
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
