"""Export the built-in `tiny` family (MiniLM text encoder, tiny DiT, causal VAE) to a bundle.

The graphs are declared in export/tiny_graphs.py and written by the generic path
(onnx_graph.export_components); this file loads the modules and writes the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kinema.models import shapes_bench
from kinema.models.text_encoder import LICENCE_NOTE, MAX_TOKENS, TextEncoder, minilm_dir
from kinema.models.tiny_dit import DIT_SIZES, DiTConfig, TinyDiT
from kinema.models.tiny_vae import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, TinyVAE, VAEConfig
from kinema.models.weights import DIT_WEIGHTS, VAE_WEIGHTS, load_weights

from kinema.runtime.bundle.writer import write_bundle
from kinema.export.latent_preview import fit_preview_map
from kinema.export.onnx_graph import export_components
from kinema.export.tiny_graphs import tiny_graphs

# What the quantize tools keep in float for this family (manifest tools.float_groups).
FLOAT_GROUPS = {
    # Every quantizing preset: the timestep embedding and the adaLN modulation it drives
    # (one error there shifts and scales every token of a block at once), the patch
    # embedding and final layer (the latent's input and output projections), and the
    # pooled-caption projection. ViDiT-Q (Zhao et al. 2024) and PTQ4DiT (Wu et al. 2024)
    # find these the sensitive layers of a DiT.
    "denoiser": ["t_embed", "ada", "patch_embed", "final", "text_pool"],
    # The int8 preset only. MiniLM's FFN up-projections read LayerNorm outputs with a few
    # outlier channels that per-tensor uint8 activations crush (Bondarenko et al. 2021).
    # Measured on the probe prompts: 17.6 dB SQNR with every MatMul int8, 20.4 dB with these float.
    "text_encoder_int8": ["intermediate"],
}
# Fixed probe inputs for the quantizer's SQNR measurements: captions in the style of the
# procedural world this family is trained on (the quantizer adds the empty negative prompt).
PROBE_PROMPTS = ["a red ball bouncing", "two blue squares sliding left on a white background", "a small green triangle spinning slowly"]


def tools() -> dict:
    """The manifest's tools section: float groups, and ShapesBench rows to calibrate and compare on (scored by compare)."""
    return {
        "float_groups": FLOAT_GROUPS,
        "calibration_prompts": shapes_bench.load_prompts(shapes_bench.PROMPTS_PATH),
        "probe_prompts": PROBE_PROMPTS,
    }


@dataclass(frozen=True)
class TinyDefaults:
    """Video and sampler defaults written into the manifest."""

    fps: float = 8.0
    frames: int = 17
    height: int = 64
    width: int = 64
    size_multiple: int = 16  # 8x VAE times 2x2 patches
    min_side: int = 32
    max_side: int = 128
    max_frames: int = 33  # one window; longer videos are generated window by window
    steps: int = 20
    guidance: float = 5.0
    shift: float = 1.0
    sampler: str = "euler"


def load_tiny(checkpoint_dir: Path | None = None, *, size: str = "tiny", random_init: bool = False, seed: int = 0):
    """(dit, vae, text_encoder) in eval mode: trained weights by default, or random ones."""
    torch.manual_seed(seed)
    dit = TinyDiT(DIT_SIZES[size])
    vae = TinyVAE(VAEConfig())
    if not random_init:
        dit_path = Path(checkpoint_dir) / "tiny_dit.safetensors" if checkpoint_dir else DIT_WEIGHTS
        vae_path = Path(checkpoint_dir) / "tiny_vae.safetensors" if checkpoint_dir else VAE_WEIGHTS
        for p in (dit_path, vae_path):
            if not p.is_file():
                raise FileNotFoundError(f"no trained weights at {p}; train with `python -m kinema.models.train_tiny all` or pass --random-init")
        load_weights(dit, dit_path)
        load_weights(vae, vae_path)
    else:
        # Random but not degenerate: adaLN-zero would make an untrained DiT output zeros.
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in dit.parameters():
                if p.abs().sum() == 0 and p.dim() > 1:
                    p.normal_(0.0, 0.02, generator=gen)
    return dit.eval(), vae.eval(), TextEncoder.pretrained()


