"""kinema against PyTorch on the tiny model, side by side in one run, and each graph against this machine's GEMM peak.

    python benchmarks/perf_suite.py [--bundle DIR] [--out benchmarks/results] [--rounds 3] [--prompts 20]
    python benchmarks/perf_suite.py --clock cpu --threads 1 ...   # on a machine other jobs share

Sections can run as separate processes (`--sections "end to end,cold start"`, `--work DIR`
to share the built bundles, each with its own `--out`, then
`--combine A/perf_suite/result.json B/perf_suite/result.json`).

Measures, in this order and in one process (subprocesses where a fresh process is the point):

- GEMM peak: ONNX Runtime MatMul fp32 and MatMulInteger u8 x s8 at 2048^3 (tiny graphs
  built with onnx.helper), GFLOP/s and GOP/s;
- kinema bundles (fp32 as given, int8 = `kinema quantize --recipe int8`, int4 = `--recipe int4`,
  and the same after the transformer-fusion pass `python -m kinema.quantize.fuse`) against
  the same PyTorch model (models/tiny_dit.py, tiny_vae.py, text_encoder.py with the weights
  in models/data, as export/tiny.py loads them) run eagerly in fp32 and under bf16 autocast:
  one denoiser step (guided batch of 2 at the default clip) and end-to-end generate
  (default clip, steps and guidance), interleaved round by round, medians;
- cold start: command start to the first step's callback, in a fresh process;
- peak RSS per stage (text encode, denoise, decode), in a fresh process each, the peak
  reset between stages (/proc/self/clear_refs);
- FLOPs of each graph from the model config (formulas in `dit_flops`, `text_encoder_flops`;
  the decoder's convolutions counted by torch's FlopCounterMode at the same shapes) and the
  fraction of the measured GEMM peak each reaches; an ONNX Runtime profile of the denoiser,
  summarised by op type;
- optimisations: graph optimisation levels, the optimised-graph cache, threads,
  memory arena and pattern, IO binding, guidance batched against sequential;
- step-skipping accelerations: speed-up, video PSNR against the plain output and ShapesBench
  adherence on the first N in-distribution prompts (quantize/compare/run.py's compare_generators).

Writes benchmarks/results/perf_suite/result.json and result.md (under --out, the results
root), with the machine it ran on; while it runs, the results so far in partial.json there.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

NAME = "perf_suite"
PROMPT = "a red ball bouncing on a white background"
GEMM_N = 2048
GEMM_KINDS = ("MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "Conv", "Attention")


def med(xs) -> float:
    return float(np.median(xs))


# Wall-clock seconds by default. `--clock cpu` times the process's CPU seconds instead: on a
# machine shared with other jobs, a single-threaded engine's CPU time is the work it did,
# not the time slices it waited for (use it with --threads 1: with more threads it sums them).
CLOCK = {"now": time.perf_counter, "name": "wall"}


def timed(fn, n: int, warm: int = 2) -> list[float]:
    """common.timed on the suite's clock."""
    return common.timed(fn, n, warm, clock=CLOCK["now"])


def interleaved(fns: dict, rounds: int, per_round: int, warm: int) -> dict[str, list[float]]:
    """common.interleaved on the suite's clock: round by round in turn (so a slow spell of the machine hits all alike)."""
    return common.interleaved(fns, rounds, per_round, warm, clock=CLOCK["now"])


def log(msg: str, res: dict | None = None, out: Path | None = None) -> None:
    """Progress on stderr; with `res` and `out`, also the results so far (a killed run keeps them)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    if res is not None and out is not None:
        common.write_json(common.result_dir(NAME, out) / "partial.json", res)


class section:
    """`with section(name, res, out):` logs, checkpoints the results, and records a failure instead of ending the run."""

    def __init__(self, name: str, res: dict, out: Path):
        self.name, self.res, self.out = name, res, out

    def __enter__(self):
        log(self.name, self.res, self.out)

    def __exit__(self, kind, err, tb):
        if err is not None and not isinstance(err, KeyboardInterrupt):
            import traceback

            self.res.setdefault("errors", {})[self.name] = "".join(traceback.format_exception(kind, err, tb))[-2000:]
            log(f"{self.name} failed: {kind.__name__}: {err}")
            return True
        return False


# ------------------------------------------------------------------ GEMM peak


def gemm_runs(work: Path, threads: int) -> dict:
    """{"fp32", "int8_u8s8"}: a callable running ORT MatMul / MatMulInteger (u8 x s8) at 2048^3 once (tiny ONNX graphs)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = GEMM_N
    rng = np.random.default_rng(0)
    out = {}
    specs = {
        "fp32": (TensorProto.FLOAT, rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32), "MatMul", TensorProto.FLOAT),
        "int8_u8s8": (TensorProto.UINT8, rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8), "MatMulInteger", TensorProto.INT32),
    }
    for name, (a_t, a, b, op, y_t) in specs.items():
        g = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])],
            name,
            [helper.make_tensor_value_info("A", a_t, [n, n])],
            [helper.make_tensor_value_info("Y", y_t, [n, n])],
            [numpy_helper.from_array(b, "B")],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        path = work / f"gemm_{name}.onnx"
        onnx.save(m, path)
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.add_session_config_entry("session.force_spinning_stop", "1")  # as the runtime's sessions: no spinning into the next session's run
        s = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
        out[name] = (op, lambda s=s, a=a: s.run(None, {"A": a}))
    return out


