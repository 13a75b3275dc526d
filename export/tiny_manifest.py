"""The manifest of a tiny bundle around its exported graphs, and the tools section the quantizer reads."""

from __future__ import annotations

from kinema.models import shapes_bench
from kinema.models.text_encoder import LICENCE_NOTE, MAX_TOKENS, minilm_dir
from kinema.models.tiny_dit import DiTConfig, TinyDiT
from kinema.models.tiny_vae import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, TinyVAE

from kinema.export.latent_preview import fit_preview_map

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


def manifest_fields(dit: TinyDiT, vae: TinyVAE, comps: dict, *, name: str, d, random_init: bool, seed: int) -> dict:
    """The manifest of a tiny bundle around its exported components; `d` is the export's TinyDefaults."""
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
        "preview": fit_preview_map(vae, seed=seed, temporal=TEMPORAL_COMPRESSION, spatial=SPATIAL_COMPRESSION),
        "tools": tools(),
    }


__all__ = ["FLOAT_GROUPS", "PROBE_PROMPTS", "manifest_fields", "tools"]
