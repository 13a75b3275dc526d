"""Export the built-in `tiny` family (MiniLM text encoder, tiny DiT, causal VAE) to a bundle."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from kinema.models.text_encoder import MAX_TOKENS, TextEncoder
from kinema.models.tiny_dit import DIT_SIZES, DiTConfig, TinyDiT
from kinema.models.tiny_vae import TinyVAE, VAEConfig
from kinema.models.weights import DIT_WEIGHTS, VAE_WEIGHTS, load_weights
from kinema.runtime.bundle.writer import write_bundle
from kinema.export.tiny_manifest import manifest_fields
from kinema.export.onnx_graph import ComponentExport, GraphSpec, export_components
from kinema.export.signatures import denoiser_spec, encoder_spec, text_encoder_spec
from kinema.export.tiny_forms import EXPORT_OPSET, onnx_translations, use_export_attention, use_subpixel_upsample

TEXT_TOL = dict(atol=2e-4, rtol=1e-3)
DENOISER_TOL = dict(atol=2e-4, rtol=1e-3)
DECODER_TOL = dict(atol=1e-4, rtol=1e-3)


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


class DenoiserGraph(nn.Module):
    def __init__(self, dit: TinyDiT):
        super().__init__()
        self.dit = dit

    def forward(self, latents, timestep, text_embeds, text_mask, cond_latents, cond_mask):
        return self.dit(latents, timestep, text_embeds, text_mask, cond_latents, cond_mask)


class DecoderPrefixGraph(nn.Module):
    """First latent frame -> first video frame and the decoder's caches."""

    def __init__(self, vae: TinyVAE):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        frames, caches = self.vae.decode_chunk(latents)
        return (frames, *caches)


class DecoderStepGraph(nn.Module):
    """One more latent frame + caches -> four video frames and the next caches."""

    def __init__(self, vae: TinyVAE):
        super().__init__()
        if vae.decoder.num_caches() != 6:
            raise ValueError(f"decoder has {vae.decoder.num_caches()} caches; DecoderStepGraph names 6")
        self.vae = vae

    # Named arguments, not *caches: torch.export maps dynamic shapes onto a flat signature.
    def forward(self, latents, cache_0, cache_1, cache_2, cache_3, cache_4, cache_5):
        caches = [cache_0, cache_1, cache_2, cache_3, cache_4, cache_5]
        frames, new = self.vae.decode_chunk(latents, caches)
        return (frames, *new)


class EncoderGraph(nn.Module):
    def __init__(self, vae: TinyVAE):
        super().__init__()
        self.vae = vae

    def forward(self, frames):
        return self.vae.encode(frames)


# The wrappers above are traced: torch.onnx records each forward's file, line and source
# text in every node's metadata, so they keep their place in this file (moving them would
# change the exported graphs' bytes). Below: the graphs declared for export_components.

from collections.abc import Iterator  # noqa: E402 (below the wrappers, for the reason above)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def text_encoder_graph(text) -> ComponentExport:
    """Traced at L=16, checked at L=MAX_TOKENS and B=2."""
    ids = torch.randint(1000, 2000, (1, 16))  # torch's global generator, seeded by load_tiny
    ids_chk = torch.randint(1000, 2000, (2, MAX_TOKENS))
    mask_chk = torch.ones(2, MAX_TOKENS, dtype=torch.int64)
    mask_chk[1, 7:] = 0
    return ComponentExport(text_encoder_spec(**TEXT_TOL), text, (ids, torch.ones_like(ids)), (ids_chk, mask_chk))


