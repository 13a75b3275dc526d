"""The tiny family's export forms (export/tiny_forms.py) against the modules as written."""

from __future__ import annotations

import copy
from collections import Counter

import onnx
import pytest
import torch

from kinema.export.tiny_forms import SubpixelUpsample, use_export_attention, use_subpixel_upsample
from kinema.models.tiny_dit import DIT_SIZES, TinyDiT
from kinema.models.tiny_vae import SpatialUpsample, TinyVAE, VAEConfig


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _dit_inputs(b, t, h, w, length, seed):
    cfg = DIT_SIZES["test"]
    mask = torch.ones(b, length, dtype=torch.int64)
    mask[0, 3:] = 0  # padding on one sample: the cross-attention mask matters
    cm = torch.zeros(b, 1, t, 1, 1)
    cm[-1, :, 0] = 1.0
    return (
        torch.randn(b, cfg.latent_channels, t, h, w, generator=_g(seed)),
        torch.rand(b, generator=_g(seed + 1)),
        torch.randn(b, length, cfg.text_dim, generator=_g(seed + 2)),
        mask,
        torch.randn(b, cfg.latent_channels, t, h, w, generator=_g(seed + 3)),
        cm,
    )


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = TinyDiT(DIT_SIZES["test"]).eval()
    with torch.no_grad():  # adaLN-zero starts as the identity; random weights make every block count
        for p in model.parameters():
            p.normal_(0.0, 0.05, generator=_g(1))
    return model


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 12), (3, 2, 6, 10, 7)])
def test_export_attention_is_the_model_bit_for_bit(dit, shape):
    fused = use_export_attention(copy.deepcopy(dit))
    args = _dit_inputs(*shape, seed=5)
    with torch.no_grad():
        ref, got = dit(*args), fused(*args)
    assert ref.abs().mean() > 0.1  # a real output, not the adaLN-zero identity
    assert torch.equal(ref, got), f"max abs difference {(ref - got).abs().max():.3g}"


def test_export_attention_shares_the_parameters(dit):
    model = copy.deepcopy(dit)
    qkv, kv = model.blocks[0].attn.qkv, model.blocks[0].cross.kv
    fused = use_export_attention(model)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in dit.parameters())
    assert fused.blocks[0].attn.qkv is qkv and fused.blocks[0].cross.kv is kv  # the same Linears, not copies
    with torch.no_grad():
        fused.blocks[0].attn.qkv.weight.zero_()
        assert not torch.equal(fused(*_dit_inputs(2, 3, 8, 8, 12, seed=5)), dit(*_dit_inputs(2, 3, 8, 8, 12, seed=5)))


def test_exported_denoiser_has_one_node_per_rotary_and_per_attention(tiny_bundle, tiny_models):
    depth = tiny_models[0].cfg.depth
    ops = Counter(n.op_type for n in onnx.load(str(tiny_bundle / "denoiser.onnx")).graph.node)
    assert ops["RotaryEmbedding"] == 2 * depth  # q and k of every block
    assert ops["Attention"] == 2 * depth  # self- and cross-attention of every block
    assert ops["Transpose"] <= 2, ops  # patch embedding and unpatchify only
    assert ops["ScatterND"] == ops["GatherND"] == 0


@pytest.mark.parametrize("hw", [(4, 4), (3, 5)])
def test_subpixel_upsample_is_upsample_then_convolution(hw):
    torch.manual_seed(2)
    up = SpatialUpsample(8, 4).eval()
    x = torch.randn(2, 8, 3, *hw, generator=_g(3))
    with torch.no_grad():
        ref, got = up(x), SubpixelUpsample(up)(x)
    assert got.shape == ref.shape == (2, 4, 3, 2 * hw[0], 2 * hw[1])
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), f"max abs difference {(got - ref).abs().max():.3g}"
    assert not torch.allclose(got[..., ::2, :], got[..., 1::2, :])  # the phases differ: not a plain nearest upsample


def test_subpixel_decoder_decodes_the_same_frames():
    torch.manual_seed(4)
    vae = TinyVAE(VAEConfig()).eval()
    z = torch.randn(1, 8, 3, 6, 10, generator=_g(5))
    with torch.no_grad():
        ref = vae.decode(z)
        got = use_subpixel_upsample(copy.deepcopy(vae)).decode(z)
    assert ref.std() > 0.01
    assert (got - ref).abs().max() <= 1e-5


def test_exported_decoder_never_builds_the_upsampled_tensor(tiny_bundle):
    for name in ("decoder_prefix", "decoder_step"):
        ops = Counter(n.op_type for n in onnx.load(str(tiny_bundle / f"{name}.onnx")).graph.node)
        assert ops["Expand"] == ops["Resize"] == 0, (name, ops)
