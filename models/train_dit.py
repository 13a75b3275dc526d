"""The tiny DiT's training stage: rectified flow on the cached latents, with an EMA copy of the weights.

Each batch draws a bucket, clips, captions (some dropped, for classifier-free guidance),
flow times, noise and which latent frames are known, all from the stage's own rng; the
loop itself is `train_loop.run_loop`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kinema.models.tiny_dit import DIT_SIZES, TinyDiT
from kinema.models.train_data import BUCKETS, build_dataset
from kinema.models.train_loop import LossLog, default_device, load_checkpoint, lr_at, plot_loss, run_loop, save_checkpoint, train_autocast
from kinema.models.weights import DIT_WEIGHTS, load_weights, save_weights


@dataclass(frozen=True)
class DiTTrainConfig:
    steps: int = 2500
    batch: int = 64
    lr: float = 4e-4
    warmup: int = 300
    weight_decay: float = 0.0
    ema: float = 0.999
    text_dropout: float = 0.1
    cond_prob: float = 0.35  # share of samples with some known latent frames
    clips: int = 16000  # cached clips over all buckets
    captions: int = 4  # random phrasings per cached clip (templates and synonyms)
    # Share of batches cut from inside a clip, its first 1-2 latents known: a long video's
    # next window starts on the previous one's four-frame latents, not on a one-frame latent 0.
    midclip: float = 0.15
    two_objects: float = 0.5  # share of cached clips with two objects
    size: str = "tiny"
    seed: int = 0


def random_cond_mask(rng: np.random.Generator, b: int, t: int, p: float):
    """(B, 1, T, 1, 1) masks: none, first frame, first k frames, or last frame known."""
    m = torch.zeros(b, 1, t, 1, 1)
    for i in range(b):
        if rng.random() >= p:
            continue
        kind = rng.integers(3)
        if kind == 0:
            m[i, :, 0] = 1
        elif kind == 1:
            m[i, :, : rng.integers(1, t)] = 1
        else:
            m[i, :, -1] = 1
    return m


def inside_window(rng: np.random.Generator, x0: torch.Tensor) -> torch.Tensor:
    """The latents from a random four-frame latent (index >= 1) to the end, at least 3 of them."""
    return x0[:, :, rng.integers(1, x0.shape[2] - 2) :]


def first_known_mask(rng: np.random.Generator, b: int, t: int) -> torch.Tensor:
    """(B, 1, T, 1, 1) masks with the first 1 or 2 latent frames known (a long video's overlap)."""
    k = torch.from_numpy(rng.integers(1, 3, b)).view(b, 1, 1, 1, 1)
    return (torch.arange(t).view(1, 1, t, 1, 1) < k).float()


def new_run(cfg: DiTTrainConfig, device: torch.device):
    """(dit, ema, opt, rng) of a fresh run on `device`: the seed's initial weights, the EMA a copy of them, AdamW, the batch rng."""
    torch.manual_seed(cfg.seed)
    dit = TinyDiT(DIT_SIZES[cfg.size]).to(device)
    ema = TinyDiT(DIT_SIZES[cfg.size]).to(device)
    ema.load_state_dict(dit.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    return dit, ema, opt, np.random.default_rng(cfg.seed + 2)


def ema_updater(dit: TinyDiT, ema: TinyDiT, cfg: DiTTrainConfig):
    """The loop's `after_step`: the EMA moves toward the model, its decay ramping up to `cfg.ema`."""

    @torch.no_grad()
    def update_ema(step):
        decay = min(cfg.ema, (1 + step) / (10 + step))
        for pe, pm in zip(ema.parameters(), dit.parameters()):
            pe.lerp_(pm, 1 - decay)

    return update_ema


def warm_start(cfg: DiTTrainConfig, dit: TinyDiT, ema: TinyDiT, weights: Path = DIT_WEIGHTS):
    """(config, step, offset) after loading `weights` (EMA weights) into model and EMA: `cfg.steps` more steps on a fresh schedule.

    The optimiser state is gone, so the warm-up runs again from there.
    """
    load_weights(dit, weights)
    load_weights(ema, weights)
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        done = int(f.metadata().get("steps", 0))
    cfg = replace(cfg, steps=cfg.steps + done)
    print(f"dit: warm start from {weights} ({done} steps), training to {cfg.steps}")
    return cfg, done, done


def _resume(ckpt: Path, cfg: DiTTrainConfig, dit: TinyDiT, ema: TinyDiT, opt, rng: np.random.Generator, warm: bool):
    """(config, step, offset) to continue from: the checkpoint, else with `warm` the committed weights, else step 0.

    offset: where a warm start's fresh schedule begins.
    """
    state = load_checkpoint(ckpt, {"model": dit, "ema": ema}, opt, rng)
    if state is not None:
        step = state["step"]
        # A warm-started run keeps its own schedule: rerunning the same command continues it.
        offset = state.get("offset", 0)
        if warm and "total" in state:
            cfg = replace(cfg, steps=state["total"])
        print(f"dit: resumed at step {step} of {cfg.steps}")
        return cfg, step, offset
    if warm and DIT_WEIGHTS.exists():
        # No checkpoint (a fresh machine): continue from the committed EMA weights.
        return warm_start(cfg, dit, ema)
    return cfg, 0, 0


def _batch_loss(dit: TinyDiT, data: dict, rng: np.random.Generator, cfg: DiTTrainConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The velocity loss of one batch drawn from the cached dataset (its rng draws keep a fixed order: the same seed, the same run).

    The draws are made on the CPU whatever the device, so a GPU run sees the same batches.
    """
    keys = list(data["buckets"])
    p = np.array([BUCKETS[k] for k in keys])
    p = p / p.sum()
    bucket = data["buckets"][keys[rng.choice(len(keys), p=p)]]
    idx = torch.from_numpy(rng.integers(0, len(bucket["latents"]), cfg.batch))
    x0 = bucket["latents"][idx].float()  # (B, C, T, H, W)
    per_clip = bucket["captions"].shape[1]
    cap = bucket["captions"][idx, torch.from_numpy(rng.integers(0, per_clip, cfg.batch))]
    drop = torch.from_numpy(rng.random(cfg.batch) < cfg.text_dropout)
    cap = torch.where(drop, torch.full_like(cap, data["empty"]), cap)
    text, tmask = data["text"][cap].float(), data["mask"][cap]
    midclip = x0.shape[2] >= 4 and rng.random() < cfg.midclip
    if midclip:
        x0 = inside_window(rng, x0)
    b, c, t, h, w = x0.shape
    # Rectified flow with logit-normal times (Esser et al. 2024): x_s = (1-s) x0 + s eps, v = eps - x0.
    sigma = torch.sigmoid(torch.from_numpy(rng.standard_normal(b)).float())
    noise = torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32))
    s = sigma.view(b, 1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    if midclip:
        cmask = first_known_mask(rng, b, t)
    else:
        cmask = random_cond_mask(rng, b, t, cfg.cond_prob)
    x0, xt, sigma, noise = x0.to(device), xt.to(device), sigma.to(device), noise.to(device)
    text, tmask, cmask = text.to(device), tmask.to(device), cmask.to(device)
    with train_autocast(device):
        pred = dit(xt, sigma, text, tmask, x0, cmask)
    # Known frames are given, not predicted: the loss covers the unknown ones only.
    free = (1 - cmask).expand_as(x0)
    return ((pred.float() - (noise - x0)) ** 2 * free).sum() / free.sum().clamp(min=1.0)


def train_dit(out: Path, cfg: DiTTrainConfig, max_minutes: float, warm: bool = False, device: torch.device | str | None = None):
    """Train (or resume) the DiT stage in `out`, on `device` (default: a GPU when at hand); whether it reached `cfg.steps`."""
    device = torch.device(device or default_device())
    data = build_dataset(out, cfg, device)
    dit, ema, opt, rng = new_run(cfg, device)
    ckpt = out / "dit.pt"
    cfg, step, offset = _resume(ckpt, cfg, dit, ema, opt, rng, warm)

    def save(step):
        # The EMA weights go out with every checkpoint: a stopped run leaves usable weights.
        save_checkpoint(ckpt, {"model": dit, "ema": ema}, opt, step, rng, offset=offset, total=cfg.steps)
        save_weights(ema, DIT_WEIGHTS, {"config": asdict(ema.cfg), "train": asdict(cfg), "steps": step})

    dit.train()
    step, _ = run_loop(
        "dit", opt, list(dit.parameters()), lambda: _batch_loss(dit, data, rng, cfg, device),
        lambda s: lr_at(s - offset, cfg.steps - offset, cfg.lr, cfg.warmup), save, LossLog(out / "loss_dit.csv"),
        step, cfg.steps, max_minutes, log_every=25, save_every=300.0, after_step=ema_updater(dit, ema, cfg),
    )
    plot_loss(out / "loss_dit.csv", out / "loss_dit.png", "tiny DiT: rectified-flow velocity MSE")
    print(f"dit: wrote {DIT_WEIGHTS} at step {step}")
    return step >= cfg.steps
