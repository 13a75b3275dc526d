"""Export a Wan 2.1/2.2 checkpoint (a local diffusers folder: text-to-video, and Wan 2.2 TI2V's image-to-video) to a bundle.

    kinema export wan --checkpoint Wan2.1-T2V-1.3B-Diffusers --out wan-1.3b

Reads model_index.json, scheduler/, transformer/, vae/, text_encoder/ and tokenizer/ from
the folder and nothing from the network. The folder is checked (`inspect_checkpoint`)
before any weight is loaded; each graph is traced and checked against PyTorch by
export/onnx_graph.py; the bundle is written atomically by kinema.runtime.bundle.writer. The graphs are
declared in export/wan_graphs.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kinema.runtime.errors import InputError

from kinema.runtime.bundle.writer import check_output, write_bundle

from kinema.export.distilled import Distilled
from kinema.export.lora import LoraSpec, lora_record
from kinema.export.wan_lora import merge_wan_loras, plan_wan_loras

# What the quantize tools need of this family (the manifest's tools section).
TOOLS = {
    # Wan: the timestep and caption embedders (they drive every block's modulation), the patch
    # embedding and the output projection, and what diffusers keeps in fp32 in a bf16 model
    # (norms, modulation tables, rotary tables); UMT5's FFN output projections `wo`, the
    # layers transformers itself keeps in fp32 for T5-family models (activation outliers).
    "float_groups": {
        "denoiser": ["condition_embedder", "patch_embedding", "proj_out", "norm_out", "norm1", "norm2", "norm3", "scale_shift_table", "rope"],
        "text_encoder_int8": ["wo"],
    },
    # No prompt set of its own yet: short captions any text-to-video model understands.
    "calibration_prompts": [
        "a red ball bouncing",
        "two blue squares sliding left on a white background",
        "a small green triangle spinning slowly",
        "a yellow star moving up on a black background",
    ],
    "probe_prompts": ["a red ball bouncing", "two blue squares sliding left on a white background", "a small green triangle spinning slowly"],
}

COMPONENT_FOLDERS = ("scheduler", "transformer", "vae", "text_encoder", "tokenizer")
# Other Wan pipelines of diffusers: each needs graphs this exporter does not write.
UNSUPPORTED_PIPELINES = {
    "WanImageToVideoPipeline": "image-to-video (CLIP image encoder and image-conditioned transformer)",
    "WanVACEPipeline": "VACE (control video inputs)",
    "WanVideoToVideoPipeline": "video-to-video",
    "WanAnimatePipeline": "Animate (pose and face inputs)",
}
MAX_SEQUENCE_LENGTH = 512  # WanPipeline's max_sequence_length: the prompt is padded to this many tokens


@dataclass(frozen=True)
class WanDefaults:
    """Video defaults of the manifest; Wan's own: 81 frames at 480x832, 16 fps (2.2 TI2V-5B: 121 at 704x1280, 24 fps)."""

    fps: float = 16.0
    frames: int = 81
    height: int = 480
    width: int = 832
    min_side: int = 64
    max_side: int = 1280
    max_frames: int = 161
    steps: int = 50  # WanPipeline's num_inference_steps
    guidance: float = 5.0  # WanPipeline's guidance_scale


WAN22_TI2V_DEFAULTS = WanDefaults(fps=24.0, frames=121, height=704, width=1280, max_side=1280)


@dataclass(frozen=True)
class WanCheckpoint:
    """What a Wan diffusers folder holds, read from its JSON files only (no weights)."""

    path: Path
    variant: str  # "wan2.1-t2v" or "wan2.2-ti2v"
    scheduler: dict = field(hash=False)
    transformer: dict = field(hash=False)
    vae: dict = field(hash=False)
    text_encoder: dict = field(hash=False)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: the {what} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the {what} must hold a JSON object")
    return data


