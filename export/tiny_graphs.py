"""The tiny family's graphs, declared: wrapper modules, specs, traced and check inputs (run by onnx_graph.export_components)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from kinema.models.text_encoder import MAX_TOKENS
from kinema.models.tiny_dit import DiTConfig, TinyDiT
from kinema.models.tiny_vae import TinyVAE

from kinema.export.onnx_graph import ComponentExport, GraphSpec
from kinema.export.signatures import denoiser_spec, text_encoder_spec

TEXT_TOL = dict(atol=2e-4, rtol=1e-3)
DENOISER_TOL = dict(atol=2e-4, rtol=1e-3)
DECODER_TOL = dict(atol=1e-4, rtol=1e-3)


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


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def text_encoder_graph(text) -> ComponentExport:
    """Traced at L=16, checked at L=MAX_TOKENS and B=2."""
    ids = torch.randint(1000, 2000, (1, 16))  # torch's global generator, seeded by load_tiny
    ids_chk = torch.randint(1000, 2000, (2, MAX_TOKENS))
    mask_chk = torch.ones(2, MAX_TOKENS, dtype=torch.int64)
    mask_chk[1, 7:] = 0
    return ComponentExport(text_encoder_spec(**TEXT_TOL), text, (ids, torch.ones_like(ids)), (ids_chk, mask_chk))


def denoiser_graph(dit: TinyDiT) -> ComponentExport:
    """Traced at T=3, 8x8 latents; checked at another batch, length and aspect ratio."""
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

    return ComponentExport(denoiser_spec(**DENOISER_TOL), DenoiserGraph(dit).eval(), den_inputs(2, 3, 8, 8, 12, 0), den_inputs(3, 5, 6, 10, MAX_TOKENS, 1))


def decoder_caches(vae: TinyVAE, c: int) -> tuple[tuple[str, ...], tuple[str, ...], list]:
    """(cache input names, cache output names, the caches of one 8x8 latent frame)."""
    with torch.no_grad():
        _, caches = vae.decode_chunk(_randn(1, c, 1, 8, 8, seed=3))
    return tuple(f"cache_{i}" for i in range(len(caches))), tuple(f"next_cache_{i}" for i in range(len(caches))), caches


def decoder_graphs(vae: TinyVAE, c: int) -> Iterator[ComponentExport]:
    """Prefix and step graphs with explicit caches, one latent frame per call."""
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
    spec = GraphSpec("encoder", ("frames",), ("latents",), {"frames": {0: "B", 1: "F", 2: "FH", 3: "FW"}, "latents": {0: "B"}}, **DECODER_TOL)
    return ComponentExport(
        spec,
        EncoderGraph(vae).eval(),
        (torch.rand(1, 9, 64, 64, 3, generator=torch.Generator().manual_seed(9)),),
        (torch.rand(2, 13, 48, 80, 3, generator=torch.Generator().manual_seed(10)),),
    )


def tiny_graphs(dit: TinyDiT, vae: TinyVAE, text, *, with_encoder: bool = True) -> Iterator[ComponentExport]:
    """Every graph of a tiny bundle, in the order they are exported (and listed in the manifest)."""
    yield text_encoder_graph(text)
    yield denoiser_graph(dit)
    yield from decoder_graphs(vae, dit.cfg.latent_channels)
    if with_encoder:
        yield encoder_graph(vae)


__all__ = ["DecoderPrefixGraph", "DecoderStepGraph", "DenoiserGraph", "EncoderGraph", "decoder_caches", "tiny_graphs"]
