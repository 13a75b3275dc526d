"""Train one stage of the tiny family within a time budget on a GPU (the CPU works too), resumable from its own output.

    python -m kinema.models.train_gpu dit --out OUT [--resume PREV] --minutes 8.5
    python -m kinema.models.train_gpu join PREV      # its weights into models/data/

A call starts from the shards a previous call wrote (`--resume`), else from the committed
weights (the DiT and the decoder; the VAE from scratch), trains until the budget (setup
included) or the schedule ends, and leaves in `--out` only files of at most `--shard-mib`:
`ckpt.json` (+ `ckpt-NN.safetensors`), the checkpoint; `weights.json` + `weights-NN.safetensors`,
the weights `models/weights` reads once joined; `loss_<stage>.csv` (earlier calls' rows too)
and `train.log`. A full checkpoint (model, EMA, optimiser, rngs) resumes exactly; where it
would not fit the output budget (`--out-files`, `--out-mib`) the checkpoint keeps the state
only and the next call resumes from the weights, its learning rate ramping up again.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from kinema.models.shards import MIB, ShardError, join_shards, load_shards, read_index, save_shards
from kinema.models.train_checkpoint import checkpoint_parts, restore_checkpoint
from kinema.models.train_data import build_dataset
from kinema.models.train_dit import DiTTrainConfig, _batch_loss, ema_updater, new_run, warm_start
from kinema.models.train_loop import LossLog, default_device, lr_at, run_loop
from kinema.models.train_vae import VAETrainConfig, decoder_loss, fit_latent_stats, new_decoder_run, vae_loss
from kinema.models.weights import DIT_WEIGHTS, VAE_WEIGHTS, load_state, weights_state

DESTINATIONS = {"dit": DIT_WEIGHTS, "vae": VAE_WEIGHTS, "decoder": VAE_WEIGHTS}


@dataclass
class Stage:
    """One stage, built and (where resumed) restored: what the loop and the saves need."""

    name: str
    modules: dict[str, torch.nn.Module]  # what a full checkpoint holds
    opt: torch.optim.Optimizer
    rng: np.random.Generator
    loss: Callable[[], torch.Tensor]
    config: object  # the stage's frozen train config
    step: int
    total: int
    offset: int = 0  # where this schedule began (a warm start's fresh schedule)
    rewarm: int = -1  # the step from which the optimiser ran fresh (-1: it never lost its state)
    after_step: Callable[[int], None] | None = None
    weights: Callable[[int], tuple[torch.nn.Module, dict] | None] = lambda step: None  # (module, metadata) to publish
    finish: Callable[[int], None] | None = None  # once the schedule is done
    extra: dict = field(default_factory=dict)  # more JSON state for the checkpoint

    def lr(self, step: int) -> float:
        cfg = self.config
        lr = lr_at(step - self.offset, self.total - self.offset, cfg.lr, cfg.warmup)
        if self.rewarm >= 0:  # fresh Adam moments: ramp up again to where the schedule is
            lr *= min(1.0, (step - self.rewarm + 1) / cfg.warmup)
        return lr


def _resumed(stage: Stage, resume, weights_into: list[torch.nn.Module]) -> Stage:
    """`stage` continued from `resume` = (state, checkpoint tensors or None, weights tensors or None)."""
    state, tensors, weights = resume
    if tensors is not None:
        restore_checkpoint(tensors, state, stage.modules, stage.opt, stage.rng)
    else:
        for m in weights_into:
            load_state(m, weights, "the resumed weights")
        stage.rng.bit_generator.state = state["rng"]
        stage.rewarm = state["step"]
    stage.step, stage.total, stage.offset = state["step"], state["total"], state["offset"]
    if tensors is not None:
        stage.rewarm = state["rewarm"]
    stage.extra.update(state.get("extra", {}))
    print(f"{stage.name}: resumed at step {stage.step} of {stage.total} ({'full checkpoint' if tensors is not None else 'from the weights'})")
    return stage


def _config(cls, args, resume, **fresh):
    if resume is not None:
        return cls(**resume[0]["config"])  # a resumed run keeps its own recipe
    return cls(**{k: v for k, v in fresh.items() if v is not None})


def dit_stage(args, device, resume) -> Stage:
    cfg = _config(DiTTrainConfig, args, resume, steps=args.steps, batch=args.batch, size=args.size, clips=args.clips, captions=args.captions, lr=args.lr)
    data = build_dataset(args.work, cfg, device)
    dit, ema, opt, rng = new_run(cfg, device)
    stage = Stage("dit", {"model": dit, "ema": ema}, opt, rng, lambda: _batch_loss(dit, data, rng, cfg, device), cfg, 0, cfg.steps,
                  after_step=ema_updater(dit, ema, cfg))
    stage.weights = lambda step: (ema, {"config": asdict(ema.cfg), "train": asdict(stage.config), "steps": step})
    dit.train()
    if resume is not None:
        return _resumed(stage, resume, [dit, ema])
    if not args.scratch:
        stage.config, stage.step, stage.offset = warm_start(cfg, dit, ema)
        stage.total = stage.config.steps
    return stage


def vae_stage(args, device, resume) -> Stage:
    from kinema.models.tiny_vae import TinyVAE, VAEConfig

    cfg = _config(VAETrainConfig, args, resume, steps=args.steps, batch=args.batch, lr=args.lr)
    torch.manual_seed(cfg.seed)
    vae = TinyVAE(VAEConfig()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    stage = Stage("vae", {"model": vae}, opt, rng, lambda: vae_loss(vae, rng, cfg, device), cfg, 0, cfg.steps, extra={"fitted": False})

    def finish(step):
        if not stage.extra["fitted"]:  # refitting would move the latent space
            vae.eval()
            fit_latent_stats(vae, rng)
            stage.extra["fitted"] = True

    stage.finish = finish
    stage.weights = lambda step: (vae, {"config": asdict(vae.cfg), "train": asdict(stage.config), "steps": step}) if stage.extra["fitted"] else None
    vae.train()
    if resume is not None and resume[1] is None:
        raise ShardError(f"{args.resume}: a vae stage resumes from a full checkpoint only")
    return _resumed(stage, resume, []) if resume is not None else stage


def decoder_stage(args, device, resume) -> Stage:
    cfg = _config(VAETrainConfig, args, resume, steps=args.steps or 1000, batch=args.batch, lr=args.lr or 3e-4,
                  edge_weight=args.edge_weight, temporal_weight=args.temporal_weight)
    vae, opt, rng, before = new_decoder_run(cfg, device)
    before = resume[0]["extra"]["before"] if resume is not None else before
    stage = Stage("decoder", {"model": vae}, opt, rng, lambda: decoder_loss(vae, rng, cfg, device), cfg, 0, cfg.steps, extra={"before": before})
    stage.weights = lambda step: (vae, {"config": asdict(vae.cfg), "train": asdict(stage.config), "decoder_tune_steps": before + step})
    vae.train()
    return _resumed(stage, resume, [vae]) if resume is not None else stage


STAGES = {"dit": dit_stage, "vae": vae_stage, "decoder": decoder_stage}


def read_resume(folder: Path | None, stage: str):
    """(state, checkpoint tensors or None, weights tensors or None) from a previous call's `--out`; None without one."""
    if folder is None:
        return None
    state = read_index(folder, "ckpt")["state"]
    if state.get("stage") != stage:
        raise ShardError(f"{folder}/ckpt.json: a checkpoint of the {state.get('stage')!r} stage, not {stage!r}")
    if state.get("mode") == "full":
        tensors, state, _ = load_shards(folder, "ckpt")
        return state, tensors, None
    return state, None, load_shards(folder, "weights")[0]


