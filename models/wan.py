"""Wan 2.1/2.2 (diffusers) modules behind kinema's component signatures, ready to trace.

Thin wrappers, no weights of their own: each takes a diffusers/transformers module and
gives it the forward of one bundle graph (docs/bundle_format.md, the graph signatures):

- WanTextEncoder:   UMT5 encoder; token states zeroed past each prompt's length, as
                    WanPipeline does before the denoiser sees them.
- WanDenoiser:      WanTransformer3DModel; the flow sigma in, Wan's integer timestep inside;
                    its attention through WanExportAttention (same values, no strided writes).
- WanTI2VDenoiser:  the same for Wan 2.2 TI2V, with known latent frames and a timestep per token.
- WanDecoderPrefix / WanDecoderStep: AutoencoderKLWan's decode, one latent frame per call,
                    with diffusers' Python-side feature cache turned into explicit tensors.
- WanEncoder:       AutoencoderKLWan's encode (the posterior's mean), normalised, over a whole
                    clip in one call.

Nothing here is exported or checked; export/wan.py does that.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
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


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on (B, N, heads, D): pairs (x[2i], x[2i+1]) rotated, written back by stack + reshape."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).type_as(x)


class WanExportAttention:
    """Wan's attention for tracing: the values of diffusers' WanAttnProcessor, in a graph without its strided writes.

    diffusers writes the rotated pairs into even and odd slots of an empty tensor; the
    exporter makes that a ScatterND between two transposes of the whole query or key,
    which took a third of an int8 step of a 12-layer Wan2.1-1.3B-width transformer at 17x256x256. Here the
    same products are stacked and reshaped; attention is torch's scaled_dot_product_attention
    on (B, heads, N, D), as diffusers' native backend calls it. Image-conditioned blocks
    (add_k_proj, Wan 2.1 I2V) are not handled: WanDenoiser leaves their processor alone.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        q, k, v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))  # (B, N, heads, D)
        if rotary_emb is not None:
            q, k = _rotary(q, *rotary_emb), _rotary(k, *rotary_emb)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attention_mask)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


def use_export_attention(transformer: nn.Module) -> int:
    """Give every plain (text-only) WanAttention of `transformer` WanExportAttention; returns how many."""
    n = 0
    for module in transformer.modules():
        if type(module).__name__ == "WanAttention" and getattr(module, "add_k_proj", None) is None and hasattr(module, "set_processor"):
            module.set_processor(WanExportAttention())
            n += 1
    return n


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
        use_export_attention(transformer)  # the same values as diffusers' attention, a leaner graph
        self.transformer = transformer
        self.num_train_timesteps = float(num_train_timesteps)

    def forward(self, latents, timestep, text_embeds, text_mask, cond_latents, cond_mask):
        t = torch.floor(timestep * self.num_train_timesteps)  # (B,)
        pred = self.transformer(hidden_states=latents, timestep=t, encoder_hidden_states=text_embeds, return_dict=False)[0]
        # Zero-weight uses keep the unused inputs in the graph (the exporter drops unused
        # inputs); the runtime feeds every input of the common signature.
        unused = (text_mask.sum() + cond_latents.sum() + cond_mask.sum()) * 0.0
        return pred + unused.to(pred.dtype)  # (B, C, T, H, W)


class WanTI2VDenoiser(WanDenoiser):
    """Wan 2.2 TI2V: known latent frames (cond_mask 1) are given clean, with timestep 0.

    What WanImageToVideoPipeline does with expand_timesteps: the transformer sees
    cond_latents where a latent frame is known and latents elsewhere, and each patch token
    gets its own timestep, 0 on known frames and floor(sigma * N) on the others. With no
    frame known this is WanPipeline's expand_timesteps call (every token at floor(sigma * N)).
    The prediction on known frames is the network's; the runtime holds those frames at
    cond_latents, as the pipeline puts its condition back into the final latents.
    """

    def __init__(self, transformer: nn.Module, num_train_timesteps: int = 1000):
        super().__init__(transformer, num_train_timesteps)
        p_t, self.p_h, self.p_w = transformer.config.patch_size
        if p_t != 1:
            raise ValueError(f"Wan TI2V transformer patch_size {tuple(transformer.config.patch_size)}: a timestep per token needs p_t = 1")

    def forward(self, latents, timestep, text_embeds, text_mask, cond_latents, cond_mask):
        b, _, t, h, w = latents.shape
        x = cond_mask * cond_latents + (1.0 - cond_mask) * latents  # (B, C, T, H, W)
        free = 1.0 - cond_mask[:, 0, :, 0, 0]  # (B, T): 1 where the frame is to be made
        steps = free * torch.floor(timestep * self.num_train_timesteps)[:, None]  # (B, T)
        tokens = steps[:, :, None, None].expand(b, t, h // self.p_h, w // self.p_w).reshape(b, -1)  # (B, T h w / p^2)
        pred = self.transformer(hidden_states=x, timestep=tokens, encoder_hidden_states=text_embeds, return_dict=False)[0]
        return pred + (text_mask.sum() * 0.0).to(pred.dtype)  # (B, C, T, H, W); text_mask kept in the graph


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


class WholeClipDownsample3d(nn.Module):
    """A WanResample "downsample3d" over a whole clip in one call: what diffusers' chunked encode computes.

    diffusers encodes frame 0 alone, then 4 frames at a time; a chunk's temporal conv (kernel
    3, stride 2, no padding) sees the previous chunk's last frame in front of its own. So frame
    0 passes through and frames (0, 1, 2), (2, 3, 4), ... are convolved: a stride-2 conv over
    the clip. Two zero frames appended keep that defined for a one-frame clip; the output they
    add is dropped.
    """

    def __init__(self, resample: nn.Module):
        super().__init__()
        self.resample = resample.resample
        self.time_conv = resample.time_conv

    def forward(self, x, feat_cache=None, feat_idx=None):
        b, c, t, h, w = x.shape
        x = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))  # (B t, C, h/2, w/2)
        x = x.view(b, t, x.size(1), x.size(2), x.size(3)).permute(0, 2, 1, 3, 4)  # (B, C, t, h/2, w/2)
        later = self.time_conv(F.pad(x, (0, 0, 0, 0, 0, 2)))[:, :, :-1]  # (B, C, (t - 1) / 2, h/2, w/2)
        return torch.cat([x[:, :, :1], later], dim=2)


