"""Write a bundle folder atomically: graphs, tokenizer, licence notes, manifest with hashes."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kinema import __version__
from kinema.runtime.bundle.load import FORMAT_NAME, FORMAT_VERSION, load_bundle, sha256_file
from kinema.runtime.errors import InputError


def file_entry(folder: Path, name: str) -> dict:
    p = folder / name
    return {"file": name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def component_entry(raw: dict, precision: str = "fp32") -> dict:
    """Manifest entry for a graph from export_graph's record."""
    entry = {k: raw[k] for k in ("file", "bytes", "sha256", "inputs", "outputs")}
    entry["precision"] = precision
    if raw.get("external_data"):
        entry["external_data"] = [raw["external_data"]]
    if "max_abs_diff" in raw:
        entry["export_check"] = {k: raw[k] for k in ("max_abs_diff", "atol", "rtol")}
    return entry


def finish_manifest(stage: Path, spec: dict) -> dict:
    """Copy the tokenizer, write licence notes, and return the manifest for the staged folder.

    `spec["copy_files"]` ({name: source path}, optional) names extra files copied byte for
    byte, as a quantized bundle carries its source's licence files.
    """
    spec = dict(spec)
    tok = dict(spec.pop("tokenizer"))
    src = Path(tok.pop("source"))
    shutil.copyfile(src, stage / "tokenizer.json")
    files = []
    for fname, text in spec.pop("licence_notes", {}).items():
        (stage / fname).write_text(text.rstrip() + "\n", encoding="utf-8")
        files.append(file_entry(stage, fname))
    for fname, source in spec.pop("copy_files", {}).items():
        (stage / fname).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, stage / fname)
        files.append(file_entry(stage, fname))
    comps = {name: c if "precision" in c else component_entry(c) for name, c in spec.pop("components").items()}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"kinema {__version__}",
        **{k: spec.pop(k) for k in ("name", "family")},
        "components": comps,
        "tokenizer": {**file_entry(stage, "tokenizer.json"), **tok},
        "files": files,
        **spec,
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


def check_output(out: Path, *, overwrite: bool = False) -> Path:
    """The bundle folder to write, checked before any work: new, or an existing bundle with overwrite."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output {out} already exists; choose another --out or pass --overwrite")
    if out.exists() and not (out / "manifest.json").is_file():
        raise InputError(f"output {out} exists and is not a kinema bundle; refusing to replace it")
    return out


def write_bundle(out: Path, build: Callable[[Path], dict], *, overwrite: bool = False) -> Path:
    """Run `build(stage)` in a hidden folder beside `out`, check the result as the runtime will, then move it into place."""
    out = check_output(out, overwrite=overwrite)

    def fill(stage: Path) -> None:
        manifest = finish_manifest(stage, build(stage))
        write_manifest(stage, manifest)
        load_bundle(stage)  # the same checks a user's runtime will make

    return write_folder(out, fill)


def write_folder(out: Path, fill: Callable[[Path], None]) -> Path:
    """Run `fill(stage)` in a hidden folder beside `out`, then move it into place (replacing `out`); on any error nothing is left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; a bundle or report is meant to be shared
    try:
        fill(stage)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            stage.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out
