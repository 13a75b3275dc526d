"""The VAE lever of the kinema-tiny v2 study: what the autoencoder's shape buys, per CPU-minute.

    python -m kinema.models.vae_study --minutes 18 --out runs/vae_study

Trains each candidate autoencoder from scratch for the same budget of CPU time (one thread,
measured with the process's CPU clock, so other work on the machine does not shrink it), then measures its ceiling: ShapesBench's in-distribution prompts
rendered as ground truth, encoded and decoded by that autoencoder in PyTorch, and scored
(adherence and shape accuracy), with the latent-boundary jump (frame 4j -> 4j+1 against
the clip's other frame pairs). The committed autoencoder, trained longer, is scored the
same way as the reference. Writes benchmarks/results/vae_study/result.json and result.md
with the machine named. Each candidate resumes from `<out>/<name>/vae.pt`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from kinema.models import shapes_bench as sb
from kinema.models.tiny_vae import TEMPORAL_COMPRESSION, TinyVAE, VAEConfig
from kinema.models.train_loop import LossLog, load_checkpoint, lr_at, run_loop, save_checkpoint
from kinema.models.train_vae import VAETrainConfig, _clips, recon_loss
from kinema.models.weights import VAE_WEIGHTS, load_weights

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "vae_study"

# name -> (autoencoder shape, training settings). The baseline is the shipped shape.
CANDIDATES = {
    "shipped shape (8 ch, 8x)": (VAEConfig(), VAETrainConfig()),
    "16 latent channels, 8x": (VAEConfig(latent_channels=16), VAETrainConfig()),
    "8 ch, 4x spatial": (VAEConfig(channels=(32, 64, 128), time_down=(True, True)), VAETrainConfig()),
    "8 ch, 8x, edge + frame-difference loss": (VAEConfig(), VAETrainConfig(edge_weight=1.0, temporal_weight=4.0)),
}
# Warm starts: the committed autoencoder with its encoder frozen (the DiT's latent space kept)
# and its decoder trained further: does the shape ceiling sit in the decoder or in the latent?
DECODER_CANDIDATES = {
    "committed, decoder fine-tuned with edge loss": VAETrainConfig(lr=2e-4, warmup=20, edge_weight=2.0, temporal_weight=20.0),
}


def train(vae: TinyVAE, cfg: VAETrainConfig, out: Path, minutes: float, decoder_only: bool = False) -> dict:
    """Train until `minutes` of CPU time (this process, one thread) have been spent on this candidate in all runs.

    `decoder_only`: the encoder stays frozen and only the decoder learns (a warm start).
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    params = list(vae.decoder.parameters()) if decoder_only else list(vae.parameters())
    vae.encoder.requires_grad_(not decoder_only)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    state = load_checkpoint(out / "vae.pt", {"model": vae}, opt, rng)
    step, spent = (state["step"], state.get("spent", 0.0)) if state else (0, 0.0)
    left = minutes - spent
    t0 = time.process_time()
    if left > 0:
        def batch_loss():
            video = _clips(rng, cfg.batch)
            if decoder_only:
                with torch.no_grad():
                    z, _ = vae.encode_moments(video)  # the DiT generates (normalised) encoder means
                return recon_loss(vae.decoder(z)[0].float(), video, cfg)
            recon, kl = vae(video)  # fp32: see numerics() for why not bf16 autocast here
            return recon_loss(recon.float(), video, cfg) + vae.cfg.kl_weight * kl.float()

        # The step count only shapes the learning-rate schedule: the clock ends the run.
        total = cfg.steps
        step, _ = run_loop(
            "vae", opt, params, batch_loss, lambda s: lr_at(min(s, total - 1), total, cfg.lr, cfg.warmup),
            lambda s: save_checkpoint(out / "vae.pt", {"model": vae}, opt, s, rng, spent=spent + (time.process_time() - t0) / 60),
            LossLog(out / "loss_vae.csv"), step, 10**9, left, clock=time.process_time,
        )
    return {"steps": step, "cpu_minutes": round(spent + (time.process_time() - t0) / 60, 1), "budget": "cpu"}


