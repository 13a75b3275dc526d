"""GraphSpecs of the bundle's common component signatures (docs/bundle_format.md), shared by every family."""

from __future__ import annotations

from kinema.export.onnx_graph import GraphSpec

DENOISER_INPUTS = ("latents", "timestep", "text_embeds", "text_mask", "cond_latents", "cond_mask")


def text_encoder_spec(*, atol: float, rtol: float) -> GraphSpec:
    """input_ids, attention_mask (B, L) -> text_embeds (B, L, D)."""
    axes = {0: "B", 1: "L"}
    return GraphSpec("text_encoder", ("input_ids", "attention_mask"), ("text_embeds",),
                     {"input_ids": axes, "attention_mask": axes, "text_embeds": axes}, atol=atol, rtol=rtol)


def denoiser_spec(*, atol: float, rtol: float) -> GraphSpec:
    """latents (B, C, T, H, W), timestep (B,), text (B, L, D) + mask, known frames + mask -> prediction (B, C, T, H, W)."""
    lat = {0: "B", 2: "T", 3: "H", 4: "W"}
    return GraphSpec(
        "denoiser",
        DENOISER_INPUTS,
        ("prediction",),
        {
            "latents": lat,
            "timestep": {0: "B"},
            "text_embeds": {0: "B", 1: "L"},
            "text_mask": {0: "B", 1: "L"},
            "cond_latents": lat,
            "cond_mask": {0: "B", 2: "T"},
            "prediction": lat,
        },
        atol=atol,
        rtol=rtol,
    )


def encoder_spec(*, atol: float, rtol: float) -> GraphSpec:
    """frames (B, F, FH, FW, 3) in [0, 1] -> normalised latents (B, C, t, h, w)."""
    return GraphSpec("encoder", ("frames",), ("latents",), {"frames": {0: "B", 1: "F", 2: "FH", 3: "FW"}, "latents": {0: "B"}}, atol=atol, rtol=rtol)
