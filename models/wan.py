"""Wan 2.1/2.2 (diffusers) modules behind kinema's component signatures, ready to trace.

Thin wrappers, no weights of their own: each takes a diffusers/transformers module and
gives it the forward of one bundle graph (docs/bundle_format.md, the graph signatures):

- WanTextEncoder:   UMT5 encoder; token states zeroed past each prompt's length, as
                    WanPipeline does before the denoiser sees them.
- WanDenoiser:      WanTransformer3DModel; the flow sigma in, Wan's integer timestep inside.
- WanDecoderPrefix / WanDecoderStep: AutoencoderKLWan's decode, one latent frame per call,
                    with diffusers' Python-side feature cache turned into explicit tensors.

Nothing here is exported or checked; export/wan.py does that.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# diffusers' decoder keeps this many past frames per causal convolution (its CACHE_T).
CACHE_FRAMES = 2


class WanTextEncoder(nn.Module):
    """(input_ids, attention_mask) (B, L) int64 -> text_embeds (B, L, D), zero past each prompt."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        # With SDPA attention the dynamo exporter's decomposition drops the .contiguous()
        # before UMT5's output reshape and fails ("Cannot view a tensor ..."); the eager
        # attention path traces, and computes the same function.
        encoder.set_attn_implementation("eager")
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        # WanPipeline keeps the first sum(mask) states and pads with zeros; the denoiser
        # attends to all L positions, zeros included, so the zeros are part of the model.
        return h * attention_mask.unsqueeze(-1).to(h.dtype)


class WanDenoiser(nn.Module):
    """kinema's denoiser signature around WanTransformer3DModel: flow velocity out.

    `timestep` is the flow sigma in [0, 1]. Wan's schedulers hand the transformer
    int64(sigma * num_train_timesteps) (UniPC's `timesteps` tensor is int64, as in Wan's
    own sampler), so the graph takes that floor too: the runtime's UniPC then reproduces
    WanPipeline. Wan text-to-video takes no mask (it attends to the zero-padded states)
    and no known frames: `text_mask`, `cond_latents` and `cond_mask` are accepted for the
    common signature and do not change the output (the manifest says cond_latents: false).
    """

    def __init__(self, transformer: nn.Module, num_train_timesteps: int = 1000):
        super().__init__()
        self.transformer = transformer
        self.num_train_timesteps = float(num_train_timesteps)

    def forward(self, latents, timestep, text_embeds, text_mask, cond_latents, cond_mask):
        t = torch.floor(timestep * self.num_train_timesteps)  # (B,)
        pred = self.transformer(hidden_states=latents, timestep=t, encoder_hidden_states=text_embeds, return_dict=False)[0]
        # Zero-weight uses keep the unused inputs in the graph (the exporter drops unused
        # inputs); the runtime feeds every input of the common signature.
        unused = (text_mask.sum() + cond_latents.sum() + cond_mask.sum()) * 0.0
        return pred + unused.to(pred.dtype)  # (B, C, T, H, W)


class Nearest2x(nn.Module):
    """2x nearest upsampling of (N, C, h, w) by index repetition.

    For an integer factor of 2, PyTorch's "nearest-exact" source index floor((i + 0.5) / 2)
    equals i // 2, so this is the same function; it exports to Expand + Reshape, which
    every exporter and runtime handles (tests/export/test_wan.py checks equality).
    """

    def forward(self, x):
        n, c, h, w = x.shape
        x = x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2)  # (N, C, h, 2, w, 2)
        return x.reshape(n, c, 2 * h, 2 * w)


def export_friendly_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of a WanDecoder3d whose nearest-exact 2x upsamplers are Nearest2x; the original is untouched."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanUpsample

    decoder = copy.deepcopy(decoder)
    for module in list(decoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, WanUpsample):
                if child.mode != "nearest-exact" or tuple(float(s) for s in child.scale_factor) != (2.0, 2.0):
                    raise ValueError(f"Wan decoder upsampler {name} is {child.mode} x{child.scale_factor}; only 2x nearest-exact has an export-friendly twin")
                setattr(module, name, Nearest2x())
    return decoder