def choose_mode(full_bytes: int, weights_bytes: int, shard_bytes: int, out_files: int, out_bytes: int) -> str:
    """'full' when a full checkpoint, the weights and the 4 small files fit the output budget; else 'weights'."""

    def shards(n):
        return math.ceil(n / (0.9 * shard_bytes)) if n else 0

    fits = shards(full_bytes) + shards(weights_bytes) + 4 <= out_files and full_bytes + weights_bytes + MIB <= out_bytes
    return "full" if fits else "weights"


def _sizes(stage: Stage) -> tuple[int, int]:
    """Bytes of a full checkpoint (modules, plus two Adam moments per trainable value) and of the fp16 weights."""
    modules = sum(v.numel() * v.element_size() for m in stage.modules.values() for v in m.state_dict().values())
    moments = sum(8 * p.numel() for g in stage.opt.param_groups for p in g["params"])
    module = next(iter(stage.modules.values())) if stage.name != "dit" else stage.modules["ema"]
    return modules + moments, sum(v.numel() * v.element_size() for v in weights_state(module).values())


def save_call(out: Path, stage: Stage, step: int, mode: str, shard_bytes: int):
    """The checkpoint and the published weights of `stage` at `step`, as shards in `out`."""
    state = {"stage": stage.name, "mode": mode, "total": stage.total, "offset": stage.offset, "rewarm": stage.rewarm,
             "config": asdict(stage.config), "extra": stage.extra}
    published = stage.weights(step)
    if published is not None:
        module, meta = published
        save_shards(weights_state(module), out, "weights", {"stage": stage.name, "steps": step}, shard_bytes, file_meta=meta)
    if mode == "full":
        tensors, state = checkpoint_parts(stage.modules, stage.opt, step, stage.rng, **state)
    else:
        tensors, state = {}, {**state, "step": step, "rng": stage.rng.bit_generator.state}
    save_shards(tensors, out, "ckpt", state, shard_bytes)


