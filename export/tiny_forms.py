"""Export forms of the tiny family: the same arithmetic, written so ONNX Runtime runs fewer, larger nodes.

At the default clip (80 tokens a sample, 8x8 latents) ONNX Runtime's cost per node, not
arithmetic, is most of a denoiser step, and copies of full-resolution activations are much
of a decoder step. Two forms, each installed on a model in place (parameters shared):

- `use_export_attention(dit)`: traced as written (models/tiny_dit.py), each attention is
  some thirty small nodes (strided rotary slices, the (B, heads, N, head_dim) transposes
  around them, the decomposed product). Here it is two custom torch ops whose ONNX
  translations are opset 23's `RotaryEmbedding` (interleaved pairs) and `Attention` on
  (B, N, heads*head_dim) tensors, which need no transposes. Each op's eager body is the
  original code in the original layout, so in PyTorch the outputs are bit-identical.
- `use_subpixel_upsample(vae)`: the decoder's nearest 2x upsample followed by a 3x3
  convolution becomes one 3x3 convolution at the low resolution with four output phases,
  interleaved into the 2x grid (the upsampled tensor is never built). The same sums with
  the weights added up first: equal to the original to float rounding (about 1e-6).

tests/export/test_tiny_forms.py compares both with the original modules; the exported
graphs are checked against them like every graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.models.tiny_dit import CrossAttention, SelfAttention, TinyDiT, apply_rope
from kinema.models.tiny_vae import SpatialUpsample, TinyVAE

__all__ = ["EXPORT_OPSET", "ExportCrossAttention", "ExportSelfAttention", "SubpixelUpsample", "onnx_translations", "use_export_attention", "use_subpixel_upsample"]

EXPORT_OPSET = 23  # RotaryEmbedding, Attention and RMSNormalization are opset 23 operators


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:  # (B, N, heads*hd) -> (B, heads, N, hd)
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def _tokens_first(x: torch.Tensor) -> torch.Tensor:  # (B, heads, N, hd) -> (B, N, heads*hd)
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


@torch.library.custom_op("kinema::rope", mutates_args=())
def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> torch.Tensor:
    """Interleaved rotary positions on x (B, N, heads*hd); cos/sin (B, N, hd/2)."""
    return _tokens_first(apply_rope(_heads_first(x, heads), cos[:, None], sin[:, None]))


@rope.register_fake
def _(x, cos, sin, heads):
    return torch.empty_like(x)


@torch.library.custom_op("kinema::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, heads: int) -> torch.Tensor:
    """Scaled dot-product attention on (B, N, heads*hd) tensors; bias: additive, (B, 1, N, L), or None."""
    out = F.scaled_dot_product_attention(_heads_first(q, heads), _heads_first(k, heads), _heads_first(v, heads), attn_mask=bias)
    return _tokens_first(out)


@attention.register_fake
def _(q, k, v, bias, heads):
    return torch.empty_like(q)


def onnx_translations() -> dict:
    """The ONNX side of the two ops, for torch.onnx.export's custom_translation_table."""
    from onnxscript import opset23 as op

    def rope_onnx(x, cos, sin, heads: int):
        return op.RotaryEmbedding(x, cos, sin, interleaved=1, num_heads=heads)

    def attention_onnx(q, k, v, bias, heads: int):
        inputs = (q, k, v) if bias is None else (q, k, v, bias)
        y, *_ = op.Attention(*inputs, q_num_heads=heads, kv_num_heads=heads)  # present K/V and scores: unused
        return y

    return {torch.ops.kinema.rope.default: rope_onnx, torch.ops.kinema.attention.default: attention_onnx}


class ExportSelfAttention(nn.Module):
    """SelfAttention's parameters and arithmetic on (B, N, D) tensors; cos/sin expanded to (B, N, hd/2)."""

    def __init__(self, src: SelfAttention):
        super().__init__()
        self.heads, self.qkv, self.q_norm, self.k_norm, self.proj = src.heads, src.qkv, src.q_norm, src.k_norm, src.proj

    def forward(self, x, cos, sin):
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)  # the (3, heads, hd) channel order of SelfAttention's reshape
        q = rope(self.q_norm(q.reshape(b, n, h, d // h)).reshape(b, n, d), cos, sin, h)
        k = rope(self.k_norm(k.reshape(b, n, h, d // h)).reshape(b, n, d), cos, sin, h)
        return self.proj(attention(q, k, v, None, h))


class ExportCrossAttention(nn.Module):
    """CrossAttention's parameters and arithmetic on (B, N, D) tensors; the mask as an additive (B, 1, N, L) bias."""

    def __init__(self, src: CrossAttention):
        super().__init__()
        self.heads, self.q, self.kv, self.proj = src.heads, src.q, src.kv, src.proj

    def forward(self, x, text, bias):
        k, v = self.kv(text).split(x.shape[-1], dim=-1)
        return self.proj(attention(self.q(x), k, v, bias, self.heads))


def use_export_attention(dit: TinyDiT) -> TinyDiT:
    """Put the export form into `dit` in place (its parameters are shared, not copied); returns it."""
    for block in dit.blocks:
        if not isinstance(block.attn, ExportSelfAttention):
            block.attn = ExportSelfAttention(block.attn)
            block.cross = ExportCrossAttention(block.cross)
    dit.token_layout_attention = True
    return dit


# PHASE_TAPS[a][r, d] = 1 when tap d (of -1, 0, 1) of a 3x3 kernel on the 2x grid, at output
# phase a, reads the low-resolution pixel at offset r - 1: row 2i + a + d - 1 of the
# upsampled grid is row floor((2i + a + d - 1) / 2) of the input.
PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class SubpixelUpsample(nn.Module):
    """SpatialUpsample (nearest 2x, then a (1, 3, 3) convolution) as one low-resolution convolution."""

    def __init__(self, src: SpatialUpsample):
        super().__init__()
        w = src.conv.weight.detach()[:, :, 0]  # (O, C, 3, 3)
        o, c = w.shape[:2]
        phases = torch.einsum("ard,bse,ocde->abocrs", PHASE_TAPS.double(), PHASE_TAPS.double(), w.double()).float()  # (2, 2, O, C, 3, 3)
        self.out_channels = o
        self.conv = nn.Conv3d(c, 4 * o, (1, 3, 3), padding=(0, 1, 1))
        with torch.no_grad():
            self.conv.weight.copy_(phases.reshape(4 * o, c, 1, 3, 3))
            self.conv.bias.copy_(src.conv.bias.detach().repeat(4))

    def forward(self, x):  # (B, C, t, H, W) -> (B, O, t, 2H, 2W)
        b, _, t, h, w = x.shape
        y = self.conv(x).reshape(b, 2, 2, self.out_channels, t, h, w).permute(0, 3, 4, 5, 1, 6, 2)
        return y.reshape(b, self.out_channels, t, 2 * h, 2 * w)


def use_subpixel_upsample(vae: TinyVAE) -> TinyVAE:
    """Put SubpixelUpsample into `vae`'s decoder in place; returns it."""
    ups = vae.decoder.space_ups
    for i, up in enumerate(ups):
        if isinstance(up, SpatialUpsample):
            ups[i] = SubpixelUpsample(up)
    return vae