@torch.no_grad()
def ceiling(vae: TinyVAE, rows, seeds) -> dict:
    """ShapesBench ground truth through the autoencoder, and its latent-boundary jump."""
    vae.eval()
    scored, boundary, inside = [], [], []
    for row in rows:
        for seed in seeds:
            gt = sb.ground_truth_generate(row, seed)
            frames = torch.from_numpy(gt).float().div(255.0)[None]
            out = (vae.decode(vae.encode(frames))[0].numpy() * 255.0).round().astype(np.uint8)
            scored.append(sb.score_video(out, row))
            d = np.abs(np.diff(out.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # pair i = frames (i, i+1)
            gd = np.abs(np.diff(gt.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
            at = np.arange(len(d)) % TEMPORAL_COMPRESSION == 0  # frame 4j -> 4j+1 crosses a latent boundary
            boundary.append(float((d - gd)[at].mean()))
            inside.append(float((d - gd)[~at].mean()))
    agg = sb.aggregate(scored)
    return {
        "adherence": round(agg["adherence"], 3),
        "shape": round(agg["accuracy"]["shape"], 3),
        "size": round(agg["accuracy"]["size"], 3) if agg["accuracy"]["size"] is not None else None,
        "motion": round(agg["accuracy"]["motion"], 3),
        "boundary_excess": round(float(np.mean(boundary)), 3),
        "inside_excess": round(float(np.mean(inside)), 3),
        "n": agg["n"],
    }


def numerics(steps: int = 1) -> dict:
    """Seconds per training step of the shipped autoencoder shape (batch 8, 17x64x64) in fp32 and under bf16 autocast."""
    from kinema.models.train_data import render_batch

    vae, cfg = TinyVAE(VAEConfig()), VAETrainConfig()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    video, _ = render_batch(np.random.default_rng(0), cfg.batch, 17, 64, 64)
    out = {}
    for mode in ("fp32", "bf16", "fp32", "bf16"):  # the first of each warms up
        t0 = time.time()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                recon, kl = vae(video)
            loss = recon_loss(recon.float(), video, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[f"{mode}_seconds_per_step"] = round((time.time() - t0) / steps, 2)
    return out


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kinema.models.vae_study", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=18.0, help="training budget per candidate (one thread)")
    ap.add_argument("--out", type=Path, default=Path("runs/vae_study"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="*", default=None, help="candidate names to run (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = sb.load_prompts(sb.PROMPTS_PATH)
    results = {"machine": f"{_cpu()}, 1 thread", "prompts": len(rows), "seeds": args.seeds, "candidates": {}}
    path = RESULTS / "result.json"
    if path.exists():
        old = json.loads(path.read_text())
        results["candidates"] = old.get("candidates", {})
        if "numerics" in old:
            results["numerics"] = old["numerics"]
    if "numerics" not in results:
        results["numerics"] = numerics()
        write(results)
    ref = load_weights(TinyVAE(VAEConfig()), VAE_WEIGHTS)
    results["committed"] = ceiling(ref, rows, args.seeds)
    for i, (name, (vcfg, tcfg)) in enumerate(CANDIDATES.items()):
        if args.only and name not in args.only:
            continue
        vae = TinyVAE(vcfg)
        run = train(vae, replace(tcfg, seed=0), args.out / f"c{i}", args.minutes)
        t0 = time.time()
        results["candidates"][name] = {"config": asdict(vcfg), "train": asdict(tcfg), **run,
                                       "params": sum(p.numel() for p in vae.parameters()),
                                       **ceiling(vae, rows, args.seeds), "score_seconds": round(time.time() - t0, 1)}
        print(name, results["candidates"][name], flush=True)
        write(results)
    for i, (name, tcfg) in enumerate(DECODER_CANDIDATES.items()):
        if args.only and name not in args.only:
            continue
        vae = load_weights(TinyVAE(VAEConfig()), VAE_WEIGHTS)
        run = train(vae, tcfg, args.out / f"d{i}", args.minutes, decoder_only=True)
        t0 = time.time()
        results["candidates"][name] = {"config": asdict(vae.cfg), "train": asdict(tcfg), **run, "warm_start": "committed, encoder frozen",
                                       "params": sum(p.numel() for p in vae.decoder.parameters()),
                                       **ceiling(vae, rows, args.seeds), "score_seconds": round(time.time() - t0, 1)}
        print(name, results["candidates"][name], flush=True)
        write(results)
        torch.save(vae.state_dict(), args.out / f"d{i}" / "weights.pt")
    write(results)


def write(results: dict):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# VAE study: the autoencoder's ceiling per CPU-minute", "",
        f"Machine: {results['machine']}. ShapesBench in-distribution ground truth ({results['prompts']} prompts, "
        f"seeds {results['seeds']}) encoded and decoded by each autoencoder. Boundary/inside excess: mean |Δ| per pixel "
        "(0-255) of consecutive output frames minus the ground truth's, at latent boundaries (frame 4j -> 4j+1) and elsewhere.", "",
        "| autoencoder | budget | minutes | steps | adherence | shape | size | motion | boundary excess | inside excess |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if "numerics" in results:
        n = results["numerics"]
        lines[2:2] = [f"Training numerics, one step of the shipped shape at batch 8, 17x64x64: fp32 {n['fp32_seconds_per_step']} s, "
                      f"bf16 autocast {n['bf16_seconds_per_step']} s.", ""]
    if "committed" not in results:
        (RESULTS / "result.md").write_text("\n".join(lines) + "\n")
        return
    c = results["committed"]
    lines.append(f"| committed (1500 steps, then 2800 decoder-only) | - | - | - | {c['adherence']} | {c['shape']} | {c['size']} | {c['motion']} | "
                 f"{c['boundary_excess']} | {c['inside_excess']} |")
    for name, r in results["candidates"].items():
        budget = "CPU time" if r.get("budget") == "cpu" else "wall clock, shared machine"
        lines.append(f"| {name} | {budget} | {r['cpu_minutes']} | {r['steps']} | {r['adherence']} | {r['shape']} | {r['size']} | "
                     f"{r['motion']} | {r['boundary_excess']} | {r['inside_excess']} |")
    (RESULTS / "result.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