def manifest_fields(dit: TinyDiT, vae: TinyVAE, comps: dict, *, name: str, d: "TinyDefaults", random_init: bool, seed: int) -> dict:
    """The manifest of a tiny bundle around its exported components."""
    cfg: DiTConfig = dit.cfg
    c = cfg.latent_channels
    n = vae.decoder.num_caches()
    cache_in, cache_out = tuple(f"cache_{i}" for i in range(n)), tuple(f"next_cache_{i}" for i in range(n))
    return {
        "family": "tiny",
        "name": name,
        "components": comps,
        "tokenizer": {"source": minilm_dir() / "tokenizer.json", "max_length": MAX_TOKENS, "pad_id": 0},
        "text_encoder": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": cfg.text_dim},
        "licence_notes": {"LICENSE-all-MiniLM-L6-v2.txt": LICENCE_NOTE},
        "latent": {
            "channels": c,
            "temporal_compression": TEMPORAL_COMPRESSION,
            "spatial_compression": SPATIAL_COMPRESSION,
            "normalised": True,
        },
        "video": {
            "fps": d.fps,
            "frames": d.frames,
            "height": d.height,
            "width": d.width,
            "size_multiple": d.size_multiple,
            "min_side": d.min_side,
            "max_side": d.max_side,
            "max_frames": d.max_frames,
            "frame_multiple": TEMPORAL_COMPRESSION,
            "frame_offset": 1,
        },
        "sampler": {
            "prediction": "flow",
            "schedule": "flow",
            "sampler": d.sampler,
            "steps": d.steps,
            "guidance": d.guidance,
            "shift": d.shift,
            "negative_prompt": "",
        },
        # trained with the first, the first k or the last latent frame known (train_tiny.random_cond_mask)
        "conditioning": {"text": True, "cond_latents": True, "negative_prompt": True, "known_frames": ["first", "leading", "last"]},
        "decoder": {
            "prefix_latent_frames": 1,
            "step_latent_frames": 1,
            "caches": [{"input": i, "output": o} for i, o in zip(cache_in, cache_out)],
        },
        "model": {"dit": {k: getattr(cfg, k) for k in ("width", "depth", "heads", "patch")}, "random_init": random_init},
        # latent -> RGB map for cheap step previews, fitted with this bundle's own VAE
        "preview": fit_preview_map(vae, seed=seed),
        "tools": tools(),
    }



def export_tiny(
    out: Path,
    *,
    checkpoint_dir: Path | None = None,
    random_init: bool = False,
    size: str = "tiny",
    name: str = "kinema-tiny",
    defaults: TinyDefaults = TinyDefaults(),
    with_encoder: bool = True,
    overwrite: bool = False,
    seed: int = 0,
) -> Path:
    """Trace the tiny family's graphs, check each against PyTorch, and write a bundle at `out`."""
    dit, vae, text = load_tiny(checkpoint_dir, size=size, random_init=random_init, seed=seed)

    def build(stage: Path) -> dict:
        comps = export_components(stage, tiny_graphs(dit, vae, text, with_encoder=with_encoder))
        return manifest_fields(dit, vae, comps, name=name, d=defaults, random_init=random_init, seed=seed)

    return write_bundle(out, build, overwrite=overwrite)


def fp32_reference(bundle: Path | None, work: Path) -> Path:
    """The fp32 bundle a precision benchmark starts from: `bundle` when given, the built-in one
    when it is fp32, else (a quantized built-in) an export of the committed weights into
    `work`/fp32-export, made once per work folder."""
    from kinema.runtime.bundle.load import default_bundle_path, load_bundle

    if bundle is not None:
        return Path(bundle)
    builtin = default_bundle_path()
    if "quantization" not in load_bundle(builtin, verify_hashes=False).manifest:
        return builtin
    out = Path(work) / "fp32-export"
    if not (out / "manifest.json").is_file():
        export_tiny(out, overwrite=True)
    return out
