"""Wan's graphs, declared: wrapper modules (models/wan.py), specs, traced and check inputs (run by onnx_graph.export_components)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from kinema.models.wan import WanDecoderPrefix, WanDecoderStep, WanDenoiser, WanEncoder, WanTextEncoder, WanTI2VDenoiser

from kinema.export.onnx_graph import ComponentExport, GraphSpec
from kinema.export.signatures import denoiser_spec, encoder_spec, text_encoder_spec

TEXT_TOL = dict(atol=1e-4, rtol=1e-3)
DENOISER_TOL = dict(atol=1e-4, rtol=1e-3)
DECODER_TOL = dict(atol=1e-4, rtol=1e-3)
ENCODER_TOL = dict(atol=1e-4, rtol=1e-3)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def text_encoder_graph(text_encoder, release: bool = False) -> ComponentExport:
    vocab = int(text_encoder.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, vocab, (1, 8), generator=gen)
    ids_chk = torch.randint(2, vocab, (2, 13), generator=gen)
    mask_chk = torch.ones(2, 13, dtype=torch.int64)
    mask_chk[1, 5:] = 0
    return ComponentExport(text_encoder_spec(**TEXT_TOL), WanTextEncoder(text_encoder).eval(), (ids, torch.ones_like(ids)), (ids_chk, mask_chk), release)


def denoiser_graph(transformer, n_train: int, z: int, latent_multiple: int, *, ti2v: bool = False, release: bool = False) -> ComponentExport:
    """Wan 2.1 ignores known frames; Wan 2.2 TI2V takes them (checked with the first latent frame known)."""
    text_dim = transformer.config.text_dim

    def den_inputs(b, t, h, w, length, seed):
        mask = torch.ones(b, length, dtype=torch.int64)
        mask[0, length // 2 :] = 0
        shape = (b, z, t, h * latent_multiple, w * latent_multiple)
        known = torch.zeros(b, 1, t, 1, 1)
        if ti2v:
            known[:, :, 0] = 1
        return (
            _randn(*shape, seed=seed),
            torch.rand(b, generator=torch.Generator().manual_seed(seed)),
            _randn(b, length, text_dim, seed=seed + 1),
            mask,
            _randn(*shape, seed=seed + 2) if ti2v else torch.zeros(shape),
            known,
        )

    wrapper = WanTI2VDenoiser(transformer, n_train) if ti2v else WanDenoiser(transformer, n_train)
    return ComponentExport(denoiser_spec(**DENOISER_TOL), wrapper.eval(), den_inputs(2, 2, 2, 3, 8, 0), den_inputs(1, 3, 3, 2, 11, 1), release)


def decoder_graphs(vae, z: int) -> Iterator[ComponentExport]:
    """The streaming decoder: a prefix graph (first latent frame) and a step graph (one more, with caches)."""
    prefix = WanDecoderPrefix(vae).eval()
    step = WanDecoderStep.build(vae).eval()
    lat1 = {0: "B", 3: "H", 4: "W"}
    cache_in = tuple(f"cache_{i}" for i in range(step.num_caches))
    cache_out = tuple(f"next_cache_{i}" for i in range(step.num_caches))
    h0, w0 = 4, 6
    with torch.no_grad():
        caches = prefix(_randn(1, z, 1, h0, w0, seed=3))[1:]
    step_axes = {"latents": lat1, "frames": {0: "B"}}
    for n_in, n_out, c in zip(cache_in, cache_out, caches):
        k = c.shape[3] // h0  # caches live at 1x, 2x, 4x ... the latent size
        if c.shape[3] != k * h0 or c.shape[4] != k * w0:
            raise ValueError(f"decoder cache {n_in} is {tuple(c.shape)}; expected a multiple of the latent {h0}x{w0}")
        sym = ("H", "W") if k == 1 else (f"{k}*H", f"{k}*W")
        step_axes[n_in] = {0: "B", 3: sym[0], 4: sym[1]}
        step_axes[n_out] = {0: "B"}  # spatial sizes are expressions of H, W in the graph
    spec = GraphSpec("decoder_prefix", ("latents",), ("frames", *cache_out), {"latents": lat1, "frames": {0: "B"}, **{n: {0: "B"} for n in cache_out}}, **DECODER_TOL)
    yield ComponentExport(spec, prefix, (_randn(2, z, 1, h0, w0, seed=4),), (_randn(1, z, 1, 3, 5, seed=5),))

    def step_inputs(b, h, w, seed):
        with torch.no_grad():
            cs = prefix(_randn(b, z, 1, h, w, seed=seed))[1:]
        return (_randn(b, z, 1, h, w, seed=seed + 1), *cs)

    spec = GraphSpec("decoder_step", ("latents", *cache_in), ("frames", *cache_out), step_axes, **DECODER_TOL)
    yield ComponentExport(spec, step, step_inputs(2, h0, w0, 6), step_inputs(1, 3, 5, 8))


def encoder_graph(vae) -> ComponentExport:
    """The VAE encoder over a whole clip: traced at B=2 and 5 frames (B=1 would freeze the batch), checked at 9 frames and at one (an image)."""
    s = vae.config.scale_factor_spatial

    def frames(b, f, h, w, seed):
        return (torch.rand(b, f, h * s, w * s, 3, generator=torch.Generator().manual_seed(seed)),)

    return ComponentExport(encoder_spec(**ENCODER_TOL), WanEncoder(vae).eval(), frames(2, 5, 2, 3, 9), [frames(1, 9, 3, 2, 10), frames(1, 1, 4, 3, 11)])


def wan_graphs(transformer, vae, text_encoder, *, n_train: int, latent_multiple: int, ti2v: bool = False, release: bool = False) -> Iterator[ComponentExport]:
    """Every graph of a Wan bundle, in the order they are exported (and listed in the manifest).

    `release`: the text encoder's and the transformer's weights are dropped once their graphs
    are checked (one graph each), so ONNX Runtime never holds them beside PyTorch; the VAE,
    used by four graphs and the preview fit, is kept.
    """
    z = vae.config.z_dim
    yield text_encoder_graph(text_encoder, release)
    yield denoiser_graph(transformer, n_train, z, latent_multiple, ti2v=ti2v, release=release)
    yield from decoder_graphs(vae, z)
    yield encoder_graph(vae)


__all__ = ["wan_graphs"]
