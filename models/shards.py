"""Tensors as a set of safetensors shards, each at most a given size, with a JSON index; and joining them into one file.

A set called NAME in a folder is `NAME.json` and `NAME-01.safetensors`, `NAME-02.safetensors`,
...: the index lists each shard's file, byte count, sha256 and keys, and holds the JSON state
that goes with the tensors. Each shard also carries `file_meta` as its own safetensors
metadata, so a set of weights joins into exactly the file `weights.save_weights` writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

FORMAT = "kinema-shards"
VERSION = 1
MIB = 1 << 20


class ShardError(ValueError):
    """A shard set that is missing, malformed or does not fit together; the message is one line."""


def shard_name(name: str, i: int) -> str:
    return f"{name}-{i:02d}.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def _groups(tensors: dict[str, torch.Tensor], budget: int) -> list[list[str]]:
    """Keys in order, cut into runs whose bytes (data and header entries) stay within `budget`."""
    groups: list[list[str]] = [[]]
    used = 0
    for key, t in tensors.items():
        # A header entry: the key, dtype, shape and offsets in JSON (a bound, checked after writing).
        size = t.numel() * t.element_size() + len(key) + 64 + 21 * t.dim()
        if size > budget:
            raise ShardError(f"tensor {key!r} alone is {size} bytes, over the shard limit of {budget}: raise the limit")
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    return groups


def save_shards(tensors: dict[str, torch.Tensor], folder: Path, name: str, state: dict, max_bytes: int, file_meta: dict | None = None) -> list[Path]:
    """Write `tensors` as shards of at most `max_bytes` each plus the index `NAME.json` holding `state`; returns every path written.

    Shards from an earlier save under the same name are removed first, so the folder holds one set.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{name}-*.safetensors"):
        old.unlink()
    meta = {k: str(v) for k, v in (file_meta or {}).items()}
    # The header's metadata and padding share the limit with the tensors.
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    groups = _groups(cpu, max_bytes - len(json.dumps(meta)) - 64) if cpu else []
    entries, paths = [], []
    for i, keys in enumerate(groups, 1):
        path = folder / shard_name(name, i)
        save_file({k: cpu[k] for k in keys}, str(path), metadata=meta)
        size = path.stat().st_size
        if size > max_bytes:
            raise ShardError(f"{path}: {size} bytes, over the shard limit of {max_bytes}")
        entries.append({"file": path.name, "bytes": size, "sha256": _sha256(path), "keys": keys})
        paths.append(path)
    index = folder / f"{name}.json"
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "name": name, "state": state, "shards": entries}, indent=1))
    tmp.replace(index)
    return [*paths, index]


def read_index(folder: Path, name: str) -> dict:
    """The parsed index of set `name` in `folder`, its form checked (not yet the shards)."""
    index = folder / f"{name}.json"
    if not index.is_file():
        raise ShardError(f"{index}: no such shard index; pass the folder a training run wrote")
    try:
        doc = json.loads(index.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{index}: not a JSON shard index ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ShardError(f"{index}: not a {FORMAT} v{VERSION} index")
    if doc.get("name") != name or not isinstance(doc.get("state"), dict) or not isinstance(doc.get("shards"), list):
        raise ShardError(f"{index}: malformed index (needs name {name!r}, a state object and a shard list)")
    for i, e in enumerate(doc["shards"], 1):
        ok = isinstance(e, dict) and e.get("file") == shard_name(name, i) and isinstance(e.get("bytes"), int) and isinstance(e.get("keys"), list)
        if not ok or not isinstance(e.get("sha256"), str):
            raise ShardError(f"{index}: shard entry {i} is malformed (needs file {shard_name(name, i)!r}, bytes, sha256, keys)")
    return doc


def load_shards(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, state, file metadata) of set `name` in `folder`, after checking every shard against the index."""
    from safetensors import safe_open

    doc = read_index(folder, name)
    listed = {e["file"] for e in doc["shards"]}
    stray = sorted(p.name for p in folder.glob(f"{name}-*.safetensors") if p.name not in listed)
    if stray:
        raise ShardError(f"{folder}: shard {stray[0]} is not in {name}.json: the folder mixes two saves; keep one set")
    tensors: dict[str, torch.Tensor] = {}
    file_meta: dict = {}
    for e in doc["shards"]:
        path = folder / e["file"]
        if not path.is_file():
            raise ShardError(f"{path}: missing, but listed in {name}.json; copy every shard of the set")
        if path.stat().st_size != e["bytes"] or _sha256(path) != e["sha256"]:
            raise ShardError(f"{path}: size or sha256 differs from {name}.json: the shard belongs to another save or is damaged")
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            if sorted(keys) != sorted(e["keys"]) or set(keys) & set(tensors):
                raise ShardError(f"{path}: its keys differ from {name}.json or repeat another shard's")
            file_meta = f.metadata() or {}
            tensors.update({k: f.get_tensor(k) for k in keys})
    return tensors, doc["state"], file_meta


def join_shards(folder: Path, name: str, dest: Path) -> Path:
    """One safetensors file at `dest` with every tensor of the set and the shards' metadata, written atomically."""
    from safetensors.torch import save_file

    tensors, _, meta = load_shards(folder, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(dest)
    return dest


__all__ = ["MIB", "ShardError", "join_shards", "load_shards", "read_index", "save_shards", "shard_name"]
