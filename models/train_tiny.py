"""Train the tiny family from scratch: the causal VAE, then the DiT on cached latents.

    python -m kinema.models.train_tiny all --out runs/tiny

Stages: the VAE; the DiT on latents of the frozen VAE encoder; then the decoder alone
(encoder still frozen) for sharper frames in the same latent space. Each stage resumes from `<out>/<stage>.pt` when it exists, so training can be spread over
several runs; `--max-minutes` stops a run cleanly (checkpoint written) before a deadline.
The final weights go to models/data/ as safetensors (EMA weights for the DiT), and the
loss curves to `<out>/loss_<stage>.png`.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kinema.models import shapes_world as world
from kinema.models.text_encoder import TextEncoder, encode_captions, load_tokenizer
from kinema.models.tiny_dit import DIT_SIZES, TinyDiT
from kinema.models.tiny_vae import TinyVAE, VAEConfig

# the weights' paths and their loading live in weights.py; imported here, where the CLI and benchmarks knew them
from kinema.models.weights import DATA_DIR, DIT_WEIGHTS, VAE_WEIGHTS, load_weights, save_weights  # noqa: F401

# (frames, height, width) -> share of training samples. Mostly the default clip; other
# lengths and aspect ratios keep the variable-size path real (Sora trains at native sizes).
BUCKETS = {
    (17, 64, 64): 0.6,
    (17, 48, 80): 0.1,
    (17, 80, 48): 0.1,
    (9, 64, 64): 0.1,
    (25, 64, 64): 0.1,
}


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
    size: str = "tiny"
    seed: int = 0


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def render_batch(rng: np.random.Generator, n: int, frames: int, height: int, width: int):
    """n random clips as float (n, 3, T, H, W) in [-1, 1], with their specs."""
    specs = [world.sample_spec(rng) for _ in range(n)]
    clips = np.stack([world.render(s, frames=frames, height=height, width=width, rng=rng) for s in specs])
    video = torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)
    return video, specs


def pick_bucket(rng: np.random.Generator):
    keys = list(BUCKETS)
    p = np.array([BUCKETS[k] for k in keys])
    return keys[rng.choice(len(keys), p=p / p.sum())]


class LossLog:
    def __init__(self, path: Path):
        self.path = path
        self.new = not path.exists()
        self.f = path.open("a", newline="")
        self.w = csv.writer(self.f)
        if self.new:
            self.w.writerow(["step", "loss", "lr", "seconds"])

    def add(self, step, loss, lr, seconds):
        self.w.writerow([step, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.1f}"])
        self.f.flush()


def plot_loss(csv_path: Path, png_path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    k = max(1, len(loss) // 100)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, loss, alpha=0.3, lw=0.8, label="per step")
    ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


# ----------------------------------------------------------------------------- VAE


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


def train_vae(out: Path, cfg: VAETrainConfig, max_minutes: float):
    torch.manual_seed(cfg.seed)
    vae = TinyVAE(VAEConfig())
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = out / "vae.pt"
    step = 0
    rng = np.random.default_rng(cfg.seed)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        print(f"vae: resumed at step {step}")
        if step >= cfg.steps and VAE_WEIGHTS.exists():
            # Finished: refitting the latent statistics would move the space the DiT learned.
            print(f"vae: already trained ({step} steps), weights at {VAE_WEIGHTS}")
            return True
    log = LossLog(out / "loss_vae.csv")
    start = time.time()
    last_save = start
    vae.train()

    def save():
        torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state}, ckpt)

    while step < cfg.steps:
        frames, h, w = pick_bucket(rng)
        # The VAE is convolutional: short clips teach it nearly as well, for half the cost.
        frames = 9 if rng.random() < 0.7 else 17
        video, _ = render_batch(rng, cfg.batch, frames, h, w)
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon, kl = vae(video)
        loss = recon_loss(recon.float(), video, cfg) + vae.cfg.kl_weight * kl.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        log.add(step, loss.item(), lr, time.time() - start)
        if step % 50 == 0:
            print(f"vae step {step}/{cfg.steps} loss {loss.item():.4f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
        if time.time() - last_save > 120:
            save()
            last_save = time.time()
        if (time.time() - start) / 60 > max_minutes:
            save()
            print("vae: time budget reached, checkpoint saved")
            return False
    save()
    vae.eval()
    fit_latent_stats(vae, rng)
    save_weights(vae, VAE_WEIGHTS, {"config": asdict(vae.cfg), "train": asdict(cfg), "steps": step})
    plot_loss(out / "loss_vae.csv", out / "loss_vae.png", "tiny VAE: MSE + L1 (+KL)")
    print(f"vae: wrote {VAE_WEIGHTS}")
    return True


@torch.no_grad()
def fit_latent_stats(vae: TinyVAE, rng: np.random.Generator, clips: int = 256):
    """Per-channel mean and std of encoder means, so the DiT sees unit-scale latents."""
    zs = []
    for i in range(0, clips, 32):
        video, _ = render_batch(rng, 32, 17, 64, 64)
        zs.append(vae.encode_moments(video)[0])
    z = torch.cat(zs)  # (N, C, t, h, w)
    vae.latent_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
    vae.latent_std.copy_(z.std(dim=(0, 2, 3, 4)))
    print("vae latent mean", vae.latent_mean.numpy().round(3), "std", vae.latent_std.numpy().round(3))


def tune_decoder(out: Path, cfg: VAETrainConfig, max_minutes: float):
    """Sharpen the decoder with the encoder frozen, so the latent space the DiT learned is unchanged."""
    vae = load_weights(TinyVAE(VAEConfig()), VAE_WEIGHTS)
    from safetensors import safe_open

    with safe_open(str(VAE_WEIGHTS), "pt") as f:
        before = int(f.metadata().get("decoder_tune_steps", 0))  # earlier fine-tunes of these weights
    vae.encoder.requires_grad_(False)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = out / "decoder.pt"
    step = 0
    rng = np.random.default_rng(cfg.seed + 10 + before)  # a further fine-tune sees new clips
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        print(f"decoder: resumed at step {step}")
    log = LossLog(out / "loss_decoder.csv")
    start = last_save = time.time()

    def save():
        torch.save({"decoder": vae.decoder.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state}, ckpt)

    while step < cfg.steps:
        frames, h, w = pick_bucket(rng)
        frames = 9 if rng.random() < 0.7 else 17
        video, _ = render_batch(rng, cfg.batch, frames, h, w)
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.no_grad():
            z, _ = vae.encode_moments(video)  # the DiT generates (normalised) encoder means
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon, _ = vae.decoder(z)
        loss = recon_loss(recon.float(), video, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.decoder.parameters(), 1.0)
        opt.step()
        step += 1
        log.add(step, loss.item(), lr, time.time() - start)
        if step % 50 == 0:
            print(f"decoder step {step}/{cfg.steps} loss {loss.item():.4f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
        if time.time() - last_save > 120:
            save()
            last_save = time.time()
        if (time.time() - start) / 60 > max_minutes:
            save()
            print("decoder: time budget reached, checkpoint saved")
            return False
    save()
    save_weights(vae.eval(), VAE_WEIGHTS, {"config": asdict(vae.cfg), "train": asdict(cfg), "decoder_tune_steps": before + step})
    plot_loss(out / "loss_decoder.csv", out / "loss_decoder.png", "tiny VAE decoder fine-tune (encoder frozen)")
    print(f"decoder: wrote {VAE_WEIGHTS}")
    return True


# ----------------------------------------------------------------------------- DiT data


@torch.no_grad()
def build_dataset(out: Path, cfg: DiTTrainConfig):
    """Render clips per bucket, encode them with the trained VAE, embed `cfg.captions` captions each."""
    path = out / "dit_data.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    vae = load_weights(TinyVAE(VAEConfig()), VAE_WEIGHTS).eval()
    rng = np.random.default_rng(cfg.seed + 1)
    data = {"buckets": {}, "captions": []}
    captions: list[str] = []
    t0 = time.time()
    for key, share in BUCKETS.items():
        n = int(round(cfg.clips * share))
        lat, caps = [], []
        for i in range(0, n, 64):
            video, specs = render_batch(rng, min(64, n - i), *key)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mean, _ = vae.encode_moments(video)
            lat.append(vae._norm(mean.float()).half())
            for s in specs:
                caps.append(list(range(len(captions), len(captions) + cfg.captions)))
                captions += [world.caption(s, rng) for _ in range(cfg.captions)]
        data["buckets"][key] = {"latents": torch.cat(lat), "captions": torch.tensor(caps)}
        print(f"data: bucket {key}: {n} clips, {time.time() - t0:.0f}s", flush=True)
    encoder, tokenizer = TextEncoder.pretrained(), load_tokenizer()
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


def train_dit(out: Path, cfg: DiTTrainConfig, max_minutes: float, warm_start: bool = False):
    data = build_dataset(out, cfg)
    torch.manual_seed(cfg.seed)
    dit = TinyDiT(DIT_SIZES[cfg.size])
    ema = TinyDiT(DIT_SIZES[cfg.size])
    ema.load_state_dict(dit.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ckpt = out / "dit.pt"
    step = offset = 0  # offset: where a warm start's fresh schedule begins
    rng = np.random.default_rng(cfg.seed + 2)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        dit.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if "opt" in state:
            opt.load_state_dict(state["opt"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        # A warm-started run keeps its own schedule: rerunning the same command continues it.
        offset = state.get("offset", 0)
        if warm_start and "total" in state:
            cfg = replace(cfg, steps=state["total"])
        print(f"dit: resumed at step {step} of {cfg.steps}")
    elif warm_start and DIT_WEIGHTS.exists():
        # No checkpoint (a fresh machine): continue from the committed EMA weights. The
        # optimiser state is gone, so the warm-up runs again from there.
        load_weights(dit, DIT_WEIGHTS)
        load_weights(ema, DIT_WEIGHTS)
        from safetensors import safe_open

        with safe_open(str(DIT_WEIGHTS), "pt") as f:
            done = int(f.metadata().get("steps", 0))
        cfg = replace(cfg, steps=cfg.steps + done)
        step = offset = done
        print(f"dit: warm start from {DIT_WEIGHTS} ({done} steps), training to {cfg.steps}")
    log = LossLog(out / "loss_dit.csv")
    start = time.time()
    last_save = start
    keys = list(data["buckets"])
    p = np.array([BUCKETS[k] for k in keys])
    p = p / p.sum()

    def save():
        torch.save(
            {"model": dit.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state, "offset": offset, "total": cfg.steps},
            ckpt,
        )

    dit.train()
    while step < cfg.steps:
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
        lr = lr_at(step - offset, cfg.steps - offset, cfg.lr, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = dit(xt, sigma, text, tmask, x0, cmask)
        # Known frames are given, not predicted: the loss covers the unknown ones only.
        free = (1 - cmask).expand_as(x0)
        loss = ((pred.float() - (noise - x0)) ** 2 * free).sum() / free.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), dit.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        log.add(step, loss.item(), lr, time.time() - start)
        if step % 25 == 0:
            print(f"dit step {step}/{cfg.steps} loss {loss.item():.4f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
        if time.time() - last_save > 300:
            save()
            save_weights(ema, DIT_WEIGHTS, {"config": asdict(ema.cfg), "train": asdict(cfg), "steps": step})
            last_save = time.time()
        if (time.time() - start) / 60 > max_minutes:
            break
    save()
    save_weights(ema, DIT_WEIGHTS, {"config": asdict(ema.cfg), "train": asdict(cfg), "steps": step})
    plot_loss(out / "loss_dit.csv", out / "loss_dit.png", "tiny DiT: rectified-flow velocity MSE")
    print(f"dit: wrote {DIT_WEIGHTS} at step {step}")
    return step >= cfg.steps


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kinema.models.train_tiny", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["vae", "dit", "decoder", "all"], help="all = vae, then dit, then decoder")
    ap.add_argument("--out", type=Path, default=Path("runs/tiny"))
    ap.add_argument("--max-minutes", type=float, default=float("inf"), help="stop cleanly (checkpoint saved) after this long")
    ap.add_argument("--vae-steps", type=int, default=VAETrainConfig.steps)
    ap.add_argument("--dit-steps", type=int, default=DiTTrainConfig.steps)
    ap.add_argument("--decoder-steps", type=int, default=1000, help="decoder fine-tune steps with the encoder frozen")
    ap.add_argument("--decoder-edge-weight", type=float, default=0.0, help="weight of the spatial-gradient L1 in the decoder fine-tune")
    ap.add_argument("--decoder-temporal-weight", type=float, default=0.0, help="weight of the frame-difference L1 in the decoder fine-tune")
    ap.add_argument("--decoder-lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warm-start", action="store_true", help="with no checkpoint in --out, continue the DiT from the committed weights for --dit-steps more steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.max_minutes * 60
    if args.stage in ("vae", "all"):
        if not train_vae(args.out, VAETrainConfig(steps=args.vae_steps), args.max_minutes):
            return
    if args.stage in ("dit", "all"):
        if not train_dit(args.out, DiTTrainConfig(steps=args.dit_steps), (deadline - time.time()) / 60, args.warm_start):
            return
    if args.stage in ("decoder", "all"):
        tune_decoder(args.out, VAETrainConfig(steps=args.decoder_steps, lr=args.decoder_lr, edge_weight=args.decoder_edge_weight, temporal_weight=args.decoder_temporal_weight), (deadline - time.time()) / 60)


if __name__ == "__main__":
    main()
