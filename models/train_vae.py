"""The tiny VAE's two training stages: the autoencoder from scratch, then the decoder alone.

Both run the shared loop of `train_loop` on clips rendered as they go; the decoder
fine-tune keeps the encoder frozen, so the latent space the DiT learned stays put.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kinema.models.tiny_vae import TinyVAE, VAEConfig
from kinema.models.train_data import pick_bucket, render_batch
from kinema.models.train_loop import LossLog, default_device, load_checkpoint, lr_at, plot_loss, run_loop, save_checkpoint, train_autocast
from kinema.models.weights import VAE_WEIGHTS, load_weights, save_weights


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 1500
    batch: int = 8
    lr: float = 6e-4
    object_weight: float = 5.0  # extra loss weight on pixels that differ from the background
    warmup: int = 50
    l1_weight: float = 1.0
    # L1 between the spatial gradients of output and target: weight on edges and corners,
    # which the per-pixel loss of small shapes (a star's points) hardly sees.
    edge_weight: float = 0.0
    # L1 between the frame-to-frame differences of output and target: a causal VAE with 4x
    # time compression otherwise jumps more across each latent boundary (frame 4j -> 4j+1)
    # than the clip moves, and a long video's window seams are such boundaries.
    temporal_weight: float = 0.0
    seed: int = 0


def recon_loss(recon, video, cfg: VAETrainConfig):
    """MSE + L1 with extra weight on object pixels.

    Objects cover a few percent of the pixels; without extra weight the decoder first
    learns (and long stays at) the flat background. The corner pixel is the background.
    """
    weight = 1.0 + cfg.object_weight * ((video - video[..., :1, :1]).abs().amax(1, keepdim=True) > 0.05).float()
    err = recon - video
    loss = (weight * (err.pow(2) + cfg.l1_weight * err.abs())).mean() / weight.mean()
    if cfg.edge_weight:
        dx = (err[..., :, 1:] - err[..., :, :-1]).abs().mean()  # d(recon)/dx - d(video)/dx
        dy = (err[..., 1:, :] - err[..., :-1, :]).abs().mean()
        loss = loss + cfg.edge_weight * (dx + dy)
    if cfg.temporal_weight:
        dt = (err[:, :, 1:] - err[:, :, :-1]).abs().mean()  # d(recon)/dt - d(video)/dt
        loss = loss + cfg.temporal_weight * dt
    return loss


def _clips(rng: np.random.Generator, batch: int) -> torch.Tensor:
    """A batch of rendered clips at a random bucket's size."""
    frames, h, w = pick_bucket(rng)
    # The VAE is convolutional: short clips teach it nearly as well, for half the cost.
    frames = 9 if rng.random() < 0.7 else 17
    video, _ = render_batch(rng, batch, frames, h, w)
    return video