class _DecoderBase(nn.Module):
    """Latent normalisation, post-quant conv, the decoder copy, and frames in kinema's layout."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        cfg = vae.config
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = export_friendly_decoder(vae.decoder)
        self.patch_size = cfg.patch_size
        z = cfg.z_dim
        # The denoiser works on (z - mean) / std; WanPipeline undoes it before decoding.
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1))
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1))

    def _unpack(self, latents):
        return self.post_quant_conv(latents * self.latents_std + self.latents_mean)  # (B, z, t, h, w)

    def _frames(self, out):
        if self.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=self.patch_size)
        out = torch.clamp(out, min=-1.0, max=1.0)  # (B, 3, t', H, W) in [-1, 1]
        return (out.permute(0, 2, 3, 4, 1) + 1.0) * 0.5  # (B, t', H, W, 3) in [0, 1]


def decoder_cache_count(vae: nn.Module, height: int = 2, width: int = 2) -> int:
    """How many cache tensors the decoder keeps between latent frames (one per causal 3x3x3 / time conv)."""
    z = torch.zeros(1, vae.config.z_dim, 1, height, width)
    with torch.no_grad():
        return len(WanDecoderPrefix(vae)(z)) - 1


class WanDecoderPrefix(_DecoderBase):
    """First latent frame (B, z, 1, h, w) -> first video frame (B, 1, H, W, 3) and every decoder cache.

    Each cache holds CACHE_FRAMES frames. diffusers starts a cache with one frame and
    lets the causal padding add a zero frame in front, and marks a temporal upsampler
    "Rep" so its next call pads with zeros: both are a cache whose missing frames are
    zeros, which is what this graph returns, so one step graph serves every later frame.
    """

    def forward(self, latents):
        x = self._unpack(latents)
        n = sum(1 for _ in self.decoder.modules())  # more slots than causal convs
        feat_cache: list = [None] * n
        feat_idx = [0]
        out = self.decoder(x, feat_cache=feat_cache, feat_idx=feat_idx, first_chunk=True)
        caches = []
        for i in range(feat_idx[0]):
            c = feat_cache[i]
            if isinstance(c, str):  # "Rep": a temporal upsampler seen once; its input is the previous cache's
                if i == 0 or not isinstance(caches[-1], torch.Tensor):
                    raise ValueError(f"Wan decoder cache {i} is {c!r} with no cache before it to take its shape from")
                c = torch.zeros_like(caches[-1])
            else:
                c = _pad_front(c)
            caches.append(c)
        return (self._frames(out), *caches)


def _pad_front(c):
    """A cache of fewer than CACHE_FRAMES frames, zero-filled in front: what causal padding would add."""
    missing = CACHE_FRAMES - c.shape[2]
    if missing <= 0:
        return c
    b, ch, _, h, w = c.shape
    return torch.cat([c.new_zeros(b, ch, missing, h, w), c], dim=2)


class WanDecoderStep(_DecoderBase):
    """One more latent frame (B, z, 1, h, w) + caches -> four video frames (B, 4, H, W, 3) + next caches.

    Use `WanDecoderStep.build(vae)`: forward takes one named argument per cache
    (cache_0, cache_1, ...), since torch.export maps dynamic shapes onto a flat signature.
    """

    num_caches: int = 0

    @classmethod
    def build(cls, vae: nn.Module) -> "WanDecoderStep":
        n = decoder_cache_count(vae)
        names = ", ".join(f"cache_{i}" for i in range(n))
        namespace: dict = {}
        exec(f"def forward(self, latents, {names}):\n    return self.step(latents, [{names}])\n", namespace)  # noqa: S102
        graph_cls = type(f"WanDecoderStep{n}", (cls,), {"forward": namespace["forward"], "num_caches": n})
        return graph_cls(vae)

    def step(self, latents, caches: list):
        if len(caches) != self.num_caches:
            raise ValueError(f"decoder step takes {self.num_caches} caches, got {len(caches)}")
        x = self._unpack(latents)
        feat_cache = list(caches) + [None] * (sum(1 for _ in self.decoder.modules()))
        feat_idx = [0]
        out = self.decoder(x, feat_cache=feat_cache, feat_idx=feat_idx, first_chunk=False)
        if feat_idx[0] != self.num_caches:
            raise ValueError(f"decoder used {feat_idx[0]} caches in a step, the prefix made {self.num_caches}")
        return (self._frames(out), *feat_cache[: self.num_caches])


__all__ = [
    "CACHE_FRAMES",
    "Nearest2x",
    "WanDecoderPrefix",
    "WanDecoderStep",
    "WanDenoiser",
    "WanTextEncoder",
    "decoder_cache_count",
    "export_friendly_decoder",
]
