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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError
from .contract import check_graphs, check_rules
from .scan import scan_model
from .manifest import (  # noqa: F401  (the format's names, re-exported for the writer and tools)
    COMPONENTS_OPTIONAL,
    COMPONENTS_REQUIRED,
    FORMAT_NAME,
    FORMAT_VERSION,
    PREDICTION_TYPES,
    Manifest,
    VideoRules,
    parse_manifest,
)
from .preview import PreviewMap, parse_preview

MAX_MANIFEST_BYTES = 1 << 20


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
class Bundle:
    path: Path
    manifest: dict[str, Any]  # manifest.json as read; `spec` is the same, typed and checked
    spec: Manifest = field(default=None, compare=False, repr=False)
    # component (or "tokenizer") -> [(manifest name, path, identity when checked)]: the graph and its external data
    stamps: dict[str, list] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.spec is None:  # a Bundle made in code from a manifest dict: parsed the same way
            object.__setattr__(self, "spec", parse_manifest(self.manifest))

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
        return self.spec.video

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


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(repr(key))
        out[key] = value
    return out


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
        m = json.loads(mpath.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        _fail(root, f"manifest.json is not valid JSON ({e})")
    except _DuplicateKey as e:
        _fail(root, f"manifest.json names {e} twice in one object (which one counts is up to the reader)")
    try:
        spec = parse_manifest(m)
        check_rules(spec)
    except BundleError as e:
        _fail(root, str(e))
    if "preview" in m:  # optional; a bundle without it simply has no previews
        try:
            parse_preview(m["preview"], spec.latent.channels)
        except ValueError as e:
            _fail(root, f"manifest: preview {e}")
    comps = m["components"]
    tok_entry = m["tokenizer"]
    stamps: dict[str, list] = {}
    signatures: dict[str, tuple[list, list]] = {}
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
        locations, real_in, real_out = scan_model(full)
        signatures[name] = (real_in, real_out)
        for loc in locations:
            # ONNX Runtime resolves locations against the graph's own folder.
            rel = (PurePosixPath(comp["file"]).parent / loc).as_posix()
            target = _inside(root, rel, f"{where} external data")
            if target not in declared:
                _fail(root, f"{where}: graph names external data {loc!r} that the manifest does not list with a hash")
    try:
        check_graphs(spec, signatures)
    except BundleError as e:
        _fail(root, str(e))
    return Bundle(path=root.resolve(), manifest=m, spec=spec, stamps=stamps)