def gemm_peak(gemm: dict, reps: int = 7) -> dict:
    """Best-of-`reps` of each of gemm_runs' GEMMs."""
    out = {}
    for name, (op, run) in gemm.items():
        times = timed(run, reps, warm=2)
        out[name] = {"op": op, "n": GEMM_N, "seconds_best": min(times), "seconds_median": med(times), "gflops": 2 * GEMM_N**3 / min(times) / 1e9}
    return out


def beside_peak(fn, gemm: dict, rounds: int, warm: int = 1) -> tuple[float, dict[str, float]]:
    """(median seconds of `fn`, {precision: FLOP/s}) with the GEMM peaks timed in the same interleaved rounds.

    A fraction of peak divides a graph's rate by the machine's rate at that moment: on a
    shared machine the rate drifts (whole spells 1.5x slower were seen), so a peak from the
    start of the suite would count a slow spell against the graph.
    """
    fns = {"graph": fn, **{k: run for k, (_, run) in gemm.items()}}
    t = interleaved(fns, rounds, 1, warm)
    return med(t["graph"]), {k: 2 * GEMM_N**3 / min(t[k]) for k in gemm}


# ------------------------------------------------------------------ FLOPs from the config


def dit_flops(cfg, frames: int, height: int, width: int, batch: int, text_len: int) -> dict:
    """FLOPs (2 x multiply-adds) of one TinyDiT forward at a clip size.

    Tokens N = T' (H/8/ph) (W/8/pw) with T' = (frames-1)/4 + 1; D width, F = mlp_ratio D,
    L text tokens of width Dt, C latent channels, P = pt ph pw. Per block and sample:
    self-attention qkv 3ND^2 + proj ND^2, cross q ND^2 + kv 2LDtD + proj ND^2, MLP 2NDF,
    attention products 2N^2D (self) + 2NLD (cross), adaLN 6D^2; plus the patch embedding
    N(2C+1)PD, the output layer NDPC + 2D^2, the timestep MLP 256D + D^2 and the text pool DtD.
    `gemm` counts the products with a weight (what int8 quantizes); `total` adds attention.
    """
    t = (frames - 1) // 4 + 1
    pt, ph, pw = cfg.patch
    n = (t // pt) * (height // 8 // ph) * (width // 8 // pw)
    d, f, dt, c, p, L = cfg.width, int(cfg.width * cfg.mlp_ratio), cfg.text_dim, cfg.latent_channels, pt * ph * pw, text_len
    weights = cfg.depth * (n * (3 * d * d + d * d + d * d + d * d + 2 * d * f) + 2 * L * dt * d + 6 * d * d)
    weights += n * (2 * c + 1) * p * d + n * d * p * c + 2 * d * d + 256 * d + d * d + dt * d
    attn = cfg.depth * (2 * n * n * d + 2 * n * L * d)
    return {"tokens": n, "batch": batch, "gemm": 2 * batch * weights, "total": 2 * batch * (weights + attn)}


def text_encoder_flops(batch: int, L: int, layers: int = 6, h: int = 384, ff: int = 1536) -> dict:
    """MiniLM-L6 (BERT): per layer 4LH^2 (q, k, v, out) + 2LHF (FFN) weight products and 2L^2H attention products."""
    weights = layers * (4 * L * h * h + 2 * L * h * ff)
    return {"gemm": 2 * batch * weights, "total": 2 * batch * (weights + layers * 2 * L * L * h)}


def decoder_flops(frames: int, height: int, width: int) -> dict:
    """The streaming decoder's FLOPs (prefix + one step per further latent frame), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from kinema.models.tiny_vae import TinyVAE, VAEConfig

    vae = TinyVAE(VAEConfig()).eval()
    t = (frames - 1) // 4 + 1
    z = torch.zeros(1, 8, t, height // 8, width // 8)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        _, caches = vae.decode_chunk(z[:, :, :1])
        for i in range(1, t):
            _, caches = vae.decode_chunk(z[:, :, i : i + 1], caches)
    total = int(fc.get_total_flops())
    return {"gemm": total, "total": total}


# ------------------------------------------------------------------ kinema and torch runners


def make_bundles(src: Path, work: Path, *, as_written: bool = False) -> dict[str, Path]:
    """The suite's bundles from the fp32 `src`; `as_written`: also int8 of the same weights
    exported without the export forms (export/tiny_forms.py), to measure what they gain."""
    from kinema.quantize.fuse import fuse_bundle
    from kinema.quantize.quantize_bundle import quantize_bundle

    from kinema.runtime.bundle.load import load_bundle

    def made(path: Path, source: Path, make) -> Path:
        """A bundle built from `source` earlier in `work` (--work), else a new one."""
        digest = load_bundle(source).digest
        try:
            m = load_bundle(path).manifest
            if digest in (m.get("quantization", {}).get("source_bundle_sha256"), m.get("optimization", {}).get("source_bundle_sha256")):
                return path
        except Exception:  # noqa: BLE001 - absent or unusable: build it
            pass
        log(f"build {path.name}")
        return make(path)

    out = {"fp32": src}
    for recipe in ("int8", "int4"):
        out[recipe] = made(work / recipe, src, lambda p, r=recipe: quantize_bundle(src, p, r, overwrite=True))
    out["fp32-fused"] = made(work / "fused", src, lambda p: fuse_bundle(src, p, overwrite=True))
    out["int8-fused"] = made(work / "fused-int8", out["fp32-fused"], lambda p: quantize_bundle(out["fp32-fused"], p, "int8", overwrite=True))
    if as_written:
        from kinema.export.tiny import export_tiny

        written = work / "fp32-as-written"
        if not (written / "manifest.json").is_file():
            log("build fp32-as-written")
            export_tiny(written, overwrite=True, forms=False)
        out["int8-as-written"] = made(work / "int8-as-written", written, lambda p: quantize_bundle(written, p, "int8", overwrite=True))
    return out


class TorchTiny:
    """The same tiny model in PyTorch eager, loaded as export/tiny.py does."""

    def __init__(self, threads: int):
        import torch

        from kinema.export.tiny import load_tiny

        torch.set_num_threads(threads)
        self.torch = torch
        self.dit, self.vae, self.te = load_tiny()

    def step_fn(self, dtype, st, text_len: int):
        torch = self.torch
        t = (st.frames - 1) // 4 + 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, t, st.height // 8, st.width // 8, generator=g)
        emb = torch.randn(2, text_len, 384, generator=g)
        mask = torch.ones(2, text_len, dtype=torch.int64)
        zeros, cm = torch.zeros_like(x), torch.zeros(2, 1, t, 1, 1)
        ts = torch.full((2,), 0.5)

        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                return self.dit(x, ts, emb, mask, zeros, cm)

        return step

    def generate(self, dtype, st, prompt: str = PROMPT, seed: int = 0):
        from kinema.models.tiny_reference import generate_reference

        return generate_reference(self.dit, self.vae, self.te, prompt, frames=st.frames, height=st.height, width=st.width, steps=st.steps, guidance=st.guidance, shift=st.shift, seed=seed, dtype=dtype)


def denoiser_feeds(pipe, st) -> dict[str, np.ndarray]:
    text = pipe.encode_text([st.prompt, st.negative_prompt])
    x = pipe.initial_noise(st)
    b = 2
    return {
        "latents": np.concatenate([x, x]),
        "timestep": np.full((b,), 0.5, np.float32),
        "text_embeds": text[0],
        "text_mask": text[1],
        "cond_latents": np.zeros((b, *x.shape[1:]), np.float32),
        "cond_mask": np.zeros((b, 1, x.shape[2], 1, 1), np.float32),
    }


def open_variant(path: Path, *, level: str = "ORT_ENABLE_ALL", threads: int | None = None, arena: bool = True, mem_pattern: bool = True, profile: str | None = None):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    o.log_severity_level = 3
    if threads is not None:
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
    o.enable_cpu_mem_arena = arena
    o.enable_mem_pattern = mem_pattern
    if profile:
        o.enable_profiling = True
        o.profile_file_prefix = profile
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def io_bound_run(session, feeds):
    """A run() with inputs bound once as OrtValues and the output left in ORT's memory."""
    import onnxruntime as ort

    binding = session.io_binding()
    for k, v in feeds.items():
        binding.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v))
    binding.bind_output(session.get_outputs()[0].name)

    def run():
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    return run


