"""The ONNX bundle + NumPy runtime against the same model in PyTorch (random init, fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinema.models.tiny_reference import generate_reference
from kinema.runtime import Pipeline

# Traced shapes in export/tiny.py: denoiser at T=3 latent frames, 8x8 latents; decoder at 8x8.
# Checked here at 13 frames (4 latent frames), 48x80 pixels (6x10 latents).
PARITY = dict(frames=13, height=48, width=80, steps=6, guidance=4.0, shift=2.0, seed=7)


def test_video_matches_pytorch_reference(tiny_bundle, tiny_models):
    dit, vae, text = tiny_models
    pipe = Pipeline.from_bundle(tiny_bundle)
    prompt = "a small red circle moving left on a black background"
    ours = pipe.generate(prompt, **PARITY).frames
    ref = generate_reference(dit, vae, text, prompt, **PARITY)
    assert ours.shape == ref.shape == (13, 48, 80, 3)
    assert ours.std() > 5  # a real picture, not a constant: the comparison means something
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 2, f"max abs pixel difference {diff.max()}/255 > 2/255"


def test_guidance_changes_the_video(tiny_bundle):
    pipe = Pipeline.from_bundle(tiny_bundle)
    kw = dict(frames=5, steps=3, seed=1)
    a = pipe.generate("a red ball", guidance=1.0, **kw).frames.astype(int)
    b = pipe.generate("a red ball", guidance=6.0, **kw).frames.astype(int)
    assert np.abs(a - b).mean() > 0.5


def test_batched_and_sequential_guidance_agree(tiny_bundle):
    pipe = Pipeline.from_bundle(tiny_bundle)
    kw = dict(frames=9, steps=4, seed=3, guidance=5.0)
    a = pipe.generate("a blue star spinning", cfg_mode="batched", **kw).frames.astype(int)
    b = pipe.generate("a blue star spinning", cfg_mode="sequential", **kw).frames.astype(int)
    assert np.abs(a - b).max() <= 1


def test_same_seed_same_video_other_seed_other_video(tiny_bundle):
    pipe = Pipeline.from_bundle(tiny_bundle)
    kw = dict(frames=5, steps=2)
    a = pipe.generate("a green square", seed=11, **kw).frames
    b = pipe.generate("a green square", seed=11, **kw).frames
    c = pipe.generate("a green square", seed=12, **kw).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("frames,height,width", [(17, 64, 64), (25, 48, 80)])
def test_streaming_decode_equals_whole_clip(tiny_bundle, tiny_models, frames, height, width):
    """ONNX prefix+step graphs, one latent frame at a time, against PyTorch decoding all frames at once."""
    _, vae, _ = tiny_models
    pipe = Pipeline.from_bundle(tiny_bundle)
    t = (frames - 1) // 4 + 1
    z = np.random.default_rng(0).standard_normal((1, 8, t, height // 8, width // 8), dtype=np.float32)
    streamed = pipe.decode(z)
    with torch.no_grad():
        whole = vae.decode(torch.from_numpy(z)).numpy()
    assert streamed.shape == whole.shape == (1, frames, height, width, 3)
    assert np.abs(streamed - whole).max() <= 1e-5


def test_pytorch_streaming_equals_whole_clip(tiny_models):
    _, vae, _ = tiny_models
    z = torch.randn(2, 8, 6, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode(z)
        chunk, caches = vae.decode_chunk(z[:, :, :1])
        parts = [chunk]
        for i in range(1, z.shape[2]):
            chunk, caches = vae.decode_chunk(z[:, :, i : i + 1], caches)
            parts.append(chunk)
    assert whole.shape[1] == 21
    assert (torch.cat(parts, 1) - whole).abs().max().item() <= 1e-5
