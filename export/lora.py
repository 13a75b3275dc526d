"""LoRA files merged into a PyTorch module's weights in fp32, before tracing (`--lora FILE[:SCALE]`).

A LoRA file is untrusted input: it is read with safetensors only (no pickle), its keys are
grouped by the module they change, and every tensor's shape is checked against that
module's weights before anything is multiplied. Which module a key names is the family's
business (export/wan_lora.py); this module reads, checks and adds:

    W += scale * (alpha / rank) * up @ down    (alpha defaults to the rank)
    W += scale * diff,  bias += scale * diff_b (full deltas, as distillation LoRAs carry)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kinema.runtime.errors import InputError

MAX_SCALE = 100.0
# How a key ends -> the part of a LoRA it holds. PEFT/diffusers write lora_A/lora_B (and
# lora_B.bias for a bias delta); kohya, musubi and ComfyUI write lora_down/lora_up with alpha.
SUFFIXES = (
    (".lora_A.weight", "down"),
    (".lora_down.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_up.weight", "up"),
    (".lora_B.bias", "up_bias"),
    (".alpha", "alpha"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


@dataclass(frozen=True)
class LoraSpec:
    """One `--lora FILE[:SCALE]` value."""

    path: Path
    scale: float = 1.0
    text: str = ""  # as the user wrote it, for messages


def parse_lora_spec(value: str) -> LoraSpec:
    """`FILE` or `FILE:SCALE` (a file whose own name holds a colon is taken whole); InputError naming the value."""
    rule = "write FILE or FILE:SCALE, e.g. style.safetensors:0.8"
    path, scale = value, 1.0
    if ":" in value and not Path(value).expanduser().is_file():
        path, _, tail = value.rpartition(":")
        try:
            scale = float(tail)
        except ValueError:
            raise InputError(f"--lora {value!r}: the scale {tail!r} is not a number; {rule}") from None
        if not path:
            raise InputError(f"--lora {value!r} names no file; {rule}")
    if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
        raise InputError(f"--lora {value!r}: the scale {scale:g} must be a finite number from {-MAX_SCALE:g} to {MAX_SCALE:g}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"--lora {value!r}: {p} is not a file; expected a LoRA .safetensors file")
    return LoraSpec(p, scale, value)


@dataclass(frozen=True)
class Delta:
    """What one LoRA changes in one module (or bare parameter) of the model, shapes already checked."""

    stem: str  # the key stem as the file names it
    weight: str  # the model's parameter the low-rank product and diff go to
    bias: str | None  # the model's bias parameter, when diff_b or lora_B.bias are given
    parts: dict = field(hash=False)  # down, up, alpha, up_bias, diff, diff_b: fp32 tensors


@dataclass(frozen=True)
class LoraPlan:
    """A LoRA file, read and matched against the model: what the merge adds, and what it left out."""

    spec: LoraSpec
    sha256: str
    deltas: tuple[Delta, ...]
    unmatched: tuple[str, ...]  # keys that name no module of the model


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tensors(spec: LoraSpec) -> dict:
    """Every tensor of a LoRA file as fp32, read with safetensors; InputError for anything else."""
    from safetensors import SafetensorError, safe_open

    bad_dtype = None
    try:
        with safe_open(str(spec.path), framework="pt") as f:
            tensors = {}
            for k in f.keys():
                dtype = f.get_slice(k).get_dtype()
                if dtype not in FLOAT_DTYPES:
                    bad_dtype = (k, dtype)
                    break
                tensors[k] = f.get_tensor(k).float()
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"--lora {spec.text!r}: {spec.path.name} is not a safetensors file ({first}); a LoRA must be .safetensors") from None
    if bad_dtype is not None:
        raise InputError(f"--lora {spec.text!r}: tensor {bad_dtype[0]} is {bad_dtype[1]}; a LoRA holds float tensors ({', '.join(FLOAT_DTYPES)})")
    if not tensors:
        raise InputError(f"--lora {spec.text!r}: {spec.path.name} holds no tensors; expected LoRA weights")
    return tensors


def group_keys(tensors: Mapping) -> tuple[dict[str, dict], list[str]]:
    """({stem: {part: tensor}}, keys whose ending is no LoRA part)."""
    groups: dict[str, dict] = {}
    unknown = []
    for key, t in tensors.items():
        for suffix, part in SUFFIXES:
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[part] = t
                break
        else:
            unknown.append(key)
    return groups, unknown


def _fail(spec: LoraSpec, stem: str, what: str):
    raise InputError(f"--lora {spec.text!r}: {stem} {what}")


def check_delta(spec: LoraSpec, stem: str, parts: dict, weight: str, shapes: Mapping[str, tuple]) -> Delta:
    """The delta for one stem with every shape checked against the model's parameter `weight` (and its bias)."""
    w = tuple(shapes[weight])
    bias = weight[: -len(".weight")] + ".bias" if weight.endswith(".weight") else None
    bias = bias if bias in shapes else None
    down, up = parts.get("down"), parts.get("up")
    if (down is None) != (up is None):
        _fail(spec, stem, f"has {'lora_A/lora_down' if up is None else 'lora_B/lora_up'} without its pair; a LoRA needs both")
    if down is not None:
        if len(w) < 2 or down.ndim < 2 or up.ndim < 2:
            _fail(spec, stem, f"lora_A {tuple(down.shape)} / lora_B {tuple(up.shape)} cannot change a parameter of shape {w}")
        r = down.shape[0]
        fan_in = math.prod(w[1:])
        if up.shape[1] != r or up.shape[0] != w[0] or math.prod(down.shape[1:]) != fan_in or math.prod(up.shape[2:]) != 1:
            _fail(spec, stem, f"lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)} do not fit {weight} {w}: "
                  f"expected lora_A (rank, {', '.join(map(str, w[1:]))}) and lora_B ({w[0]}, rank)")
    elif "alpha" in parts or "up_bias" in parts:
        _fail(spec, stem, "has alpha or lora_B.bias without lora_A/lora_B")
    if "alpha" in parts:
        a = parts["alpha"]
        if a.numel() != 1 or not math.isfinite(float(a.reshape(-1)[0])):
            _fail(spec, stem, f"alpha must be one finite number, not a tensor of shape {tuple(a.shape)}")
    if "diff" in parts and tuple(parts["diff"].shape) != w:
        _fail(spec, stem, f"diff {tuple(parts['diff'].shape)} does not fit {weight} {w}")
    for name in ("diff_b", "up_bias"):
        if name in parts:
            if bias is None:
                _fail(spec, stem, f"has {name} but {weight[: -len('.weight')]} has no bias")
            if tuple(parts[name].shape) != tuple(shapes[bias]):
                _fail(spec, stem, f"{name} {tuple(parts[name].shape)} does not fit {bias} {tuple(shapes[bias])}")
    return Delta(stem, weight, bias if ("diff_b" in parts or "up_bias" in parts) else None, dict(parts))