def profile_summary(session, feeds, runs: int = 10) -> dict:
    """ORT profile of `runs` calls, summarised by op type: mean microseconds per run and share of kernel time."""
    for _ in range(3):
        session.run(None, feeds)
    for _ in range(runs):
        session.run(None, feeds)
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    Path(path).unlink(missing_ok=True)
    per_op, count = collections.Counter(), collections.Counter()
    model_runs = [e["dur"] for e in events if e.get("name") == "model_run"]
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    total_runs = len(model_runs)
    kernel = sum(per_op.values())
    ops = {k: {"us_per_run": v / total_runs, "share": v / kernel, "nodes": count[k] // total_runs} for k, v in per_op.most_common()}
    gemm_us = sum(v["us_per_run"] for k, v in ops.items() if k in GEMM_KINDS)
    run_us = med(model_runs[3:])
    return {"model_run_us": run_us, "kernel_us": kernel / total_runs, "gemm_us": gemm_us, "outside_kernels_us": run_us - kernel / total_runs, "ops": ops}


# ------------------------------------------------------------------ subprocess children

_COLD_KINEMA = r"""
import json, sys, time
t_import = time.time()
from kinema.runtime import Cancelled, Pipeline
pipe = Pipeline.from_bundle(sys.argv[1], threads=int(sys.argv[4]))
if sys.argv[2] == "cache":
    from kinema.runtime.engine import cache, sessions
    real = sessions.open_session
    def cached(path, provider="cpu", threads=None):
        name = next(n for n in pipe.bundle.components if pipe.bundle.component_path(n) == path)
        return real(path, provider, threads, graph_sha256=pipe.bundle.components[name]["sha256"], cache_dir=cache.cache_root())
    import kinema.runtime.engine.engine as pl
    pl.open_session = cached
def first(p):
    print(json.dumps({"first_step": time.time(), "import": t_import, "cpu": time.process_time()}))
    raise Cancelled("done")
try:
    pipe.generate(sys.argv[3], callback=first)
except Cancelled:
    pass
"""

_COLD_TORCH = r"""
import json, sys, time
import torch
from kinema.export.tiny import load_tiny
from kinema.models.text_encoder import load_tokenizer
torch.set_num_threads(int(sys.argv[1]))
dit, vae, te = load_tiny()
tok = load_tokenizer()
enc = tok.encode_batch([sys.argv[2], ""])
ids = torch.tensor([e.ids for e in enc]); mask = torch.tensor([e.attention_mask for e in enc])
with torch.no_grad():
    text = te(ids, mask)
    x = torch.randn(2, 8, 5, 8, 8)
    dit(x, torch.full((2,), 1.0), text, mask, torch.zeros_like(x), torch.zeros(2, 1, 5, 1, 1))
print(json.dumps({"first_step": time.time(), "cpu": time.process_time()}))
"""

_RSS_COMMON = r"""
import json, sys, time
""" + common.source_of(common.reset_peak_rss, common.peak_rss_mib) + r"""
reset, hwm = reset_peak_rss, peak_rss_mib
out = {}
"""

_RSS_KINEMA = _RSS_COMMON + r"""
from kinema.runtime import Pipeline
import numpy as np
pipe = Pipeline.from_bundle(sys.argv[1], threads=int(sys.argv[3]))
st = pipe.check_inputs(sys.argv[2])
reset(); text = pipe.encode_text([st.prompt, st.negative_prompt]); out["text_encode"] = hwm()
from kinema.runtime.sampling import samplers
reset()
sig = pipe.sigmas(st)
lat = samplers.SAMPLERS[st.sampler](pipe.denoiser(st, text), pipe.initial_noise(st), sig)
out["denoise"] = hwm()
reset(); frames = pipe.decode(lat); out["decode"] = hwm()
print(json.dumps(out))
"""

_RSS_TORCH = _RSS_COMMON + r"""
import torch
from kinema.export.tiny import load_tiny
from kinema.models.text_encoder import load_tokenizer
from diffusers import FlowMatchEulerDiscreteScheduler
torch.set_num_threads(int(sys.argv[1]))
dtype = torch.bfloat16 if sys.argv[3] == "bf16" else None
dit, vae, te = load_tiny()
tok = load_tokenizer()
with torch.no_grad():
    reset()
    enc = tok.encode_batch([sys.argv[2], ""])
    ids = torch.tensor([e.ids for e in enc]); mask = torch.tensor([e.attention_mask for e in enc])
    text = te(ids, mask); out["text_encode"] = hwm()
    reset()
    x = torch.randn(1, 8, 5, 8, 8); sched = FlowMatchEulerDiscreteScheduler(shift=1.0); sched.set_timesteps(20)
    for t in sched.timesteps:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            v = dit(torch.cat([x, x]), (t / 1000).reshape(1).expand(2).float(), text, mask, torch.zeros(2, 8, 5, 8, 8), torch.zeros(2, 1, 5, 1, 1)).float()
        x = sched.step(v[1:] + 5.0 * (v[:1] - v[1:]), t, x).prev_sample
    out["denoise"] = hwm()
    reset(); vae.decode(x); out["decode"] = hwm()
print(json.dumps(out))
"""


def child(code: str, *args: str, env: dict | None = None) -> tuple[dict, float]:
    """Run a child interpreter; (its last JSON line, wall time of its launch as time.time())."""
    launch = time.time()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}): {r.stderr[-3000:]}")
    line = [x for x in r.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line), launch


