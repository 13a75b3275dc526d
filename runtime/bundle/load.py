"""Bundle folders: read and check `manifest.json`, the one contract between export and runtime.

A bundle is untrusted input. `load_bundle` checks the format name and version, the fields
the runtime relies on and their bounds, that every file the manifest or a graph names
stays inside the folder, and each file's size and sha256, before any graph is opened.
The identity (device, inode, size, modification time) of each graph file and of the
tokenizer is noted before it is hashed and compared again when it is opened
(`Bundle.check_unchanged`), so a file
replaced or rewritten in between (say, a bundle re-exported while an app has it loaded) is
refused, not run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError
from .scan import external_data_locations
from .preview import PreviewMap, parse_preview

FORMAT_NAME = "kinema-bundle"
FORMAT_VERSION = 1
COMPONENTS_REQUIRED = ("text_encoder", "denoiser", "decoder_prefix", "decoder_step")
COMPONENTS_OPTIONAL = ("encoder",)
PREDICTION_TYPES = ("flow", "epsilon", "v")
MAX_MANIFEST_BYTES = 1 << 20
# Generous bounds that still stop a hostile manifest from asking for absurd work.
MAX_FRAMES_LIMIT = 4097
MAX_SIDE_LIMIT = 8192
MAX_TOKENS_LIMIT = 4096


def default_bundle_path() -> Path:
    """The built-in bundle shipped inside the installed package."""
    return Path(__file__).resolve().parents[1] / "bundles" / "kinema-tiny"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class VideoRules:
    """What sizes and lengths a bundle's graphs accept, and its defaults."""

    fps: float
    frames: int
    height: int
    width: int
    size_multiple: int
    min_side: int
    max_side: int
    max_frames: int
    frame_multiple: int  # frames = frame_multiple * k + frame_offset (4k+1 for a 4x causal VAE)
    frame_offset: int


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    # component (or "tokenizer") -> [(manifest name, path, identity when checked)]: the graph and its external data
    stamps: dict[str, list] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def components(self) -> dict[str, dict]:
        return self.manifest["components"]

    def component_path(self, name: str) -> Path:
        return self.path / self.components[name]["file"]

    def has(self, name: str) -> bool:
        return name in self.components

    def check_unchanged(self, name: str) -> None:
        """Raise BundleError when a file of component `name` (or the "tokenizer") is no longer the one load_bundle checked."""
        for rel, path, stamp in self.stamps.get(name, ()):
            try:
                now = _stamp(path)
            except OSError:
                now = None
            if now != stamp:
                raise BundleError(f"bundle {self.path}: {rel} changed after the bundle was checked (replaced, rewritten or removed); load the bundle again")

    @property
    def video(self) -> VideoRules:
        v = self.manifest["video"]  # extra keys (from a newer exporter) are ignored, not a TypeError
        return VideoRules(**{f.name: v[f.name] for f in fields(VideoRules)})

    @property
    def latent(self) -> dict:
        return self.manifest["latent"]

    @property
    def sampler(self) -> dict:
        return self.manifest["sampler"]

    @property
    def tokenizer(self) -> dict:
        return self.manifest["tokenizer"]

    @property
    def decoder(self) -> dict:
        return self.manifest["decoder"]

    @property
    def preview_map(self) -> PreviewMap | None:
        """The latent->RGB preview map, or None for a bundle exported without one (no previews)."""
        entry = self.manifest.get("preview")
        return None if entry is None else parse_preview(entry, self.latent["channels"])

    @property
    def digest(self) -> str:
        """sha256 of manifest.json: names this bundle's exact contents (it holds every file's hash)."""
        return sha256_file(self.path / "manifest.json")


def _fail(bundle: Path, msg: str):
    raise BundleError(f"bundle {bundle}: {msg}")