def inspect_checkpoint(path: str | os.PathLike) -> WanCheckpoint:
    """Check a Wan text-to-video diffusers folder; raises InputError naming what was expected."""
    root = Path(path).expanduser()
    expected = "a Wan text-to-video checkpoint in diffusers format (e.g. Wan2.1-T2V-1.3B-Diffusers)"
    if not root.is_dir():
        raise InputError(f"checkpoint {root} is not a folder; expected {expected}")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise InputError(f"checkpoint {root} has no model_index.json, so it is not {expected}")
    index = _read_json(index_path, "model_index.json")
    cls = index.get("_class_name")
    if not isinstance(cls, str) or not cls.startswith("Wan"):
        raise InputError(f"checkpoint {root} is a {cls!r} folder, not a Wan pipeline; expected {expected} (model_index.json _class_name WanPipeline)")
    if cls in UNSUPPORTED_PIPELINES:
        raise InputError(f"checkpoint {root} is {cls}: {UNSUPPORTED_PIPELINES[cls]} is an unsupported variant; kinema exports text-to-video WanPipeline checkpoints")
    if cls != "WanPipeline":
        raise InputError(f"checkpoint {root} is {cls}, an unsupported variant; kinema exports text-to-video WanPipeline checkpoints")
    two_experts = index.get("transformer_2") not in (None, [None, None]) or index.get("boundary_ratio") is not None
    if two_experts:
        raise InputError(
            f"checkpoint {root} has two transformers (transformer_2 / boundary_ratio, Wan 2.2 A14B): an unsupported variant; "
            "kinema exports single-transformer Wan checkpoints (Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B)"
        )
    configs = {}
    for name in COMPONENT_FOLDERS:
        folder = root / name
        if not folder.is_dir():
            raise InputError(f"checkpoint {root} is missing the {name}/ component folder; a Wan diffusers checkpoint has {', '.join(f + '/' for f in COMPONENT_FOLDERS)}")
        if name == "tokenizer":
            if not any((folder / f).is_file() for f in ("tokenizer.json", "spiece.model")):
                raise InputError(f"checkpoint {root}: tokenizer/ has neither tokenizer.json nor spiece.model; expected the UMT5 tokenizer files")
            continue
        cfg_name = "scheduler_config.json" if name == "scheduler" else "config.json"
        if not (folder / cfg_name).is_file():
            raise InputError(f"checkpoint {root}: {name}/{cfg_name} is missing; expected the {name} component's config")
        configs[name] = _read_json(folder / cfg_name, f"{name} config")
        if name in ("transformer", "vae", "text_encoder") and not _has_weights(folder):
            raise InputError(f"checkpoint {root}: {name}/ has no weights (*.safetensors or *.bin); expected the {name} component's weights")

    tr, vae, te = configs["transformer"], configs["vae"], configs["text_encoder"]
    for comp, cfg, want in (("transformer", tr, "WanTransformer3DModel"), ("vae", vae, "AutoencoderKLWan")):
        if cfg.get("_class_name") != want:
            raise InputError(f"checkpoint {root}: {comp}/config.json is {cfg.get('_class_name')!r}; expected {want}")
    if te.get("model_type") != "umt5":
        raise InputError(f"checkpoint {root}: text_encoder/config.json model_type is {te.get('model_type')!r}; expected umt5 (Wan's UMT5 encoder)")
    if tr.get("image_dim") is not None:
        raise InputError(f"checkpoint {root}: the transformer takes image embeddings (image_dim={tr['image_dim']}): image-to-video is an unsupported variant")
    if tr.get("added_kv_proj_dim") is not None:
        raise InputError(f"checkpoint {root}: the transformer has added K/V projections (added_kv_proj_dim): an unsupported variant")
    if tr.get("in_channels") != vae.get("z_dim") or tr.get("out_channels") != vae.get("z_dim"):
        raise InputError(
            f"checkpoint {root}: transformer in/out channels {tr.get('in_channels')}/{tr.get('out_channels')} differ from the VAE's "
            f"z_dim {vae.get('z_dim')}: an unsupported variant (text-to-video needs in = out = z_dim)"
        )
    sampler_defaults(configs["scheduler"])  # an unsupported scheduler fails here, before any weight loads
    variant = "wan2.2-ti2v" if index.get("expand_timesteps") else "wan2.1-t2v"
    return WanCheckpoint(root, variant, configs["scheduler"], tr, vae, te)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def sampler_defaults(scheduler: dict) -> dict:
    """The manifest's sampler section from a Wan scheduler config: UniPC (Wan's default) or flow Euler, with its shift."""
    cls = scheduler.get("_class_name")
    shift = scheduler.get("flow_shift", scheduler.get("shift", 1.0))
    if cls == "UniPCMultistepScheduler":
        if scheduler.get("prediction_type") != "flow_prediction" or not scheduler.get("use_flow_sigmas"):
            raise InputError(f"scheduler {cls} has prediction_type={scheduler.get('prediction_type')!r}, use_flow_sigmas={scheduler.get('use_flow_sigmas')!r}: an unsupported variant (Wan is flow matching)")
        # kinema's UniPC: bh2, order <= 2, x0 prediction, lower order on the last step, ends at sigma 0.
        same = (
            scheduler.get("solver_type", "bh2") == "bh2"
            and scheduler.get("solver_order", 2) in (1, 2)
            and scheduler.get("predict_x0", True)
            and scheduler.get("lower_order_final", True)
            and scheduler.get("final_sigmas_type", "zero") == "zero"
            and not scheduler.get("disable_corrector")
            and not scheduler.get("use_dynamic_shifting")
        )
        sampler = "unipc" if same else "euler"
    elif cls == "FlowMatchEulerDiscreteScheduler":
        sampler = "euler"
    else:
        raise InputError(f"scheduler {cls!r} is an unsupported variant; expected UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler (flow matching)")
    if not isinstance(shift, (int, float)) or isinstance(shift, bool) or shift <= 0:
        raise InputError(f"scheduler flow_shift={shift!r} must be a number > 0")
    return {"prediction": "flow", "schedule": "flow", "sampler": sampler, "shift": float(shift)}


