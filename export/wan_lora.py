"""LoRAs for Wan: key names of every format users have, mapped to diffusers' WanTransformer3DModel.

Formats read (export/lora.py does the arithmetic):

- diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight`, with or without the
  `transformer.` prefix, `lora_B.bias` for a bias delta, an optional `.alpha`, and the
  `lora_alpha` diffusers stores in the file's metadata;
- Wan's own names (the original repository, ComfyUI, lightx2v):
  `diffusion_model.blocks.0.self_attn.q.lora_A.weight` / `lora_down` / `lora_up` / `alpha`,
  and full deltas `.diff` (weights) and `.diff_b` (biases);
- the same names written with underscores, `lora_unet_blocks_0_self_attn_q.lora_down.weight`
  (musubi-tuner, kohya).

Wan and diffusers number the layer norms differently: Wan's `norm3` (the cross-attention
norm, the only one with weights) is diffusers' `norm2`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from kinema.runtime.errors import InputError

from kinema.export.lora import LoraPlan, LoraSpec, merge_lora, plan_lora, unmatched_error

# Wan's module names -> diffusers'.
TOP_LEVEL = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}
IN_BLOCK = {
    **{f"{wan}.{a}": f"{ours}.{b}" for wan, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"), ("norm_q", "norm_q"), ("norm_k", "norm_k"))},
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "norm3": "norm2",
    "modulation": "scale_shift_table",
}
WAN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "lora_unet_")
DIFFUSERS_PREFIXES = ("base_model.model.", "transformer.", "lora_transformer_")
log = logging.getLogger("kinema")
METADATA_KEY = "lora_adapter_metadata"  # diffusers' save_lora_weights: the PEFT config, lora_alpha among it


def wan_to_diffusers(num_layers: int) -> dict[str, str]:
    """Every Wan module name of a `num_layers` transformer -> its diffusers name."""
    names = dict(TOP_LEVEL)
    for i in range(num_layers):
        names.update({f"blocks.{i}.{wan}": f"blocks.{i}.{ours}" for wan, ours in IN_BLOCK.items()})
    return names


def _strip(stem: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if stem.startswith(p):
            return stem[len(p):]
    return stem


def resolver(shapes: Mapping[str, tuple], num_layers: int):
    """`resolve(stems) -> {stem: parameter name or None}` for one file: Wan's names or diffusers', dots or underscores."""

    def target(name: str) -> str | None:
        if f"{name}.weight" in shapes:
            return f"{name}.weight"
        return name if name in bare else None  # a parameter that is no module's weight (scale_shift_table)

    bare = {n for n in shapes if not n.endswith((".weight", ".bias"))}
    ours = {n.rpartition(".")[0] for n in shapes if n.endswith(".weight")} | bare
    ours_underscored = {n.replace(".", "_"): n for n in ours}
    wan = wan_to_diffusers(num_layers)
    wan_underscored = {k.replace(".", "_"): v for k, v in wan.items()}

    def resolve(stems: list[str]) -> dict[str, str | None]:
        # A file is in Wan's naming when it says so by prefix or by Wan's own module names; diffusers' `norm2`
        # and Wan's `norm2` are different layers, so one file is read in one naming only.
        wan_named = any(s.startswith(WAN_PREFIXES) or ".self_attn." in s or ".cross_attn." in s for s in stems)
        out = {}
        for s in stems:
            if wan_named:
                name = _strip(s, WAN_PREFIXES)
                name = wan.get(name) or wan_underscored.get(name)
            else:
                name = _strip(s, DIFFUSERS_PREFIXES)
                name = name if name in ours else ours_underscored.get(name)
            out[s] = None if name is None else target(name)
        return out

    return resolve


def transformer_shapes(config: Mapping) -> dict[str, tuple]:
    """{parameter name: shape} of the checkpoint's transformer from its config, on the meta device (no weights read)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with init_empty_weights():
        model = WanTransformer3DModel.from_config(cfg)
    with torch.no_grad():
        return {n: tuple(p.shape) for n, p in model.named_parameters()}


def _metadata_alpha(spec: LoraSpec) -> float | None:
    """lora_alpha from the metadata diffusers writes into a LoRA file (rank from the tensors)."""
    from safetensors import safe_open

    with safe_open(str(spec.path), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        return None
    try:
        cfg = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise InputError(f"--lora {spec.text!r}: its {METADATA_KEY} metadata is not JSON") from None
    if not isinstance(cfg, dict):
        raise InputError(f"--lora {spec.text!r}: its {METADATA_KEY} metadata is not a JSON object")
    # diffusers' save_lora_weights writes the transformer's config as "transformer.<key>"
    cfg = {k.removeprefix("transformer."): v for k, v in cfg.items() if "." not in k or k.startswith("transformer.")}
    if cfg.get("alpha_pattern") or cfg.get("rank_pattern"):
        raise InputError(f"--lora {spec.text!r}: per-module alpha_pattern/rank_pattern in its metadata is not supported; merge it with diffusers and save plain lora_A/lora_B")
    alpha = cfg.get("lora_alpha")
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool)):
        raise InputError(f"--lora {spec.text!r}: metadata lora_alpha={alpha!r} is not a number")
    return None if alpha is None else float(alpha)


def plan_wan_loras(specs: list[LoraSpec], transformer_config: Mapping, *, ignore_unmatched: bool = False) -> list[LoraPlan]:
    """Every LoRA read and checked against the checkpoint's transformer, before any weight of it loads.

    Keys that match no module are an InputError naming them, unless `ignore_unmatched`.
    """
    if not specs:
        return []
    import torch

    shapes = transformer_shapes(transformer_config)
    resolve = resolver(shapes, int(transformer_config.get("num_layers", 0)))
    plans = []
    for spec in specs:
        plan = plan_lora(spec, shapes, resolve)
        alpha = _metadata_alpha(spec)
        if alpha is not None:  # the file-wide alpha where no key carries its own
            for d in plan.deltas:
                if "down" in d.parts and "alpha" not in d.parts:
                    d.parts["alpha"] = torch.tensor(alpha)
        if not plan.deltas and not plan.unmatched:
            raise InputError(f"--lora {spec.text!r}: {spec.path.name} holds no LoRA keys")
        plans.append(plan)
    err = unmatched_error(plans)
    if err and not ignore_unmatched:
        raise InputError(err)
    ignored = sum(len(p.unmatched) for p in plans)
    if ignored:
        log.warning("kinema: warning: --lora-ignore-unmatched: %d LoRA key(s) match no module of the transformer and were left out", ignored)
    return plans


def merge_wan_loras(transformer, plans: list[LoraPlan]) -> None:
    """Merge the planned LoRAs into the fp32 transformer, in order."""
    for plan in plans:
        merge_lora(transformer, plan)


__all__ = ["merge_wan_loras", "plan_wan_loras", "resolver", "transformer_shapes", "wan_to_diffusers"]