class _Tee:
    """Print to the terminal and to the call's log."""

    def __init__(self, stream, path: Path):
        self.stream, self.f = stream, path.open("a")

    def write(self, s):
        self.stream.write(s)
        self.f.write(s)

    def flush(self):
        self.stream.flush()
        self.f.flush()

    def isatty(self):
        return False  # no colour codes in the log

    def __getattr__(self, name):  # encoding, fileno and the rest: the terminal's
        return getattr(self.stream, name)


def train(args) -> int:
    """One call: build, resume, train until the budget ends, save; the step reached."""
    start = time.time()
    device = torch.device(args.device or default_device())
    shard_bytes = int(args.shard_mib * MIB)
    print(f"{args.stage}: on {device}, {args.minutes} min budget, shards of at most {shard_bytes} bytes", flush=True)
    resume = read_resume(args.resume, args.stage)
    stage = STAGES[args.stage](args, device, resume)
    full, weights = _sizes(stage)
    mode = args.checkpoint
    if mode == "auto":
        mode = resume[0]["mode"] if resume is not None else choose_mode(full, weights, shard_bytes, args.out_files, int(args.out_mib * MIB))
    print(f"{stage.name}: {mode} checkpoint (a full one would be {full / MIB:.1f} MiB; the weights are {weights / MIB:.1f} MiB)", flush=True)
    csv = args.out / f"loss_{stage.name}.csv"
    if args.resume is not None and (args.resume / csv.name).exists() and not csv.exists():
        shutil.copyfile(args.resume / csv.name, csv)
    end = stage.total if args.max_steps is None else min(stage.total, stage.step + args.max_steps)
    minutes = (args.minutes * 60 - (time.time() - start)) / 60 - args.reserve_minutes
    step, stopped = run_loop(
        stage.name, stage.opt, [p for g in stage.opt.param_groups for p in g["params"]], stage.loss, stage.lr,
        lambda s: save_call(args.out, stage, s, mode, shard_bytes), LossLog(csv), stage.step, end, minutes,
        log_every=args.log_every, save_every=args.save_every, after_step=stage.after_step,
    )
    if step >= stage.total and stage.finish is not None:
        stage.finish(step)
        save_call(args.out, stage, step, mode, shard_bytes)
    big = [f"{p.name} ({p.stat().st_size} bytes)" for p in args.out.iterdir() if p.is_file() and p.stat().st_size > shard_bytes]
    print(f"{stage.name}: step {step} of {stage.total}{' (time budget reached)' if stopped else ''}; "
          f"{len(list(args.out.iterdir()))} files in {args.out}{', over the limit: ' + ', '.join(big) if big else ''}, {time.time() - start:.0f}s", flush=True)
    return step