def _inside(root: Path, rel: str, where: str) -> Path:
    """Resolve a path the bundle names; it must be relative and stay inside the bundle folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        _fail(root, f"{where}: invalid file name {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        _fail(root, f"{where}: path {rel!r} escapes the bundle folder (paths must be relative, without '..')")
    full = (root / p).resolve()
    try:
        full.relative_to(root.resolve())
    except ValueError:
        _fail(root, f"{where}: path {rel!r} resolves outside the bundle folder")
    return full


def _require(root: Path, obj: dict, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        _fail(root, f"manifest: {where}.{key} is missing")
    value = obj[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        _fail(root, f"manifest: {where}.{key} = {value!r} is not a {getattr(kind, '__name__', kind)}")
    return value


def _stamp(path: Path) -> tuple[int, int, int, int]:
    return _identity(os.stat(path))


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_file(root: Path, entry: dict, where: str, verify_hashes: bool, stamps: list | None = None) -> Path:
    rel = _require(root, entry, "file", str, where)
    full = _inside(root, rel, where)
    if not full.is_file():
        _fail(root, f"{where}: file {rel!r} is missing")
    size = _require(root, entry, "bytes", int, where)
    digest = _require(root, entry, "sha256", str, where)
    st = full.stat()
    if stamps is not None:
        stamps.append((rel, full, _identity(st)))  # before hashing: a later write changes it
    actual = st.st_size
    if actual != size:
        _fail(root, f"{where}: {rel} is {actual} bytes, the manifest says {size} (file changed or truncated)")
    if verify_hashes and sha256_file(full) != digest.lower():
        _fail(root, f"{where}: {rel} does not match its sha256 in the manifest (file changed or corrupted)")
    return full


def _check_rules(root: Path, m: dict):
    v = _require(root, m, "video", dict, "manifest")
    for key in ("frames", "height", "width", "size_multiple", "min_side", "max_side", "max_frames", "frame_multiple", "frame_offset"):
        _require(root, v, key, int, "video")
    fps = _require(root, v, "fps", float, "video")
    if not 0 < fps <= 240:
        _fail(root, f"manifest: video.fps = {fps} is outside (0, 240]")
    if not 1 <= v["size_multiple"] <= 256 or not 1 <= v["frame_multiple"] <= 64 or not 0 <= v["frame_offset"] < 64:
        _fail(root, "manifest: video.size_multiple, frame_multiple or frame_offset out of range")
    if not 1 <= v["min_side"] <= v["max_side"] <= MAX_SIDE_LIMIT:
        _fail(root, f"manifest: video sides must satisfy 1 <= min_side <= max_side <= {MAX_SIDE_LIMIT}")
    if not 1 <= v["max_frames"] <= MAX_FRAMES_LIMIT:
        _fail(root, f"manifest: video.max_frames must be in [1, {MAX_FRAMES_LIMIT}]")
    lat = _require(root, m, "latent", dict, "manifest")
    for key in ("channels", "temporal_compression", "spatial_compression"):
        if not 1 <= _require(root, lat, key, int, "latent") <= 1024:
            _fail(root, f"manifest: latent.{key} out of range")
    tok = _require(root, m, "tokenizer", dict, "manifest")
    if not 1 <= _require(root, tok, "max_length", int, "tokenizer") <= MAX_TOKENS_LIMIT:
        _fail(root, f"manifest: tokenizer.max_length must be in [1, {MAX_TOKENS_LIMIT}]")
    _require(root, tok, "pad_id", int, "tokenizer")
    s = _require(root, m, "sampler", dict, "manifest")
    pred = _require(root, s, "prediction", str, "sampler")
    if pred not in PREDICTION_TYPES:
        _fail(root, f"manifest: sampler.prediction {pred!r} is not one of {PREDICTION_TYPES}")
    for key in ("steps",):
        _require(root, s, key, int, "sampler")
    for key in ("guidance", "shift"):
        _require(root, s, key, float, "sampler")
    _require(root, s, "sampler", str, "sampler")
    if not isinstance(s.get("negative_prompt", ""), str):
        _fail(root, "manifest: sampler.negative_prompt must be text")
    if s.get("spacing", "leading") not in ("leading", "trailing"):
        _fail(root, f"manifest: sampler.spacing {s.get('spacing')!r} is not 'leading' or 'trailing'")
    vp = s.get("vp", {})
    if not isinstance(vp, dict):
        _fail(root, "manifest: sampler.vp must be an object")
    for key, kind in (("num_train_timesteps", int), ("beta_start", float), ("beta_end", float), ("beta_schedule", str)):
        if key in vp:
            _require(root, vp, key, kind, "sampler.vp")
    if "preview" in m:  # optional; a bundle without it simply has no previews
        try:
            parse_preview(m["preview"], lat["channels"])
        except ValueError as e:
            _fail(root, f"manifest: preview {e}")
    d = _require(root, m, "decoder", dict, "manifest")
    if "prefix_latent_frames" in d and not 1 <= _require(root, d, "prefix_latent_frames", int, "decoder") <= 64:
        _fail(root, "manifest: decoder.prefix_latent_frames must be in [1, 64]")
    caches = _require(root, d, "caches", list, "decoder")
    for c in caches:
        if not (isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)):
            _fail(root, "manifest: decoder.caches entries need string 'input' and 'output' names")


def load_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read and check a bundle folder; raises BundleError with one line naming the problem."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BundleError(f"bundle {root}: not a folder")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        _fail(root, "manifest.json is missing")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        _fail(root, f"manifest.json is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        _fail(root, f"manifest.json is not valid JSON ({e})")
    if not isinstance(m, dict):
        _fail(root, "manifest.json must hold a JSON object")
    if m.get("format") != FORMAT_NAME:
        _fail(root, f"manifest format {m.get('format')!r} is not {FORMAT_NAME!r}")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(root, f"manifest format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        _fail(root, f"manifest format_version {version} is newer than this kinema supports ({FORMAT_VERSION}); upgrade kinema to use it")
    _require(root, m, "family", str, "manifest")
    comps = _require(root, m, "components", dict, "manifest")
    for name in COMPONENTS_REQUIRED:
        if name not in comps:
            _fail(root, f"manifest: component {name!r} is missing")
    for name in comps:
        if name not in COMPONENTS_REQUIRED + COMPONENTS_OPTIONAL:
            _fail(root, f"manifest: unknown component {name!r}")
    _check_rules(root, m)
    tok_entry = m["tokenizer"]
    stamps: dict[str, list] = {}
    _check_file(root, tok_entry, "tokenizer", verify_hashes, stamps.setdefault("tokenizer", []))
    for i, extra in enumerate(_require(root, m, "files", list, "manifest")):
        _check_file(root, extra, f"files[{i}]", verify_hashes)
    for name, comp in comps.items():
        where = f"component {name}"
        full = _check_file(root, comp, where, verify_hashes, stamps.setdefault(name, []))
        declared = {}
        ext_list = comp.get("external_data", [])
        if not isinstance(ext_list, list):
            _fail(root, f"manifest: {where}.external_data must be a list of files")
        for j, ext in enumerate(ext_list):
            ext_path = _check_file(root, ext, f"{where} external_data[{j}]", verify_hashes, stamps[name])
            declared[ext_path] = ext["file"]
        for loc in external_data_locations(full):
            # ONNX Runtime resolves locations against the graph's own folder.
            rel = (PurePosixPath(comp["file"]).parent / loc).as_posix()
            target = _inside(root, rel, f"{where} external data")
            if target not in declared:
                _fail(root, f"{where}: graph names external data {loc!r} that the manifest does not list with a hash")
        _require(root, comp, "inputs", list, where)
        _require(root, comp, "outputs", list, where)
    return Bundle(path=root.resolve(), manifest=m, stamps=stamps)