# ------------------------------------------------------------------ the suite


def run_suite(args) -> dict:
    import onnxruntime as ort
    import torch

    from kinema.models.tiny_dit import DIT_SIZES
    from kinema.runtime import Pipeline
    from kinema.runtime.sampling.accel import Accel
    from kinema.export.tiny import fp32_reference

    threads = args.threads or os.cpu_count() or 1
    wanted = set(args.sections.split(",")) if args.sections else None

    def want(name: str) -> bool:
        return wanted is None or name in wanted
    suite = common.Stopwatch()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kinema-perf-"))
    work.mkdir(parents=True, exist_ok=True)
    src = fp32_reference(args.bundle, work)
    res: dict = {
        "machine": common.machine(threads=threads, onnxruntime=ort.__version__, torch=torch.__version__),
        "bundle": str(src),
        "load_average_at_start": os.getloadavg(),
    }
    log("GEMM peak")
    gemm = gemm_runs(work, threads)  # also timed beside each graph (FLOPs and profiles)
    res["gemm_peak"] = gemm_peak(gemm)

    bundles = make_bundles(src, work, as_written=args.bundle is None)  # the committed weights can be re-exported as written
    pipes = {k: Pipeline.from_bundle(p, threads=threads) for k, p in bundles.items()}
    ref = pipes["fp32"]
    st = ref.check_inputs(PROMPT)
    res["bundle_sha256"] = ref.bundle.digest
    res["settings"] = {k: getattr(st, k) for k in ("frames", "height", "width", "steps", "guidance", "shift", "sampler", "cfg_mode")}
    tt = TorchTiny(threads)
    text_len = ref.bundle.tokenizer["max_length"]

    # ---- denoiser step: kinema (model callable the sampler sees) vs torch
    if want("denoiser steps"):
        with section("denoiser steps", res, args.out):
            step_fns = {}
            for k, p in pipes.items():
                model = p.denoiser(st, p.encode_text([st.prompt, st.negative_prompt]))
                x = p.initial_noise(st)
                step_fns[f"kinema {k}"] = (lambda m=model, x=x: m(x, 0.5))
            step_fns["torch eager fp32"] = tt.step_fn(None, st, text_len)
            step_fns["torch eager bf16"] = tt.step_fn(torch.bfloat16, st, text_len)
            steps = interleaved(step_fns, args.step_rounds, 3, warm=3)
            res["denoiser_step_s"] = {k: med(v) for k, v in steps.items()}

    # ---- end to end: kinema bundles vs torch, interleaved
    if want("end to end"):
        with section("end to end", res, args.out):
            gens = {f"kinema {k}": (lambda p=p: p.run(st)) for k, p in pipes.items()}
            gens["torch eager fp32"] = lambda: tt.generate(None, st)
            gens["torch eager bf16"] = lambda: tt.generate(torch.bfloat16, st)
            for k, fn in gens.items():
                if k.startswith("kinema"):  # torch's modules are warm from the step timing above
                    fn()
            e2e = interleaved(gens, args.rounds, 1, warm=0)
            res["e2e_s"] = {k: med(v) for k, v in e2e.items()}
            res["e2e_runs_s"] = e2e
            base = res["e2e_s"]
            best_int8 = min(("kinema int8", "kinema int8-fused"), key=lambda k: base[k])
            res["must_show_e2e"] = {
                "int8_variant": best_int8,
                "speedup_vs_torch_fp32": base["torch eager fp32"] / base[best_int8],
                "speedup_vs_torch_bf16": base["torch eager bf16"] / base[best_int8],
                "plain_int8_vs_torch_fp32": base["torch eager fp32"] / base["kinema int8"],
                "plain_int8_vs_torch_bf16": base["torch eager bf16"] / base["kinema int8"],
            }
            if "kinema int8-as-written" in base:
                res["must_show_e2e"]["export_forms_speedup_int8"] = base["kinema int8-as-written"] / base["kinema int8"]

    # ---- FLOPs and fraction of peak
    if want("FLOPs and profiles"):
        with section("FLOPs and profiles", res, args.out):
            cfg = DIT_SIZES["tiny"]
            mdit = ref.bundle.manifest.get("model", {}).get("dit", {})
            from dataclasses import replace

            cfg = replace(cfg, **{k: (tuple(v) if k == "patch" else v) for k, v in mdit.items() if k in ("width", "depth", "heads", "patch")})
            fl_dit = dit_flops(cfg, st.frames, st.height, st.width, 2, text_len)
            fl_te = text_encoder_flops(2, text_len)
            fl_dec = decoder_flops(st.frames, st.height, st.width)
            with torch.no_grad():
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as fc:
                    tt.step_fn(None, st, text_len)()
                fl_dit["torch_flop_counter"] = int(fc.get_total_flops())
            graph_times = {}
            feeds_text = None
            for k in ("fp32", "int8", "int4", "fp32-fused", "int8-fused", *(("int8-as-written",) if "int8-as-written" in pipes else ())):
                p = pipes[k]
                enc = p.tokenizer().encode_batch([st.prompt, st.negative_prompt])
                feeds_text = {"input_ids": np.array([e.ids for e in enc], np.int64), "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
                te_s, te_pk = beside_peak(lambda: p.session("text_encoder").run(None, feeds_text), gemm, 5)
                den = p.session("denoiser")
                feeds = denoiser_feeds(p, st)
                den_s, den_pk = beside_peak(lambda: den.run(None, feeds), gemm, 10)
                lat = np.random.default_rng(0).standard_normal(ref.latent_shape(st), dtype=np.float32)
                dec_s, dec_pk = beside_peak(lambda: p.decode(lat), gemm, 3)
                pk = "fp32" if k.startswith("fp32") else "int8_u8s8"
                prec = "fp32" if k.startswith("fp32") else "int8 u8s8"
                graph_times[k] = {
                    "text_encoder": {"seconds": te_s, "gemm_flops": fl_te["gemm"], "peak_flops": te_pk[pk], "fraction_of_peak": fl_te["gemm"] / te_s / te_pk[pk], "peak": prec},
                    "denoiser": {"seconds": den_s, "gemm_flops": fl_dit["gemm"], "total_flops": fl_dit["total"], "peak_flops": den_pk[pk], "fraction_of_peak": fl_dit["gemm"] / den_s / den_pk[pk], "peak": prec},
                    "decoder": {"seconds": dec_s, "flops": fl_dec["total"], "peak_flops": dec_pk["fp32"], "fraction_of_peak": fl_dec["total"] / dec_s / dec_pk["fp32"], "peak": "fp32 (decoder stays fp32)"},
                }
            # the same graphs at the largest clip the bundle allows: more tokens per GEMM
            v = ref.bundle.video
            st_big = ref.check_inputs(PROMPT, frames=v.max_frames, height=v.max_side, width=v.max_side)
            fl_big = dit_flops(cfg, st_big.frames, st_big.height, st_big.width, 2, text_len)
            big = {}
            for k in ("fp32", "fp32-fused", "int8", "int8-fused", *(("int8-as-written",) if "int8-as-written" in pipes else ())):
                den = pipes[k].session("denoiser")
                feeds = denoiser_feeds(pipes[k], st_big)
                sec, now = beside_peak(lambda: den.run(None, feeds), gemm, 3)
                pk = now["fp32"] if k.startswith("fp32") else now["int8_u8s8"]
                big[k] = {"seconds": sec, "tokens": fl_big["tokens"], "gemm_flops": fl_big["gemm"], "peak_flops": pk, "fraction_of_peak": fl_big["gemm"] / sec / pk}
                if not k.startswith("fp32"):
                    # the attention products stay fp32 in every int8 graph: at both peaks, with nothing else
                    # costing time, the graph could not take less than this, nor reach more of the int8 peak
                    attn = fl_big["total"] - fl_big["gemm"]
                    bound = fl_big["gemm"] / pk + attn / now["fp32"]
                    big[k] |= {"attention_flops": attn, "attention_at_fp32_peak_s": attn / now["fp32"], "bound_s": bound, "bound_fraction_of_peak": fl_big["gemm"] / bound / pk}
            res["denoiser_at_largest_clip"] = {"settings": {"frames": st_big.frames, "height": st_big.height, "width": st_big.width}, **big}
            res["flops"] = {"denoiser": fl_dit, "text_encoder": fl_te, "decoder_stream": fl_dec}
            res["graphs"] = graph_times
            res["profiles"] = {}
            for k in ("fp32", "int8-fused"):
                s = open_variant(pipes[k].bundle.component_path("denoiser"), threads=threads, profile=str(work / f"prof_{k}"))
                res["profiles"][k] = profile_summary(s, denoiser_feeds(pipes[k], st))

    # ---- optimisations: session options on the denoiser graph (raw run), fp32 and int8
    if want("session options"):
        with section("session options", res, args.out):
            opt = {}
            for k in ("fp32", "int8"):
                path = pipes[k].bundle.component_path("denoiser")
                feeds = denoiser_feeds(pipes[k], st)
                variants = {
                    "ORT_DISABLE_ALL": open_variant(path, level="ORT_DISABLE_ALL", threads=threads),
                    "ORT_ENABLE_BASIC": open_variant(path, level="ORT_ENABLE_BASIC", threads=threads),
                    "ORT_ENABLE_EXTENDED": open_variant(path, level="ORT_ENABLE_EXTENDED", threads=threads),
                    "ORT_ENABLE_ALL (runtime default)": open_variant(path, threads=threads),
                    "1 thread": open_variant(path, threads=1),
                    f"{os.cpu_count()} threads (all cores)": open_variant(path, threads=os.cpu_count()),
                    "no memory arena": open_variant(path, arena=False, threads=threads),
                    "no memory pattern": open_variant(path, mem_pattern=False, threads=threads),
                }
                fns = {n: (lambda s=s: s.run(None, feeds)) for n, s in variants.items()}
                fns["IO binding"] = io_bound_run(variants["ORT_ENABLE_ALL (runtime default)"], feeds)
                opt[k] = {n: med(v) for n, v in interleaved(fns, args.step_rounds, 3, warm=3).items()}
            res["session_options_denoiser_s"] = opt

    # ---- guidance batched vs sequential (end to end, int8)
    if want("guidance batched vs sequential"):
        with section("guidance batched vs sequential", res, args.out):
            p8 = pipes["int8"]
            cfgm = {m: p8.check_inputs(PROMPT, cfg_mode=m) for m in ("batched", "sequential")}
            cm_times = interleaved({m: (lambda s=s: p8.run(s)) for m, s in cfgm.items()}, args.rounds, 1, warm=0)
            res["cfg_mode_e2e_s"] = {m: med(v) for m, v in cm_times.items()}

    # ---- cold start: command start to first step, fresh processes
    if want("cold start"):
        with section("cold start", res, args.out):
            cold = {}
            env = dict(os.environ)
            with tempfile.TemporaryDirectory() as cache_dir:
                env["KINEMA_CACHE_DIR"] = cache_dir
                for k in ("fp32", "int8"):
                    for mode in ("nocache", "cache (first run, fills it)", "cache (warm)"):
                        vals = []
                        for _ in range(1 if mode.startswith("cache (first") else args.cold_runs):
                            out, launch = child(_COLD_KINEMA, str(bundles[k]), "cache" if mode.startswith("cache") else "nocache", PROMPT, str(threads), env=env)
                            vals.append(out["cpu"] if CLOCK["name"] == "cpu" else out["first_step"] - launch)
                        cold[f"kinema {k} {mode}"] = med(vals)
            vals = []
            for _ in range(args.cold_runs):
                out, launch = child(_COLD_TORCH, str(threads), PROMPT)
                vals.append(out["cpu"] if CLOCK["name"] == "cpu" else out["first_step"] - launch)
            cold["torch eager fp32"] = med(vals)
            res["cold_start_s"] = cold

    # ---- peak RSS per stage
    if want("peak RSS"):
        with section("peak RSS", res, args.out):
            rss = {}
            for k in ("fp32", "int8", "int4"):
                rss[f"kinema {k}"], _ = child(_RSS_KINEMA, str(bundles[k]), PROMPT, str(threads))
            for prec in ("fp32", "bf16"):
                rss[f"torch eager {prec}"], _ = child(_RSS_TORCH, str(threads), PROMPT, prec)
            res["peak_rss_mib"] = rss

    # ---- accelerations
    if want("accelerations"):
        with section("accelerations", res, args.out):
            from kinema.models import shapes_bench as sb
            from kinema.quantize.compare import compare_generators

            rows = sb.load_prompts(Path(sb.__file__).resolve().parent / "data" / "shapes_prompts.jsonl")[: args.prompts]
            accels = {
                "teacache 0.1": Accel(teacache=0.1),
                "teacache 0.2": Accel(teacache=0.2),
                "cfg cache 3": Accel(cfg_cache=3),
                "leap 0.99": Accel(leap=0.99),
                "teacache 0.1 + cfg cache 3": Accel(teacache=0.1, cfg_cache=3),
            }
            ap = pipes[args.accel_bundle]
            spent = collections.Counter()  # seconds per video on the suite's clock

            def gen(name, accel):
                def run(prompt, seed):
                    t = CLOCK["now"]()
                    frames = ap.generate(prompt, seed=seed, accel=accel).frames
                    spent[name] += (CLOCK["now"]() - t) / len(rows)
                    return frames

                return run

            cmp = compare_generators(gen("plain", None), {n: gen(n, a) for n, a in accels.items()}, [r["prompt"] for r in rows], rows=rows, seeds=(0,))
            res["accelerations"] = {
                "bundle": args.accel_bundle,
                "prompts": len(rows),
                "reference": {**cmp["reference"], "seconds_per_video": spent["plain"]},
                "candidates": {n: {**c, "seconds_per_video": spent[n], "speedup": spent["plain"] / spent[n], "settings": accels[n].metadata()} for n, c in cmp["candidates"].items()},
            }
    res["suite_seconds"] = suite.elapsed()
    res["load_average_at_end"] = os.getloadavg()
    return res


# ------------------------------------------------------------------ report


def markdown(res: dict) -> str:
    g = res["gemm_peak"]
    m = res["machine"]
    L = [
        f"Machine: {common.describe_machine(m)}. Bundle {Path(res['bundle']).name} ({res['bundle_sha256'][:12]}), "
        f"default clip {res['settings']['frames']} frames {res['settings']['width']}x{res['settings']['height']}, {res['settings']['steps']} steps, guidance {res['settings']['guidance']:g}. "
        f"Suite run time {res['suite_seconds'] / 60:.1f} min; 1-minute load average {res['load_average_at_start'][0]:.1f} at its start, {res['load_average_at_end'][0]:.1f} at its end "
        "(other jobs shared the cores: absolute times are inflated, ratios come from interleaved rounds).",
        "",
        f"Times are {'CPU seconds of the single-threaded process (--clock cpu)' if res.get('clock') == 'cpu' else 'wall-clock seconds'}; medians.",
        "",
        f"GEMM peak ({GEMM_N}^3, ONNX Runtime): MatMul fp32 {g['fp32']['gflops']:.0f} GFLOP/s, MatMulInteger u8xs8 {g['int8_u8s8']['gflops']:.0f} GOP/s.",
        "",
        "| engine | denoiser step (guided batch of 2) | end to end | vs torch fp32 | vs torch bf16 |",
        "|---|---:|---:|---:|---:|",
    ]
    def _part1():
        nonlocal L
        e, s = res["e2e_s"], res["denoiser_step_s"]
        for k in e:
            L.append(f"| {k} | {s[k] * 1e3:.1f} ms | {e[k]:.2f} s | {e['torch eager fp32'] / e[k]:.2f}x | {e['torch eager bf16'] / e[k]:.2f}x |")
        ms = res["must_show_e2e"]
        L += ["", f"int8 end to end ({ms['int8_variant']}): {ms['speedup_vs_torch_fp32']:.2f}x faster than PyTorch eager fp32, {ms['speedup_vs_torch_bf16']:.2f}x faster than PyTorch bf16 autocast (plain int8: {ms['plain_int8_vs_torch_fp32']:.2f}x, {ms['plain_int8_vs_torch_bf16']:.2f}x)."]
        if "export_forms_speedup_int8" in ms:
            L.append(f"The export forms (export/tiny_forms.py): int8 end to end {ms['export_forms_speedup_int8']:.2f}x faster than the same weights exported as written (kinema int8-as-written).")
        L.append("")

    def _part2():
        nonlocal L
        fd = res["flops"]["denoiser"]
        L += [
            f"FLOPs per call at the default clip (guided batch of 2, {fd['tokens']} tokens per sample): denoiser {fd['gemm'] / 1e9:.3f} GFLOP in weight products, {fd['total'] / 1e9:.3f} with attention "
            f"(torch FlopCounterMode: {fd['torch_flop_counter'] / 1e9:.3f}); text encoder {res['flops']['text_encoder']['gemm'] / 1e9:.3f}; streaming decoder {res['flops']['decoder_stream']['total'] / 1e9:.3f} (whole clip).",
            "",
            "Each graph is timed in interleaved rounds with the 2048^3 GEMMs, and its fraction is of the peak measured in those rounds.",
            "",
            "| bundle | graph | time | GFLOP/s | peak alongside | fraction of GEMM peak (precision) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for k, gs in res["graphs"].items():
            for name, v in gs.items():
                fl = v.get("gemm_flops", v.get("flops"))
                alongside = f"{v['peak_flops'] / 1e9:.0f}" if "peak_flops" in v else "-"
                L.append(f"| {k} | {name} | {v['seconds'] * 1e3:.1f} ms | {fl / v['seconds'] / 1e9:.1f} | {alongside} | {100 * v['fraction_of_peak']:.1f}% ({v['peak']}) |")

    def _part3():
        nonlocal L
        big = res["denoiser_at_largest_clip"]
        bs = big["settings"]
        L += ["", f"Denoiser at the largest clip ({bs['frames']} frames {bs['width']}x{bs['height']}, {big['fp32']['tokens']} tokens per sample, guided batch of 2): "
              + ", ".join(f"{k} {v['seconds'] * 1e3:.0f} ms = {100 * v['fraction_of_peak']:.0f}% of peak" for k, v in big.items() if k != "settings") + "."]
        b8 = big.get("int8")
        if b8 and "bound_s" in b8:
            L += ["", f"Its fp32 attention products ({b8['attention_flops'] / 1e9:.2f} GFLOP) take {b8['attention_at_fp32_peak_s'] * 1e3:.0f} ms "
                  f"even at the fp32 peak measured alongside: with every GEMM at the int8 peak too, the int8 graph could take no less than "
                  f"{b8['bound_s'] * 1e3:.0f} ms, which is {100 * b8['bound_fraction_of_peak']:.0f}% of the int8 peak (see attention_int8/)."]

    def _part4():
        nonlocal L
        for k, prof in res["profiles"].items():
            L += ["", f"ORT profile of the {k} denoiser, one call: {prof['model_run_us'] / 1e3:.1f} ms, of which kernels {prof['kernel_us'] / 1e3:.1f} ms, GEMM-type kernels {prof['gemm_us'] / 1e3:.1f} ms; top op types:", "", "| op type | nodes | ms per call | share of kernel time |", "|---|---:|---:|---:|"]
            for op, v in list(prof["ops"].items())[:12]:
                L.append(f"| {op} | {v['nodes']} | {v['us_per_run'] / 1e3:.2f} | {100 * v['share']:.1f}% |")

    def _part5():
        nonlocal L
        L += ["", "Session options, denoiser graph alone (one guided call, median):", "", "| setting | fp32 | int8 |", "|---|---:|---:|"]
        so = res["session_options_denoiser_s"]
        for n in so["fp32"]:
            L.append(f"| {n} | {so['fp32'][n] * 1e3:.1f} ms | {so['int8'][n] * 1e3:.1f} ms |")

    def _part6():
        nonlocal L
        cm = res["cfg_mode_e2e_s"]
        L += ["", f"Guidance, int8 end to end: batched {cm['batched']:.2f} s, sequential {cm['sequential']:.2f} s.", "", "Cold start (command start to the first step's callback, fresh process):", "", "| run | seconds |", "|---|---:|"]
        for k, v in res["cold_start_s"].items():
            L.append(f"| {k} | {v:.2f} |")

    def _part7():
        nonlocal L
        L += ["", "Peak RSS per stage (VmHWM, reset at each stage's start; includes what earlier stages left resident):", "", "| engine | text encode | denoise | decode |", "|---|---:|---:|---:|"]
        for k, v in res["peak_rss_mib"].items():
            L.append(f"| {k} | {v['text_encode']:.0f} MiB | {v['denoise']:.0f} MiB | {v['decode']:.0f} MiB |")

    def _part8():
        nonlocal L
        a = res["accelerations"]
        r = a["reference"]
        L += [
            "",
            f"Step-skipping accelerations ({a['bundle']} bundle, {a['prompts']} ShapesBench prompts, seed 0; plain: {r['seconds_per_video']:.2f} s per video, adherence {r['adherence']:.3f}):",
            "",
            "| acceleration | speed-up | video PSNR vs plain | SSIM | adherence (plain {:.3f}) |".format(r["adherence"]),
            "|---|---:|---:|---:|---:|",
        ]
        for n, c in a["candidates"].items():
            psnr = "identical" if c["psnr_db"] is None else f"{c['psnr_db']:.1f} dB"
            L.append(f"| {n} | {c['speedup']:.2f}x | {psnr} | {c['ssim']:.3f} | {c['adherence']:.3f} ({c['adherence'] - r['adherence']:+.3f}) |")

    for part in (_part1, _part2, _part3, _part4, _part5, _part6, _part7, _part8):
        try:
            part()
        except (KeyError, TypeError) as e:  # a section that failed or was not run
            L += ["", f"(missing: {e!r}; see the JSON's errors)"]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="fp32 bundle (default: the built-in one)")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help="results root: writes OUT/perf_suite/result.{json,md} (default: benchmarks/results)")
    ap.add_argument("--rounds", type=int, default=3, help="end-to-end rounds (median)")
    ap.add_argument("--step-rounds", type=int, default=5, help="denoiser-step rounds of 3 calls (median)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=20, help="ShapesBench prompts for the accelerations")
    ap.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    ap.add_argument("--sections", default=None, help="comma-separated section names to run (default: all)")
    ap.add_argument("--work", default=None, help="folder for the built bundles; bundles already there (from this source) are reused")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: time CPU seconds of this process (a machine shared with other jobs; needs --threads 1)")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON", help="only combine the result.json files of runs of different --sections into one report in --out")
    ap.add_argument("--accel-bundle", default="fp32", choices=["fp32", "int8", "int4", "fp32-fused", "int8-fused"])
    args = ap.parse_args(argv)
    if args.combine:  # results of runs of different sections (e.g. in parallel) into one report
        parts = [json.loads(Path(f).read_text()) for f in args.combine]
        if len({p.get("bundle_sha256") for p in parts}) != 1:
            ap.error("--combine: the results come from different bundles")
        res = {}
        for part in parts:
            res = {**res, **part, "errors": {**res.get("errors", {}), **part.get("errors", {})}}
        res["suite_seconds"] = max(p["suite_seconds"] for p in parts)  # they ran side by side
        res["load_average_at_start"] = max((p["load_average_at_start"] for p in parts), key=lambda v: v[0])
        res["load_average_at_end"] = max((p["load_average_at_end"] for p in parts), key=lambda v: v[0])
        write_results(res, args.out)
        return
    if args.clock == "cpu":
        if args.threads != 1:
            ap.error("--clock cpu needs --threads 1 (CPU time sums the threads)")
        CLOCK.update(now=time.process_time, name="cpu")
    res = run_suite(args)
    res["clock"] = CLOCK["name"]
    write_results(res, args.out)


def write_results(res: dict, out: Path) -> None:
    md = markdown(res)
    folder = common.write_result(NAME, res, md, out)
    (folder / "partial.json").unlink(missing_ok=True)
    print(md)


if __name__ == "__main__":
    main()
