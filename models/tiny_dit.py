"""Diffusion transformer of the tiny family: Sora-style, over spacetime patches of the video latent.

Patches of 1x2x2 latent pixels become tokens; rotary positions over (t, h, w) are computed
from the input's own size, so any T/H/W inside the manifest's limits works. The timestep
(and the pooled caption) condition every block through adaLN-zero; each block also
cross-attends to the caption's token states under its padding mask. Known latent frames
(an image, the end of a previous clip) come in through `cond_latents` and `cond_mask`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 8
    text_dim: int = 384  # all-MiniLM-L6-v2 hidden size
    width: int = 256
    depth: int = 8
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: tuple[int, int, int] = (1, 2, 2)
    # Head-dim split between the (t, h, w) rotary axes; each part even.
    rope_split: tuple[int, int, int] = (16, 24, 24)
    rope_theta: float = 100.0  # positions are small integers (at most a few dozen)


DIT_SIZES = {
    "tiny": DiTConfig(),
    "test": DiTConfig(width=64, depth=2, heads=2, rope_split=(8, 12, 12)),
}


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding of a float timestep (B,) -> (B, dim), as in DDPM/DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_tables(t: int, h: int, w: int, split, theta: float, device):
    """cos/sin tables (N, head_dim/2) for N = t*h*w tokens in (t, h, w) raster order."""
    parts = []
    for n, d in zip((t, h, w), split):
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d)
        parts.append(torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv[None])  # (n, d/2)
    ft, fh, fw = parts
    ang = torch.cat(
        [
            ft[:, None, None, :].expand(t, h, w, ft.shape[-1]),
            fh[None, :, None, :].expand(t, h, w, fh.shape[-1]),
            fw[None, None, :, :].expand(t, h, w, fw.shape[-1]),
        ],
        dim=-1,
    ).reshape(t * h * w, -1)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):  # x (B, heads, N, hd); cos/sin (N, hd/2)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t):  # (B,) sigma in [0, 1]
        return self.mlp(timestep_embedding(t * 1000.0, self.freq_dim))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(self, x, cos, sin):  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, hd)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    def __init__(self, width: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(text_dim, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, text, mask):  # x (B, N, D); text (B, L, Dt); mask (B, 1, 1, L) bool
        b, n, d = x.shape
        hd = d // self.heads
        q = self.q(x).reshape(b, n, self.heads, hd).transpose(1, 2)
        k, v = self.kv(text).reshape(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and MLP modulated by adaLN-zero; plain pre-norm cross-attention to text."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross = CrossAttention(d, cfg.text_dim, cfg.heads)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c, text, mask, cos, sin):
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # each (B, D)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1), cos, sin)
        x = x + self.cross(self.norm2(x), text, mask)
        x = x + g2[:, None] * self.mlp(modulate(self.norm3(x), s2, sc2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.width
        pt, ph, pw = cfg.patch
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear = nn.Linear(d, pt * ph * pw * cfg.latent_channels)

    def forward(self, x, c):
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class TinyDiT(nn.Module):
    """Velocity prediction for rectified flow over a (B, C, T, H, W) latent."""

    token_layout_attention = False  # set by export/tiny_forms.py's use_export_attention

    def __init__(self, cfg: DiTConfig = DiTConfig()):
        super().__init__()
        self.cfg = cfg
        c, d = cfg.latent_channels, cfg.width
        if sum(cfg.rope_split) != d // cfg.heads:
            raise ValueError(f"rope_split {cfg.rope_split} must sum to the head dim {d // cfg.heads}")
        # Input: noisy latents, masked known latents, and the mask itself.
        self.patch_embed = nn.Conv3d(2 * c + 1, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.t_embed = TimestepEmbedder(d)
        self.text_pool = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(_basic)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        # adaLN-zero: every block starts as the identity, the output as zero.
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def forward(self, latents, timestep, text_embeds, text_mask, cond_latents, cond_mask):
        b, c, t, h, w = latents.shape
        pt, ph, pw = self.cfg.patch
        gt, gh, gw = t // pt, h // ph, w // pw
        mask_full = cond_mask.to(latents.dtype).expand(b, 1, t, h, w)
        x = torch.cat([latents, cond_latents * mask_full, mask_full], dim=1)  # (B, 2C+1, T, H, W)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D), N = gt*gh*gw

        keep = text_mask.to(text_embeds.dtype)  # (B, L)
        pooled = (text_embeds * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)  # (B, Dt)
        cond = self.t_embed(timestep) + self.text_pool(pooled)  # (B, D)
        attn_mask = (text_mask > 0)[:, None, None, :]  # (B, 1, 1, L)
        cos, sin = rope_tables(gt, gh, gw, self.cfg.rope_split, self.cfg.rope_theta, latents.device)
        if self.token_layout_attention:  # the export form (export/tiny_forms.py): tables per sample, an additive mask
            n = x.shape[1]
            cos, sin = cos.expand(b, n, -1), sin.expand(b, n, -1)
            attn_mask = torch.zeros(attn_mask.shape, dtype=x.dtype, device=x.device).masked_fill(~attn_mask, float("-inf")).expand(b, 1, n, -1)

        for block in self.blocks:
            x = block(x, cond, text_embeds, attn_mask, cos, sin)
        x = self.final(x, cond)  # (B, N, pt*ph*pw*C)
        x = x.reshape(b, gt, gh, gw, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, c, t, h, w)
