"""The tiny family's text-to-video in plain PyTorch: the reference the ONNX runtime is checked against.

It shares nothing with kinema.runtime but the seeded noise: the flow-matching steps come
from diffusers' FlowMatchEulerDiscreteScheduler, guidance is applied in torch, and the VAE
decodes the whole clip at once instead of streaming.
"""

from __future__ import annotations

import numpy as np
import torch

from kinema.models.text_encoder import load_tokenizer


@torch.no_grad()
def generate_reference(
    dit,
    vae,
    text_encoder,
    prompt: str,
    *,
    negative_prompt: str = "",
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    steps: int = 20,
    guidance: float = 5.0,
    shift: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Frames uint8 (T, H, W, 3) for one prompt, sampled with flow-matching Euler and CFG.

    `dtype=torch.bfloat16` runs the denoiser under CPU autocast (for speed comparisons).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    tok = load_tokenizer()
    enc = tok.encode_batch([prompt, negative_prompt])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    text = text_encoder(ids, mask)  # (2, L, D)

    c = dit.cfg.latent_channels
    shape = (1, c, (frames - 1) // 4 + 1, height // 8, width // 8)
    noise = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)
    x = torch.from_numpy(noise)

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    cond = torch.zeros_like(x)
    cmask = torch.zeros(1, 1, shape[2], 1, 1)
    for t in sched.timesteps:
        sigma = (t / sched.config.num_train_timesteps).reshape(1).float()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            v = dit(torch.cat([x, x]), sigma.expand(2), text, mask, torch.cat([cond, cond]), torch.cat([cmask, cmask]))
        v = v.float()
        v = v[1:] + guidance * (v[:1] - v[1:])
        x = sched.step(v, t, x).prev_sample
    video = vae.decode(x)[0]  # (T, H, W, 3) in [0, 1]
    return (video.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