def _train_args(sub: argparse.ArgumentParser, stage: str):
    sub.add_argument("--out", type=Path, required=True, help="folder for this call's shards, loss CSV and log")
    sub.add_argument("--resume", type=Path, default=None, help="a previous call's --out to continue from (default: the committed weights)")
    sub.add_argument("--minutes", type=float, default=8.5, help="wall-clock budget of the whole call, setup included")
    sub.add_argument("--reserve-minutes", type=float, default=0.25, help="kept back from the budget for the last save")
    sub.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: a GPU when at hand, else the CPU)")
    sub.add_argument("--steps", type=int, default=None, help="schedule length (a DiT warm start: steps beyond the committed ones)")
    sub.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in this call; the schedule keeps its length")
    sub.add_argument("--batch", type=int, default=None)
    sub.add_argument("--lr", type=float, default=None, help="peak learning rate")
    sub.add_argument("--shard-mib", type=float, default=16.0, help="the largest file written")
    sub.add_argument("--checkpoint", choices=["auto", "full", "weights"], default="auto", help="auto: full where it fits --out-files and --out-mib")
    sub.add_argument("--out-files", type=int, default=8, help="how many files --out may hold (what a GPU machine returns)")
    sub.add_argument("--out-mib", type=float, default=64.0, help="how many MiB --out may hold in all")
    sub.add_argument("--save-every", type=float, default=120.0, help="seconds between saves (and one at the end)")
    sub.add_argument("--log-every", type=int, default=50)
    sub.add_argument("--threads", type=int, default=None)
    if stage == "dit":
        sub.add_argument("--size", default=None, help="DIT_SIZES key (default: the recipe's)")
        sub.add_argument("--clips", type=int, default=None, help="cached clips over all buckets")
        sub.add_argument("--captions", type=int, default=None, help="caption phrasings per cached clip")
        sub.add_argument("--work", type=Path, default=None, help="folder for the latent dataset cache (default: a fresh temporary one)")
        sub.add_argument("--scratch", action="store_true", help="start from random weights, not the committed ones")
    if stage == "decoder":
        sub.add_argument("--edge-weight", type=float, default=None)
        sub.add_argument("--temporal-weight", type=float, default=None)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kinema.models.train_gpu", description=__doc__.splitlines()[0])
    subs = ap.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        _train_args(subs.add_parser(stage, help=f"train the {stage} stage"), stage)
    join = subs.add_parser("join", help="join a call's weight shards into the single file models/weights reads")
    join.add_argument("folder", type=Path)
    join.add_argument("--to", type=Path, default=None, help="default: the stage's file in models/data/")
    args = ap.parse_args(argv)
    try:
        if args.command == "join":
            stage = read_index(args.folder, "weights")["state"].get("stage")
            dest = join_shards(args.folder, "weights", args.to or DESTINATIONS[stage])
            print(f"joined {args.folder}/weights-*.safetensors into {dest}")
            return dest
        args.stage = args.command
        if args.threads:
            torch.set_num_threads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        if getattr(args, "work", 0) is None:
            args.work = Path(tempfile.mkdtemp(prefix="kinema-dit-data-"))
        stdout = sys.stdout
        sys.stdout = _Tee(stdout, args.out / "train.log")
        try:
            return train(args)
        finally:
            sys.stdout.flush()
            sys.stdout = stdout
    except ShardError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