def whole_clip_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of a WanEncoder3d that encodes a whole clip in one call (no feature cache); the original is untouched.

    Without a cache every causal conv pads its clip with zeros in front, which is what the
    chunked encode's caches amount to; the temporal downsamplers are the one layer whose
    cacheless forward differs (it skips the temporal conv), so they become WholeClipDownsample3d.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    encoder = copy.deepcopy(encoder)
    for module in list(encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, WanResample) and child.mode == "downsample3d":
                setattr(module, name, WholeClipDownsample3d(child))
    return encoder


class WanEncoder(nn.Module):
    """frames (B, F, H, W, 3) in [0, 1] -> normalised latents (B, z, (F - 1)/4 + 1, H/s, W/s).

    The posterior's mean of AutoencoderKLWan.encode, normalised as WanImageToVideoPipeline
    normalises its condition: (mean - latents_mean) / latents_std. The first 4k + 1 frames and
    the top-left multiple-of-s pixels are encoded (the runtime feeds exactly those sizes);
    cropping in the graph also tells the exporter that the sizes divide evenly.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        cfg = vae.config
        self.encoder = whole_clip_encoder(vae.encoder)
        self.quant_conv = vae.quant_conv
        self.patch_size = cfg.patch_size
        self.temporal = int(cfg.scale_factor_temporal)
        self.spatial = int(cfg.scale_factor_spatial)
        z = self.z_dim = cfg.z_dim
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1))
        # WanImageToVideoPipeline multiplies by 1 / std; so does this graph, for the same rounding.
        self.register_buffer("latents_inv_std", 1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1))

    def forward(self, frames):
        _, f, h, w, _ = frames.shape
        m, s = self.temporal, self.spatial
        frames = frames[:, : m * ((f - 1) // m) + 1, : s * (h // s), : s * (w // s)]  # (B, 4k+1, H, W, 3)
        x = frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # (B, 3, F, H, W) in [-1, 1]
        if self.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

            x = patchify(x, patch_size=self.patch_size)  # (B, 3 p p, F, H/p, W/p)
        moments = self.quant_conv(self.encoder(x))  # (B, 2 z, k + 1, H/s, W/s)
        return (moments[:, : self.z_dim] - self.latents_mean) * self.latents_inv_std


class WanVAECodec:
    """A diffusers Wan VAE as export/latent_preview.py uses one: frames in [0, 1] <-> the sampler's normalised latents.

    encode is the encoder graph's computation (WanEncoder: the posterior's mean, normalised);
    decode undoes the normalisation and runs diffusers' own decode, clamped to [0, 1].
    """

    def __init__(self, vae: nn.Module):
        self.vae = vae
        self.encoder = WanEncoder(vae).eval()
        self.temporal, self.spatial = self.encoder.temporal, self.encoder.spatial

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        z = cfg.z_dim
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1)
        video = self.vae.decode(latents * std + mean, return_dict=False)[0]  # (B, 3, T', H', W') in [-1, 1]
        return ((video.clamp(-1.0, 1.0) + 1.0) * 0.5).permute(0, 2, 3, 4, 1)


__all__ = [
    "CACHE_FRAMES",
    "Nearest2x",
    "WanDecoderPrefix",
    "WanDecoderStep",
    "WanDenoiser",
    "WanEncoder",
    "WanTI2VDenoiser",
    "WanVAECodec",
    "WanTextEncoder",
    "decoder_cache_count",
    "export_friendly_decoder",
    "whole_clip_encoder",
]
