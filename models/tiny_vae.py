"""Causal video autoencoder of the tiny family: 4x in time (first frame alone), 8x in space.

Every temporal convolution is causal, and every normalisation is per position, so the
decoder can run one latent frame at a time with explicit caches (`decode_chunk`) and give
the same frames as decoding the whole clip at once. A clip of 4k+1 frames maps to k+1
latent frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    latent_channels: int = 8
    # Channels per level, finest (full resolution) first; three 2x spatial levels.
    channels: tuple[int, ...] = (16, 32, 64, 128)
    # Which downsampling steps (finest first) also halve time: the two coarsest, so
    # the costly full-resolution layers run on the most frames but the fewest channels.
    time_down: tuple[bool, ...] = (False, True, True)
    kl_weight: float = 1e-6


TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


class RMSNorm(nn.Module):
    """Normalise over channels at each (t, h, w): causal and streamable, unlike GroupNorm."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x):  # (B, C, T, H, W)
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight


class CausalConv3d(nn.Module):
    """3D convolution that sees only the current and earlier frames.

    With `cache` (the last kt-1 input frames of the previous chunk) it continues a stream;
    without it the past is zeros. Returns (output, new_cache).
    """

    def __init__(self, cin: int, cout: int, kt: int = 3, ks: int = 3, stride_t: int = 1, stride_s: int = 1):
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv3d(cin, cout, (kt, ks, ks), stride=(stride_t, stride_s, stride_s), padding=(0, ks // 2, ks // 2))

    def forward(self, x, cache=None):  # (B, C, t, H, W)
        if self.kt == 1:
            return self.conv(x), None
        if cache is None:
            x = F.pad(x, (0, 0, 0, 0, self.kt - 1, 0))
        else:
            x = torch.cat([cache, x], dim=2)
        return self.conv(x), x[:, :, -(self.kt - 1):]


class ResBlock(nn.Module):
    """Pre-norm residual block: a causal 3x3x3 convolution then a spatial 3x3 one."""

    def __init__(self, cin: int, cout: int, kt: int = 3):
        super().__init__()
        self.has_cache = kt > 1
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, kt=kt)
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, kt=1)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, cache=None):
        h, cache = self.conv1(F.silu(self.norm1(x)), cache)
        h, _ = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h, cache


class TimeUpsample(nn.Module):
    """Doubles the frame rate; on the first chunk the first frame stays alone (1 -> 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels, kt=3, ks=3)

    def forward(self, x, cache=None, first: bool = True):
        b, c, t, h, w = x.shape
        y, cache = self.conv(x, cache)  # (B, 2C, t, H, W)
        y = y.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        if first:
            y = y[:, :, 1:]  # frame 0 of the clip has no predecessor to interpolate from
        return y, cache


class SpatialUpsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):  # (B, C, t, H, W) -> (B, C', t, 2H, 2W)
        b, c, t, h, w = x.shape
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        # Full resolution is where convolutions cost most: spatial-only there.
        self.conv_in = CausalConv3d(3, ch[0], kt=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, td in enumerate(cfg.time_down):
            self.blocks.append(ResBlock(ch[i], ch[i], kt=3 if i > 0 else 1))
            # Causal stride-2 in time over [0, 0, f0, f1, ...]: 2k+1 frames -> k+1, frame 0 alone.
            self.downs.append(CausalConv3d(ch[i], ch[i + 1], kt=3 if td else 1, stride_t=2 if td else 1, stride_s=2))
        self.mid = ResBlock(ch[-1], ch[-1])
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, kt=1)
        # Start with a near-deterministic posterior (std ~0.02): with unit noise at init the
        # latent carries almost nothing and the decoder settles on the background colour.
        with torch.no_grad():
            self.conv_out.conv.bias[cfg.latent_channels :].fill_(-8.0)

    def forward(self, x):  # (B, 3, T, H, W) in [-1, 1]
        x, _ = self.conv_in(x)
        for block, down in zip(self.blocks, self.downs):
            x, _ = block(x)
            x, _ = down(x)
        x, _ = self.mid(x)
        x, _ = self.conv_out(F.silu(self.norm_out(x)))
        return x  # (B, 2C, T/4+1, H/8, W/8): mean and log-variance


class Decoder(nn.Module):
    """Latent frames -> video frames, whole clip or one chunk at a time with caches."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels[::-1]
        tu = cfg.time_down[::-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        self.mid = ResBlock(ch[0], ch[0])
        self.time_ups = nn.ModuleList()
        self.space_ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i, up in enumerate(tu):
            self.time_ups.append(TimeUpsample(ch[i]) if up else nn.Identity())
            self.space_ups.append(SpatialUpsample(ch[i], ch[i + 1]))
            self.blocks.append(ResBlock(ch[i + 1], ch[i + 1], kt=3 if i + 1 < len(tu) else 1))
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 3, kt=1)

    def num_caches(self) -> int:
        return 2 + sum(isinstance(t, TimeUpsample) for t in self.time_ups) + sum(b.has_cache for b in self.blocks)

    def forward(self, z, caches=None, first: bool = True):
        """Decode latent frames z (B, C, t, h, w) -> (frames (B, 3, t', 8h, 8w) in [-1, 1], caches).

        Caches are the last input frames of each temporal convolution, in a fixed order.
        """
        past = iter(caches) if caches is not None else None
        new = []

        def step(module, x, *extra):
            y, c = module(x, next(past) if past is not None else None, *extra)
            new.append(c)
            return y

        x = step(self.conv_in, z)
        x = step(self.mid, x)
        for tup, sup, block in zip(self.time_ups, self.space_ups, self.blocks):
            if isinstance(tup, TimeUpsample):
                x = step(tup, x, first)  # (B, C, 2t or 2t-1, h, w)
            x = sup(x)
            x = step(block, x) if block.has_cache else block(x)[0]
        x, _ = self.conv_out(F.silu(self.norm_out(x)))
        return x, new


class TinyVAE(nn.Module):
    """Encoder + decoder with the latent normalisation (per-channel mean and std) kept as buffers."""

    def __init__(self, cfg: VAEConfig = VAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def _norm(self, z):
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def _denorm(self, z):
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    def encode_moments(self, video):  # (B, 3, T, H, W) in [-1, 1]
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, frames):
        """Frames (B, T, H, W, 3) in [0, 1] -> normalised latents (B, C, (T-1)/4+1, H/8, W/8)."""
        video = frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0
        mean, _ = self.encode_moments(video)
        return self._norm(mean)

    def decode(self, latents):
        """Normalised latents (B, C, t, h, w) -> frames (B, 4(t-1)+1, 8h, 8w, 3) in [0, 1]."""
        x, _ = self.decoder(self._denorm(latents))
        return self._to_frames(x)

    def decode_chunk(self, latents, caches=None):
        """Streaming decode: the first chunk without caches, then one latent frame at a time."""
        x, new = self.decoder(self._denorm(latents), caches, first=caches is None)
        return self._to_frames(x), new

    @staticmethod
    def _to_frames(x):  # (B, 3, T, H, W) in ~[-1, 1] -> (B, T, H, W, 3) in [0, 1]
        return ((x.permute(0, 2, 3, 4, 1) + 1.0) * 0.5).clamp(0.0, 1.0)

    def forward(self, video, generator=None):
        """Training pass: (reconstruction in [-1, 1], KL term) for video (B, 3, T, H, W) in [-1, 1]."""
        mean, logvar = self.encode_moments(video)
        z = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * torch.exp(0.5 * logvar)
        recon, _ = self.decoder(z)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return recon, kl