def load_checkpoint(ck: WanCheckpoint):
    """(transformer, vae, text_encoder) in fp32 eval mode, from the local folder only."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: local_files_only below already forbids downloads
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    kw = dict(torch_dtype=torch.float32, local_files_only=True)
    transformer = WanTransformer3DModel.from_pretrained(ck.path / "transformer", **kw).eval()
    vae = AutoencoderKLWan.from_pretrained(ck.path / "vae", **kw).eval()
    text_encoder = UMT5EncoderModel.from_pretrained(ck.path / "text_encoder", **kw).eval()
    return transformer, vae, text_encoder


def convert_tokenizer(tokenizer_dir: Path, dest: Path) -> int:
    """Write the checkpoint's tokenizer as one tokenizer.json at `dest`; returns its pad id.

    A real Wan folder ships tokenizer.json beside spiece.model; a folder with spiece.model
    only is converted by transformers (offline). The result is checked with the
    `tokenizers` library the runtime uses.
    """
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, ImportError) as e:
        raise InputError(f"{tokenizer_dir}: the tokenizer cannot be loaded ({str(e).splitlines()[0]}); expected the UMT5 tokenizer files") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise InputError(f"{tokenizer_dir}: transformers gives no tokenizers-library tokenizer for it; add the checkpoint's tokenizer.json")
    if tok.pad_token_id is None:
        raise InputError(f"{tokenizer_dir}: the tokenizer has no pad token; expected UMT5's <pad>")
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_padding()
    backend.no_truncation()
    dest.write_text(backend.to_str(), encoding="utf-8")
    return int(tok.pad_token_id)


def _video_rules(d: WanDefaults, size_multiple: int, temporal: int) -> dict:
    """The manifest's video section: Wan's defaults, frames 4k+1 for its 4x causal VAE."""
    return {
        "fps": d.fps,
        "frames": d.frames,
        "height": d.height,
        "width": d.width,
        "size_multiple": size_multiple,
        "min_side": max(d.min_side, size_multiple),
        "max_side": d.max_side,
        "max_frames": d.max_frames,
        "frame_multiple": temporal,
        "frame_offset": 1,
    }


def export_wan_modules(
    out: Path,
    transformer,
    vae,
    text_encoder,
    tokenizer_dir: Path,
    *,
    scheduler: dict,
    variant: str = "wan2.1-t2v",
    defaults: WanDefaults = WanDefaults(),
    max_length: int = MAX_SEQUENCE_LENGTH,
    name: str = "wan",
    overwrite: bool = False,
    loras: tuple[dict, ...] = (),
    distilled: Distilled | None = None,
    release_weights: bool = False,  # drop the text encoder's and transformer's weights once checked
) -> Path:
    """Trace Wan modules (already loaded, fp32, eval) to a bundle at `out`, each graph checked against PyTorch.

    `loras` are the manifest records of LoRAs already merged into `transformer`; `distilled`
    overrides the sampler defaults with a distilled schedule (export/distilled.py).
    """
    from kinema.export.latent_preview import fit_preview_map
    from kinema.export.onnx_graph import export_components
    from kinema.export.wan_graphs import wan_graphs
    from kinema.models.wan import WanVAECodec

    out = check_output(Path(out), overwrite=overwrite)
    sampler = sampler_defaults(scheduler)
    n_train = int(scheduler.get("num_train_timesteps", 1000))
    tcfg, vcfg = transformer.config, vae.config
    z = vcfg.z_dim
    spatial = vcfg.scale_factor_spatial
    temporal = vcfg.scale_factor_temporal
    p_t, p_h, p_w = tcfg.patch_size
    if p_t != 1 or p_h != p_w:
        raise InputError(f"transformer patch_size {tuple(tcfg.patch_size)} is an unsupported variant; expected (1, p, p)")
    # The latent is patchified by p_h inside the transformer; the VAE's own patch is inside its spatial factor.
    latent_multiple = p_h
    ti2v = variant == "wan2.2-ti2v"

    def build(stage: Path) -> dict:
        comps = export_components(stage, wan_graphs(transformer, vae, text_encoder, n_train=n_train, latent_multiple=latent_multiple, ti2v=ti2v, release=release_weights))
        cache_in = [i["name"] for i in comps["decoder_step"]["inputs"][1:]]
        cache_out = [o["name"] for o in comps["decoder_step"]["outputs"][1:]]
        d = defaults
        size_multiple = spatial * p_h
        return {
            "family": "wan",
            "name": name,
            "components": comps,
            "tokenizer": {"source": tok_path, "max_length": int(max_length), "pad_id": pad_id, "clean": "unescape-whitespace"},
            "text_encoder": {"model": "umt5", "dim": int(text_encoder.config.d_model)},
            "latent": {"channels": z, "temporal_compression": temporal, "spatial_compression": spatial, "normalised": True},
            "video": _video_rules(d, size_multiple, temporal),
            "sampler": {**sampler, "steps": d.steps, "guidance": d.guidance, "negative_prompt": "", **(distilled.sampler_fields() if distilled else {})},
            "conditioning": _conditioning(ti2v),
            "decoder": {
                "prefix_latent_frames": 1,
                "step_latent_frames": 1,
                "caches": [{"input": i, "output": o} for i, o in zip(cache_in, cache_out)],
            },
            "model": {
                "variant": variant,
                "transformer": {k: _plain(tcfg[k]) for k in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "patch_size", "text_dim")},
                "vae": {k: _plain(vcfg[k]) for k in ("base_dim", "z_dim", "dim_mult", "is_residual", "patch_size")},
                "scheduler": {k: _plain(v) for k, v in scheduler.items() if not k.startswith("_") or k == "_class_name"},
                # The denoiser graph floors sigma * num_train_timesteps, as Wan's schedulers hand it integer timesteps.
                "timestep": f"floor(sigma * {n_train})" + (" per token, 0 on known latent frames" if ti2v else ""),
            },
            # latent -> RGB map for cheap step previews, fitted with this checkpoint's own VAE
            "preview": fit_preview_map(WanVAECodec(vae), temporal=temporal, spatial=spatial, side=8 * spatial),
            "tools": TOOLS,
            **({"loras": list(loras)} if loras else {}),
        }

    with tempfile.TemporaryDirectory(prefix="kinema-wan-tokenizer.") as tmp:
        tok_path = Path(tmp) / "tokenizer.json"
        pad_id = convert_tokenizer(Path(tokenizer_dir), tok_path)  # before any tracing: a bad tokenizer fails fast
        return write_bundle(out, build, overwrite=overwrite)


def _conditioning(ti2v: bool) -> dict:
    """Wan 2.2 TI2V takes known leading latent frames (its image-to-video: the first); Wan 2.1 text-to-video none."""
    if ti2v:
        return {"text": True, "cond_latents": True, "negative_prompt": True, "known_frames": ["first", "leading"]}
    return {"text": True, "cond_latents": False, "negative_prompt": True}


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def export_wan(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_length: int = MAX_SEQUENCE_LENGTH,
    name: str | None = None,
    loras: tuple[LoraSpec, ...] = (),
    ignore_unmatched: bool = False,
    distilled: Distilled | None = None,
) -> Path:
    """Check the folder, load it in fp32, merge the LoRAs in order and export every graph to an fp32 bundle at `out`.

    Every LoRA is read and matched against the transformer before any weight loads
    (export/wan_lora.py); a key no module matches is an InputError unless `ignore_unmatched`.

    Quantizing is not done here (export/ does not depend on quantize/): `kinema export wan
    --recipe` exports to a scratch folder and quantizes from it (runtime/cli/main.py).
    """
    ck = inspect_checkpoint(checkpoint)
    out = check_output(Path(out), overwrite=overwrite)
    name = name or ck.path.name.lower()
    defaults = WAN22_TI2V_DEFAULTS if ck.variant == "wan2.2-ti2v" else WanDefaults()
    plans = plan_wan_loras(list(loras), ck.transformer, ignore_unmatched=ignore_unmatched)
    transformer, vae, text_encoder = load_checkpoint(ck)
    merge_wan_loras(transformer, plans)
    kw = dict(scheduler=ck.scheduler, variant=ck.variant, defaults=defaults, max_length=max_length, distilled=distilled)
    records = tuple(lora_record(p) for p in plans)
    # the modules were loaded for this export only: each one's weights go once its graph is checked
    return export_wan_modules(out, transformer, vae, text_encoder, ck.path / "tokenizer", name=name, overwrite=overwrite, loras=records, release_weights=True, **kw)


__all__ = [
    "WanCheckpoint",
    "WanDefaults",
    "convert_tokenizer",
    "export_wan",
    "export_wan_modules",
    "inspect_checkpoint",
    "load_checkpoint",
    "sampler_defaults",
]