def plan_lora(spec: LoraSpec, shapes: Mapping[str, tuple], resolve: Callable[[list[str]], dict[str, str | None]]) -> LoraPlan:
    """Read a LoRA file and match it against the model's parameter shapes; `resolve` maps stems to parameters."""
    tensors = read_tensors(spec)
    if any(k.endswith(".dora_scale") for k in tensors):
        raise InputError(f"--lora {spec.text!r}: {spec.path.name} is a DoRA (dora_scale keys), which kinema does not merge; use a plain LoRA")
    groups, unknown = group_keys(tensors)
    targets = resolve(list(groups))
    deltas, unmatched = [], list(unknown)
    for stem, parts in groups.items():
        weight = targets.get(stem)
        if weight is None:
            unmatched += [k for k in tensors if k.startswith(stem + ".") and k not in unknown]
            continue
        deltas.append(check_delta(spec, stem, parts, weight, shapes))
    return LoraPlan(spec, sha256_of(spec.path), tuple(deltas), tuple(sorted(set(unmatched))))


def merge_lora(model, plan: LoraPlan) -> int:
    """Add a planned LoRA to `model`'s fp32 parameters in place; returns how many parameters changed."""
    import torch

    params = dict(model.named_parameters())
    s = plan.spec.scale
    changed = set()
    with torch.no_grad():
        for d in plan.deltas:
            w, p = params[d.weight], d.parts
            if "down" in p:
                down, up = p["down"], p["up"]
                r = down.shape[0]
                k = s * (float(p["alpha"].reshape(-1)[0]) if "alpha" in p else r) / r
                w += (up.reshape(w.shape[0], r) @ down.reshape(r, -1)).reshape(w.shape) * k  # (out, r) @ (r, in)
                if "up_bias" in p:
                    params[d.bias] += p["up_bias"] * k
            if "diff" in p:
                w += p["diff"] * s
            if "diff_b" in p:
                params[d.bias] += p["diff_b"] * s
            changed.add(d.weight)
            if d.bias:
                changed.add(d.bias)
    return len(changed)


def unmatched_error(plans: list[LoraPlan]) -> str | None:
    """One line naming the keys no module matched (the first few of each file), or None."""
    bad = [p for p in plans if p.unmatched]
    if not bad:
        return None
    parts = []
    for p in bad:
        shown = ", ".join(p.unmatched[:3]) + (f" and {len(p.unmatched) - 3} more" if len(p.unmatched) > 3 else "")
        parts.append(f"{p.spec.path.name}: {len(p.unmatched)} key(s) match no module of the transformer ({shown})")
    return "--lora " + "; ".join(parts) + "; check that the LoRA is for this model, or pass --lora-ignore-unmatched to merge the rest"


def lora_record(plan: LoraPlan) -> dict:
    """The manifest's entry for a merged LoRA (its `loras` list)."""
    return {"file": plan.spec.path.name, "sha256": plan.sha256, "scale": plan.spec.scale, "ignored_keys": len(plan.unmatched)}


__all__ = ["Delta", "LoraPlan", "LoraSpec", "lora_record", "merge_lora", "parse_lora_spec", "plan_lora", "unmatched_error"]