def vae_loss(vae: TinyVAE, rng: np.random.Generator, cfg: VAETrainConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The autoencoder's loss on one batch of clips rendered from `rng` (on the CPU), computed on `device`."""
    video = _clips(rng, cfg.batch).to(device)
    with train_autocast(device):
        recon, kl = vae(video)
    return recon_loss(recon.float(), video, cfg) + vae.cfg.kl_weight * kl.float()


def decoder_loss(vae: TinyVAE, rng: np.random.Generator, cfg: VAETrainConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The decoder fine-tune's loss on one batch: the frozen encoder's means decoded back to the clips."""
    video = _clips(rng, cfg.batch).to(device)
    with torch.no_grad():
        z, _ = vae.encode_moments(video)  # the DiT generates (normalised) encoder means
    with train_autocast(device):
        recon, _ = vae.decoder(z)
    return recon_loss(recon.float(), video, cfg)


def train_vae(out: Path, cfg: VAETrainConfig, max_minutes: float, device: torch.device | str | None = None):
    """Train (or resume) the autoencoder in `out`, on `device` (default: a GPU when at hand); whether it finished."""
    device = torch.device(device or default_device())
    torch.manual_seed(cfg.seed)
    vae = TinyVAE(VAEConfig()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = out / "vae.pt"
    step = 0
    rng = np.random.default_rng(cfg.seed)
    state = load_checkpoint(ckpt, {"model": vae}, opt, rng)
    if state is not None:
        step = state["step"]
        print(f"vae: resumed at step {step}")
        if step >= cfg.steps and VAE_WEIGHTS.exists():
            # Finished: refitting the latent statistics would move the space the DiT learned.
            print(f"vae: already trained ({step} steps), weights at {VAE_WEIGHTS}")
            return True
    vae.train()
    step, out_of_time = run_loop(
        "vae", opt, list(vae.parameters()), lambda: vae_loss(vae, rng, cfg, device), lambda s: lr_at(s, cfg.steps, cfg.lr, cfg.warmup),
        lambda s: save_checkpoint(ckpt, {"model": vae}, opt, s, rng), LossLog(out / "loss_vae.csv"), step, cfg.steps, max_minutes,
    )
    if out_of_time:
        print("vae: time budget reached, checkpoint saved")
        return False
    vae.eval()
    fit_latent_stats(vae, rng)
    save_weights(vae.cpu(), VAE_WEIGHTS, {"config": asdict(vae.cfg), "train": asdict(cfg), "steps": step})
    plot_loss(out / "loss_vae.csv", out / "loss_vae.png", "tiny VAE: MSE + L1 (+KL)")
    print(f"vae: wrote {VAE_WEIGHTS}")
    return True


@torch.no_grad()
def fit_latent_stats(vae: TinyVAE, rng: np.random.Generator, clips: int = 256):
    """Per-channel mean and std of encoder means, so the DiT sees unit-scale latents (computed where the VAE is)."""
    device = vae.latent_mean.device
    zs = []
    for i in range(0, clips, 32):
        video, _ = render_batch(rng, 32, 17, 64, 64)
        zs.append(vae.encode_moments(video.to(device))[0])
    z = torch.cat(zs)  # (N, C, t, h, w)
    vae.latent_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
    vae.latent_std.copy_(z.std(dim=(0, 2, 3, 4)))
    print("vae latent mean", vae.latent_mean.cpu().numpy().round(3), "std", vae.latent_std.cpu().numpy().round(3))


def new_decoder_run(cfg: VAETrainConfig, device: torch.device, weights: Path = VAE_WEIGHTS):
    """(vae, opt, rng, fine-tune steps the weights had) to fine-tune the decoder of `weights` on `device`, the encoder frozen."""
    vae = load_weights(TinyVAE(VAEConfig()), weights).to(device)
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        before = int(f.metadata().get("decoder_tune_steps", 0))  # earlier fine-tunes of these weights
    vae.encoder.requires_grad_(False)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed + 10 + before)  # a further fine-tune sees new clips
    return vae, opt, rng, before


def tune_decoder(out: Path, cfg: VAETrainConfig, max_minutes: float, device: torch.device | str | None = None):
    """Sharpen the decoder with the encoder frozen, so the latent space the DiT learned is unchanged."""
    device = torch.device(device or default_device())
    vae, opt, rng, before = new_decoder_run(cfg, device)
    ckpt = out / "decoder.pt"
    step = 0
    state = load_checkpoint(ckpt, {"decoder": vae.decoder}, opt, rng)
    if state is not None:
        step = state["step"]
        print(f"decoder: resumed at step {step}")

    step, out_of_time = run_loop(
        "decoder", opt, list(vae.decoder.parameters()), lambda: decoder_loss(vae, rng, cfg, device), lambda s: lr_at(s, cfg.steps, cfg.lr, cfg.warmup),
        lambda s: save_checkpoint(ckpt, {"decoder": vae.decoder}, opt, s, rng), LossLog(out / "loss_decoder.csv"), step, cfg.steps, max_minutes,
    )
    if out_of_time:
        print("decoder: time budget reached, checkpoint saved")
        return False
    save_weights(vae.eval().cpu(), VAE_WEIGHTS, {"config": asdict(vae.cfg), "train": asdict(cfg), "decoder_tune_steps": before + step})
    plot_loss(out / "loss_decoder.csv", out / "loss_decoder.png", "tiny VAE decoder fine-tune (encoder frozen)")
    print(f"decoder: wrote {VAE_WEIGHTS}")
    return True