def denoiser_graph(dit: TinyDiT, *, forms: bool = True) -> ComponentExport:
    """Traced at T=3, 8x8 latents; checked at another batch, length and aspect ratio.

    `forms`: in the export form (export/tiny_forms.py, opset 23, installed in `dit` in place:
    the same outputs, shared parameters), else as written (opset 18).
    """
    cfg: DiTConfig = dit.cfg
    c = cfg.latent_channels

    def den_inputs(b, t, h, w, l, seed):
        mask = torch.ones(b, l, dtype=torch.int64)
        mask[0, l // 2 :] = 0
        cm = torch.zeros(b, 1, t, 1, 1)
        cm[:, :, 0] = 1
        return (
            _randn(b, c, t, h, w, seed=seed),
            torch.rand(b, generator=torch.Generator().manual_seed(seed)),
            _randn(b, l, cfg.text_dim, seed=seed + 1),
            mask,
            _randn(b, c, t, h, w, seed=seed + 2),
            cm,
        )

    spec = denoiser_spec(**DENOISER_TOL)
    if forms:
        spec, dit = replace(spec, opset=EXPORT_OPSET, translations=onnx_translations), use_export_attention(dit)
    return ComponentExport(spec, DenoiserGraph(dit).eval(), den_inputs(2, 3, 8, 8, 12, 0), den_inputs(3, 5, 6, 10, MAX_TOKENS, 1))


def decoder_caches(vae: TinyVAE, c: int) -> tuple[tuple[str, ...], tuple[str, ...], list]:
    """(cache input names, cache output names, the caches of one 8x8 latent frame)."""
    with torch.no_grad():
        _, caches = vae.decode_chunk(_randn(1, c, 1, 8, 8, seed=3))
    return tuple(f"cache_{i}" for i in range(len(caches))), tuple(f"next_cache_{i}" for i in range(len(caches))), caches


def decoder_graphs(vae: TinyVAE, c: int, *, forms: bool = True) -> Iterator[ComponentExport]:
    """Prefix and step graphs with explicit caches, one latent frame per call (`forms`: with the
    sub-pixel upsample, installed in `vae`'s decoder in place)."""
    if forms:
        use_subpixel_upsample(vae)
    lat1 = {0: "B", 3: "H", 4: "W"}
    cache_in, cache_out, caches = decoder_caches(vae, c)
    cache_out_axes = {n: {0: "B"} for n in cache_out}  # spatial sizes are expressions of H, W
    spec = GraphSpec("decoder_prefix", ("latents",), ("frames", *cache_out), {"latents": lat1, "frames": {0: "B"}, **cache_out_axes}, **DECODER_TOL)
    yield ComponentExport(spec, DecoderPrefixGraph(vae).eval(), (_randn(1, c, 1, 8, 8, seed=4),), (_randn(2, c, 1, 6, 10, seed=5),))

    def step_inputs(b, h, w, seed):
        with torch.no_grad():
            _, cs = vae.decode_chunk(_randn(b, c, 1, h, w, seed=seed))
        return (_randn(b, c, 1, h, w, seed=seed + 1), *cs)

    # Cache spatial sizes are multiples of the latent H, W (derived dims).
    step_axes = {"latents": lat1, "frames": {0: "B"}, **cache_out_axes}
    for n, cache in zip(cache_in, caches):
        k = cache.shape[3] // 8
        step_axes[n] = {0: "B", 3: "H" if k == 1 else f"{k}*H", 4: "W" if k == 1 else f"{k}*W"}
    spec = GraphSpec("decoder_step", ("latents", *cache_in), ("frames", *cache_out), step_axes, **DECODER_TOL)
    yield ComponentExport(spec, DecoderStepGraph(vae).eval(), step_inputs(1, 8, 8, 6), step_inputs(2, 6, 10, 8))


def encoder_graph(vae: TinyVAE) -> ComponentExport:
    spec = encoder_spec(**DECODER_TOL)
    return ComponentExport(
        spec,
        EncoderGraph(vae).eval(),
        (torch.rand(1, 9, 64, 64, 3, generator=torch.Generator().manual_seed(9)),),
        (torch.rand(2, 13, 48, 80, 3, generator=torch.Generator().manual_seed(10)),),
    )


def tiny_graphs(dit: TinyDiT, vae: TinyVAE, text, *, with_encoder: bool = True, forms: bool = True) -> Iterator[ComponentExport]:
    """Every graph of a tiny bundle, in the order they are exported (and listed in the manifest).

    `forms`: the denoiser and decoder in their export forms (export/tiny_forms.py; the default,
    what bundles ship), else traced as written (to measure the forms against, and for tests of
    graph passes that match the written patterns)."""
    yield text_encoder_graph(text)
    yield denoiser_graph(dit, forms=forms)
    yield from decoder_graphs(vae, dit.cfg.latent_channels, forms=forms)
    if with_encoder:
        yield encoder_graph(vae)


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
    forms: bool = True,
) -> Path:
    """Trace the tiny family's graphs, check each against PyTorch, and write a bundle at `out`."""
    dit, vae, text = load_tiny(checkpoint_dir, size=size, random_init=random_init, seed=seed)

    def build(stage: Path) -> dict:
        comps = export_components(stage, tiny_graphs(dit, vae, text, with_encoder=with_encoder, forms=forms))
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
