"""The tiny family's training data: clip sizes (buckets), rendered batches, and the DiT's cached dataset.

The VAE stages render their clips as they go; the DiT trains on latents of the frozen
encoder and embeddings of the captions, computed once and cached in `<out>/dit_data.pt`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from kinema.models import shapes_world as world
from kinema.models.text_encoder import TextEncoder, encode_captions, load_tokenizer
from kinema.models.tiny_vae import TinyVAE, VAEConfig
from kinema.models.train_loop import default_device, train_autocast
from kinema.models.weights import VAE_WEIGHTS, load_weights

# (frames, height, width) -> share of training samples. Mostly the default clip; other
# lengths and aspect ratios keep the variable-size path real (Sora trains at native sizes).
BUCKETS = {
    (17, 64, 64): 0.6,
    (17, 48, 80): 0.1,
    (17, 80, 48): 0.1,
    (9, 64, 64): 0.1,
    (25, 64, 64): 0.1,
}


def render_batch(rng: np.random.Generator, n: int, frames: int, height: int, width: int, two_objects: float = 0.5):
    """n random clips as float (n, 3, T, H, W) in [-1, 1], with their specs (two objects with probability `two_objects`)."""
    specs = [world.sample_spec(rng, two_objects=two_objects) for _ in range(n)]
    clips = np.stack([world.render(s, frames=frames, height=height, width=width, rng=rng) for s in specs])
    video = torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)
    return video, specs


def pick_bucket(rng: np.random.Generator):
    keys = list(BUCKETS)
    p = np.array([BUCKETS[k] for k in keys])
    return keys[rng.choice(len(keys), p=p / p.sum())]


@torch.no_grad()
def build_dataset(out: Path, cfg, device: torch.device | str | None = None):
    """Render clips per bucket, encode them with the trained VAE, embed `cfg.captions` captions each.

    `cfg` is the DiT stage's DiTTrainConfig (its seed, clips and captions are read here).
    The networks run on `device` (default: a GPU when at hand); the cache is on the CPU.
    """
    path = out / "dit_data.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    device = torch.device(device or default_device())
    vae = load_weights(TinyVAE(VAEConfig()), VAE_WEIGHTS).eval().to(device)
    rng = np.random.default_rng(cfg.seed + 1)
    data = {"buckets": {}, "captions": []}
    captions: list[str] = []
    t0 = time.time()
    for key, share in BUCKETS.items():
        n = int(round(cfg.clips * share))
        lat, caps = [], []
        for i in range(0, n, 64):
            video, specs = render_batch(rng, min(64, n - i), *key, two_objects=cfg.two_objects)
            with train_autocast(device):
                mean, _ = vae.encode_moments(video.to(device))
            lat.append(vae._norm(mean.float()).half().cpu())
            for s in specs:
                caps.append(list(range(len(captions), len(captions) + cfg.captions)))
                captions += [world.caption(s, rng) for _ in range(cfg.captions)]
        data["buckets"][key] = {"latents": torch.cat(lat), "captions": torch.tensor(caps)}
        print(f"data: bucket {key}: {n} clips, {time.time() - t0:.0f}s", flush=True)
    encoder, tokenizer = TextEncoder.pretrained().to(device), load_tokenizer()
    unique = sorted(set(captions) | {""})
    index = {c: i for i, c in enumerate(unique)}
    emb, mask = encode_captions(encoder, tokenizer, unique)
    data["text"] = emb.half()
    data["mask"] = mask
    data["empty"] = index[""]
    remap = torch.tensor([index[c] for c in captions])
    for b in data["buckets"].values():
        b["captions"] = remap[b["captions"]]
    print(f"data: {len(unique)} unique captions embedded, {time.time() - t0:.0f}s", flush=True)
    torch.save(data, path)
    return data
