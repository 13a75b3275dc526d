"""The training loop the tiny family's stages share, and what goes with it: schedule, loss log, checkpoints.

Each stage (VAE, decoder fine-tune, DiT) supplies its batch loss; the loop owns the
learning-rate schedule, the optimiser step, logging, the periodic save and the time limit.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch


def bf16_is_fast() -> bool:
    """Whether bf16 autocast pays on this CPU: only with native bf16 instructions (AVX-512 BF16 or AMX).

    Measured on a 2-core AMD EPYC with AVX2 only: one training step of the tiny VAE took 6.9 s in
    fp32 and 128 s under bf16 autocast (benchmarks/results/vae_study). KINEMA_TRAIN_BF16=1 or 0
    overrides the guess.
    """
    forced = os.environ.get("KINEMA_TRAIN_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bf16()


@lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    """Read once: the stages ask at every step."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> torch.device:
    """Where training runs unless told: the first CUDA GPU when one is at hand, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_autocast(device: torch.device | str = "cpu"):
    """The stages' autocast: bf16 on a GPU; on the CPU bf16 where it runs natively, else fp32 (autocast off)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_is_fast())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


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


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], opt, step: int, rng: np.random.Generator, **extra):
    """The modules' states under their keys, then the optimiser, step and data rng: everything a resumed run continues from."""
    state = {key: m.state_dict() for key, m in modules.items()}
    torch.save({**state, "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state, **extra}, path)


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], opt, rng: np.random.Generator) -> dict | None:
    """Restores what `save_checkpoint` wrote (modules, optimiser, rng) and returns the whole state; None without a checkpoint."""
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False, map_location="cpu")  # a GPU run's checkpoint loads anywhere
    for key, m in modules.items():
        m.load_state_dict(state[key])
    if "opt" in state:  # the DiT stage has always resumed from a checkpoint without optimiser state, fresh then
        opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    return state


def run_loop(
    name: str,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch_loss: Callable[[], torch.Tensor],
    lr_of: Callable[[int], float],
    save: Callable[[int], None],
    log: LossLog,
    step: int,
    total: int,
    max_minutes: float,
    *,
    log_every: int = 50,
    save_every: float = 120.0,
    after_step: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[int, bool]:
    """Optimiser steps from `step` to `total`; returns (the step reached, whether the time limit stopped it).

    `batch_loss` draws a batch (from the stage's rng) and returns its loss; `after_step`
    runs after each optimiser step with the step's index (the DiT's EMA). `save(step)` is
    called every `save_every` seconds and once at the end, also when the time runs out, so
    a stopped run resumes where it stopped. `clock` measures the budget (wall clock; a study
    passes `time.process_time` to budget CPU time on a shared machine).
    """
    start = last_save = clock()
    while step < total:
        lr = lr_of(step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if after_step is not None:
            after_step(step)
        step += 1
        log.add(step, loss.item(), lr, clock() - start)
        if step % log_every == 0:
            print(f"{name} step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} {clock() - start:.0f}s", flush=True)
        if clock() - last_save > save_every:
            save(step)
            last_save = clock()
        if (clock() - start) / 60 > max_minutes:
            save(step)
            return step, True
    save(step)
    return step, False
