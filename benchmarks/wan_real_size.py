"""Wan2.1-T2V-1.3B's transformer at full size (random weights): ONNX fp32 / int8 / int4 against diffusers fp32 / bf16.

    python benchmarks/wan_real_size.py [--work runs/wan_real_size] [--out benchmarks/results]
                                       [--frames 9 --height 128 --width 128] [--layers 30] [--steps 3]

One run, one machine. The transformer is built from Wan2.1-T2V-1.3B-Diffusers' config with
seeded random weights (nothing is downloaded), exported by kinema's generic path with
external data (`export_graph`: traced, every dynamic axis checked, values checked against
PyTorch at another shape), then quantized with the `wan` presets of quantize/recipes.py
(int8: dynamic uint8 x int8 MatMuls; int4: weight-only MatMulNBits), each graph through
quantize_bundle.apply_recipe. Every variant then runs in a fresh subprocess (peak RSS is
per process): load, one warm-up call, `--steps` timed calls of one sampling step with
guidance, i.e. the transformer at batch 2 (prompt + negative prompt) on latents for
`--frames` frames at `--height`x`--width` and 512 text tokens (Wan's max_sequence_length).
Also reported per variant: load time, the output's SQNR against the ONNX fp32 graph on the
same inputs. Export and quantization steps report their own peak RSS and wall time.

Heavy: ~5.3 GB of fp32 weights; the export child drops PyTorch's copy once its check outputs
are computed, before ONNX Runtime loads the graph (export_graph's release_module). The script checks MemAvailable first and writes the JSON after every
stage, so an interrupted run keeps what it measured. Large files live under --work and
are deleted at the end unless --keep. `--layers 2` runs the same path on a 2-layer model
(a quick check of the script itself).
`--lora-rank R` first writes a random rank-R LoRA over every linear of every block in Wan's
own key names, then reads, plans and merges it with kinema's export path (export/wan_lora.py);
the export row reports that step's time, and its peak RSS includes it. `--clip FxHxW` then
times one clip's denoising on the int8 graph: the 4 distilled steps without guidance run whole
(lightx2v's timesteps), against `--guided-timed` guided steps timed one by one (50 guided steps
are reported as 50 x their median, not run whole).
Writes benchmarks/results/wan_real_size/result.json and result.md (under --out, the results
root; `--result-name` another subfolder), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import common

NAME = "wan_real_size"

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
WAN21_1_3B = dict(
    patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
    freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)
TEXT_TOKENS = 512
SEED = 0

_COMMON = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
cfg = json.loads(sys.argv[1])
def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def inputs():
    rng = np.random.default_rng(1)
    t, h, w = cfg["latent"]
    x = rng.standard_normal((2, 16, t, h, w), dtype=np.float32)
    text = (rng.standard_normal((2, cfg["tokens"], 4096), dtype=np.float32) * 0.1)
    text[1, 40:] = 0.0  # WanPipeline zero-pads the states past each prompt's length
    return {"latents": x, "timestep": np.full((2,), 0.7, np.float32), "text_embeds": text,
            "text_mask": np.ones((2, cfg["tokens"]), np.int64), "cond_latents": np.zeros_like(x),
            "cond_mask": np.zeros((2, 1, t, 1, 1), np.float32)}
def build_transformer():
    import torch
    from diffusers import WanTransformer3DModel
    torch.manual_seed(cfg["seed"])
    return WanTransformer3DModel(**cfg["model"]).eval()
def make_and_merge_lora(tr, rank):
    # A random rank-`rank` LoRA on every linear of every block, written in Wan's own key names
    # (as lightx2v's distillation LoRAs are), then read, planned and merged by kinema's export path.
    import torch
    from safetensors.torch import save_file
    from kinema.export.lora import LoraSpec
    from kinema.export.wan_lora import merge_wan_loras, plan_wan_loras, wan_to_diffusers
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    tensors = {}
    wan_names = [f"{w}.{x}" for w in ("self_attn", "cross_attn") for x in "qkvo"] + ["ffn.0", "ffn.2"]
    diffusers_name = wan_to_diffusers(len(tr.blocks))
    for i in range(len(tr.blocks)):
        for wan in wan_names:
            out_f, in_f = tr.get_submodule(diffusers_name[f"blocks.{i}.{wan}"]).weight.shape
            key = f"diffusion_model.blocks.{i}.{wan}"
            tensors[key + ".lora_A.weight"] = torch.randn(rank, in_f, generator=g) / in_f**0.5
            tensors[key + ".lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.01
    path = cfg["work"] + "/lora.safetensors"
    save_file(tensors, path)
    n = sum(v.numel() for v in tensors.values())
    del tensors
    t0 = time.perf_counter()
    plans = plan_wan_loras([LoraSpec(Path(path), 1.0, "lora.safetensors")], cfg["model"])
    merge_wan_loras(tr, plans)
    return {"lora_rank": rank, "lora_params": n, "lora_modules": sum(len(p.deltas) for p in plans),
            "lora_read_merge_s": round(time.perf_counter() - t0, 1)}
def report(d):
    ru = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds: wall time alone misleads on a shared machine
    print("RESULT " + json.dumps({**d, "peak_rss_mib": round(rss_mib(), 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1)}), flush=True)
"""

_EXPORT = _COMMON + r"""
import torch
from kinema.export.onnx_graph import export_graph
from kinema.export.signatures import denoiser_spec
from kinema.models.wan import WanDenoiser
torch.set_num_threads(cfg["threads"])
t0 = time.perf_counter()
tr = build_transformer()
lora = {}
if cfg["lora_rank"]:
    lora = make_and_merge_lora(tr, cfg["lora_rank"])
den = WanDenoiser(tr).eval()
params = sum(p.numel() for p in den.parameters())
spec = denoiser_spec(atol=1e-3, rtol=1e-2)
def small(b, t, h, w, l, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    return (x, torch.rand(b, generator=g), torch.randn(b, l, 4096, generator=g) * 0.1, torch.ones(b, l, dtype=torch.int64),
            torch.zeros_like(x), torch.zeros(b, 1, t, 1, 1))
built = time.perf_counter() - t0
built_rss = rss_mib()  # the model built (and any LoRA merged), before tracing
# as `kinema export wan` does: the weights are dropped once PyTorch's check outputs are known
entry = export_graph(den, spec, small(2, 2, 4, 6, 8, 0), small(1, 3, 6, 4, 11, 1), cfg["work"] + "/denoiser.onnx", release_module=True)
report({"stage": "export", "params": params, "build_s": round(built, 1), "peak_rss_before_trace_mib": round(built_rss, 1), **lora, "wall_s": round(time.perf_counter() - t0, 1),
        "max_abs_diff": entry["max_abs_diff"], "onnx_bytes": entry["bytes"] + (entry["external_data"] or {"bytes": 0})["bytes"],
        "external_data": entry["external_data"] is not None, "inputs": entry["inputs"]})
"""

_QUANTIZE = _COMMON + r"""
import onnx
from pathlib import Path
from kinema.quantize.quantize_bundle import ComponentPlan, apply_recipe, resolve_nodes
from kinema.export.wan import TOOLS
from kinema.quantize.recipes import describe, float_nodes, preset
t0 = time.perf_counter()
name = cfg["variant"]
recipe = preset(name, TOOLS["float_groups"]).for_component("denoiser")
src = Path(cfg["work"]) / "denoiser.onnx"
keep = resolve_nodes(onnx.load(str(src), load_external_data=False).graph, float_nodes(recipe), src.name)
dst = Path(cfg["work"]) / name / "denoiser.onnx"
apply_recipe(ComponentPlan(recipe, keep), src, dst, external_data=True)
size = sum(p.stat().st_size for p in dst.parent.iterdir())
report({"stage": "quantize", "variant": name, "recipe": describe(recipe), "float_nodes": len(keep),
        "wall_s": round(time.perf_counter() - t0, 1), "onnx_bytes": size})
"""

_TIME_ORT = _COMMON + r"""
import onnxruntime as ort
from kinema.runtime.engine.sessions import open_session
from pathlib import Path
feeds = inputs()
path = Path(cfg["work"]) / ("denoiser.onnx" if cfg["variant"] == "fp32" else cfg["variant"] + "/denoiser.onnx")
t0 = time.perf_counter()
s = open_session(path, "cpu", cfg["threads"])
load = time.perf_counter() - t0
out = s.run(None, feeds)[0]
times = []
for _ in range(cfg["steps"]):
    t0 = time.perf_counter(); out = s.run(None, feeds)[0]; times.append(time.perf_counter() - t0)
ref_path = Path(cfg["work"]) / "fp32_out.npy"
if cfg["variant"] == "fp32":
    np.save(ref_path, out)
ref = np.load(ref_path) if ref_path.exists() else None
sqnr = None if ref is None or cfg["variant"] == "fp32" else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - out) ** 2)))
report({"stage": "time", "variant": "onnx-" + cfg["variant"], "load_s": round(load, 1), "step_s": times, "sqnr_db_vs_onnx_fp32": sqnr})
"""

_TIME_TORCH = _COMMON + r"""
import torch
torch.set_num_threads(cfg["threads"])
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg["variant"]]
feeds = inputs()
t0 = time.perf_counter()
tr = build_transformer().to(dtype)
for n, p in tr.named_parameters():  # as from_pretrained(torch_dtype=bf16) does: _keep_in_fp32_modules stay fp32
    if any(k in n.split(".") for k in (tr._keep_in_fp32_modules or [])):
        p.data = p.data.float()
load = time.perf_counter() - t0
x = torch.from_numpy(feeds["latents"]).to(dtype)
t = torch.floor(torch.from_numpy(feeds["timestep"]) * 1000)
text = torch.from_numpy(feeds["text_embeds"]).to(dtype)
times = []
with torch.no_grad():
    out = tr(x, t, text, return_dict=False)[0]
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter(); out = tr(x, t, text, return_dict=False)[0]; times.append(time.perf_counter() - t0)
from pathlib import Path
ref_path = Path(cfg["work"]) / "fp32_out.npy"
o = out.float().numpy()
sqnr = None
if ref_path.exists():
    ref = np.load(ref_path).astype(np.float64)
    sqnr = float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - o) ** 2), 1e-30)))
report({"stage": "time", "variant": "torch-" + cfg["variant"], "load_s": round(load, 1), "step_s": times, "sqnr_db_vs_onnx_fp32": sqnr,
        "torch": torch.__version__})
"""

_TIME_CLIP = _COMMON + r"""
# One clip's denoising at cfg["clip_latent"]: the distilled schedule (4 steps, no guidance: one
# batch-1 call per step) run whole, against guided steps (one batch-2 call each) timed one by one.
import onnxruntime as ort
from kinema.runtime.engine.sessions import open_session
t, h, w = cfg["clip_latent"]
rng = np.random.default_rng(2)
path = Path(cfg["work"]) / ("denoiser.onnx" if cfg["variant"] == "fp32" else cfg["variant"] + "/denoiser.onnx")
s = open_session(path, "cpu", cfg["threads"])
from kinema.export.distilled import PRESETS
texts = {b: rng.standard_normal((b, cfg["tokens"], 4096), dtype=np.float32) * 0.1 for b in (1, 2)}  # drawn once, outside the timing
def feeds(x, sigma):
    b = len(x)
    return {"latents": x, "timestep": np.full((b,), sigma, np.float32), "text_embeds": texts[b],
            "text_mask": np.ones((b, cfg["tokens"]), np.int64), "cond_latents": np.zeros_like(x),
            "cond_mask": np.zeros((b, 1, t, 1, 1), np.float32)}
x0 = rng.standard_normal((1, 16, t, h, w), dtype=np.float32)
s.run(None, feeds(x0, 1.0))  # warm-up
d = PRESETS["lightx2v-4step"]  # the runtime's sigmas for it: shift * s / (1 + (shift - 1) * s), s = timestep / 1000
sigmas = [d.shift * (t / 1000) / (1 + (d.shift - 1) * (t / 1000)) for t in d.timesteps] + [0.0]
t0 = time.perf_counter()
x = x0
for a, b in zip(sigmas[:-1], sigmas[1:]):
    v = s.run(None, feeds(x, a))[0]
    x = x + (b - a) * v
distilled = time.perf_counter() - t0
x2 = np.concatenate([x0, x0])
s.run(None, feeds(x2, 1.0))  # warm-up at batch 2
guided = []
for i in range(cfg["guided_timed"]):
    t0 = time.perf_counter()
    v = s.run(None, feeds(x2, 1.0 - 0.02 * i))[0]
    v = v[1:] + 5.0 * (v[:1] - v[1:])
    guided.append(time.perf_counter() - t0)
report({"stage": "clip", "variant": "onnx-" + cfg["variant"], "latent": [t, h, w], "distilled_4_steps_s": round(distilled, 2),
        "guided_step_s": [round(g, 2) for g in guided], "finite": bool(np.isfinite(x).all())})
"""


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run_child(code: str, cfg: dict, timeout: float) -> dict:
    sw = common.Stopwatch()
    p = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {p.returncode}: {tail}", "wall_s": round(sw.elapsed(), 1)}
    return json.loads(lines[-1][len("RESULT "):])


def write(results: dict, out: Path, name: str = NAME) -> str:
    """Write the results so far (JSON and Markdown table); returns the Markdown."""
    rows = ["| variant | s / step (median) | steps timed | load s | CPU s (child) | peak RSS MiB | SQNR vs ONNX fp32 dB |", "|---|---|---|---|---|---|---|"]
    for r in results["timing"]:
        if "error" in r:
            rows.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        steps = r["step_s"]
        med = statistics.median(steps)
        sq = "" if r.get("sqnr_db_vs_onnx_fp32") is None else f"{r['sqnr_db_vs_onnx_fp32']:.1f}"
        rows.append(f"| {r['variant']} | {med:.2f} | {len(steps)} | {r['load_s']} | {r.get('cpu_s', '')} | {r['peak_rss_mib']:.0f} | {sq} |")
    prep = ["", "| stage | wall s | CPU s | peak RSS MiB | notes |", "|---|---|---|---|---|"]
    for r in results["prepare"]:
        lora = f"rank-{r['lora_rank']} LoRA on {r['lora_modules']} linears read and merged in {r['lora_read_merge_s']} s, " if r.get("lora_rank") else ""
        if r.get("peak_rss_before_trace_mib"):
            lora += f"peak RSS {r['peak_rss_before_trace_mib']:.0f} MiB before tracing, "
        note = r.get("error") or (lora + f"{r.get('params', '')} params, onnx {r.get('onnx_bytes', 0) / 2**30:.2f} GiB, max |ONNX - torch| {r.get('max_abs_diff', '')}"
                                  if r.get("stage") == "export" else f"onnx {r.get('onnx_bytes', 0) / 2**30:.2f} GiB, {r.get('float_nodes', '')} nodes kept float")
        rows_name = r.get("variant", r.get("stage", "?"))
        prep.append(f"| {r.get('stage', '?')} {rows_name if r.get('stage') == 'quantize' else ''} | {r.get('wall_s', '')} | {r.get('cpu_s', '')} | {r.get('peak_rss_mib', '')} | {note} |")
    s = results["settings"]
    head = (f"Wan2.1-T2V-1.3B transformer ({s['layers']} layers, random weights), one sampling step with guidance = batch 2, "
            f"{s['frames']} frames at {s['width']}x{s['height']} (latent {s['latent']}), {s['tokens']} text tokens, {s['threads']} threads, "
            f"{common.describe_machine(results['machine'])}, {results['date']}, load average at start {s['load_average_at_start']}")
    md = head + "\n\n" + "\n".join(rows + prep) + "\n"
    for c in results.get("clip", []):
        if "error" in c:
            md += f"\nclip: failed: {c['error']}\n"
            continue
        g = statistics.median(c["guided_step_s"])
        md += (f"\nOne clip's denoising, latent {c['latent']}, {c['variant']}: 4 distilled steps without guidance (4 batch-1 calls, "
               f"run whole) {c['distilled_4_steps_s']} s; one guided step (a batch-2 call) median {g:.2f} s over {len(c['guided_step_s'])}, "
               f"so 50 guided steps {50 * g:.0f} s (50 x the median, not run whole): {50 * g / c['distilled_4_steps_s']:.1f}x the distilled clip; "
               f"peak RSS {c['peak_rss_mib']:.0f} MiB.\n")
    common.write_result(name, results, md, out)
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/wan_real_size"), help="folder for the large graphs (deleted at the end unless --keep)")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=30, help="transformer blocks (30 = Wan2.1-1.3B)")
    ap.add_argument("--steps", type=int, default=3, help="timed calls per variant after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="onnx-fp32,torch-fp32,torch-bf16,onnx-int8,onnx-int4")
    ap.add_argument("--min-free-gib", type=float, default=14.0, help="refuse to start with less MemAvailable")
    ap.add_argument("--keep", action="store_true", help="keep the exported graphs under --work")
    ap.add_argument("--lora-rank", type=int, default=0, help="merge a random LoRA of this rank into every block's linears before export")
    ap.add_argument("--clip", default="", help="FxHxW: also time one clip's denoising there, 4 distilled steps against guided steps")
    ap.add_argument("--guided-timed", type=int, default=2, help="guided steps timed one by one for --clip")
    ap.add_argument("--result-name", default=NAME, help="results subfolder")
    args = ap.parse_args(argv)
    if (args.frames - 1) % 4 or args.height % 16 or args.width % 16:
        ap.error("frames must be 4k+1 and height, width multiples of 16 (Wan's rules)")
    free = mem_available_gib()
    if args.layers == 30 and free < args.min_free_gib:
        print(f"wan_real_size: only {free:.1f} GiB available, need {args.min_free_gib} (pass --min-free-gib to override)", file=sys.stderr)
        return 2
    latent = [(args.frames - 1) // 4 + 1, args.height // 8, args.width // 8]
    clip = None
    if args.clip:
        try:
            f, h, w = (int(v) for v in args.clip.lower().split("x"))
        except ValueError:
            ap.error(f"--clip {args.clip!r}: write FRAMESxHEIGHTxWIDTH, e.g. 17x256x256")
        if (f - 1) % 4 or h % 16 or w % 16:
            ap.error(f"--clip {args.clip!r}: frames must be 4k+1 and height, width multiples of 16 (Wan's rules)")
        clip = [(f - 1) // 4 + 1, h // 8, w // 8]
    model = {**WAN21_1_3B, "num_layers": args.layers}
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = {"model": model, "seed": SEED, "latent": latent, "tokens": TEXT_TOKENS, "threads": args.threads, "steps": args.steps, "work": str(args.work.resolve()),
           "lora_rank": args.lora_rank, "clip_latent": clip, "guided_timed": args.guided_timed}
    results = {
        "settings": {"frames": args.frames, "height": args.height, "width": args.width, "latent": latent, "tokens": TEXT_TOKENS,
                     "layers": args.layers, "threads": args.threads, "lora_rank": args.lora_rank, "clip": args.clip, "steps_timed": args.steps, "mem_available_gib_at_start": round(free, 1),
                     "load_average_at_start": [round(v, 1) for v in os.getloadavg()]},
        "machine": common.machine(),
        "date": common.utc_now(),
        "prepare": [],
        "timing": [],
        "clip": [],
    }
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    md = ""
    try:
        r = run_child(_EXPORT, cfg, timeout=3600)
        results["prepare"].append({"stage": "export", **r})
        md = write(results, args.out, args.result_name)
        print(json.dumps(results["prepare"][-1])[:400], file=sys.stderr)
        if "error" in r:
            return 1
        for v in variants:
            kind, prec = v.split("-", 1)
            if kind == "onnx" and prec != "fp32":
                q = run_child(_QUANTIZE, {**cfg, "variant": prec}, timeout=3600)
                results["prepare"].append({"stage": "quantize", "variant": prec, **q})
                md = write(results, args.out, args.result_name)
                if "error" in q:
                    results["timing"].append({"variant": v, "error": "quantization failed"})
                    continue
            code = _TIME_ORT if kind == "onnx" else _TIME_TORCH
            t = run_child(code, {**cfg, "variant": prec}, timeout=3600)
            results["timing"].append({"variant": v, **t})
            md = write(results, args.out, args.result_name)
            print(json.dumps(results["timing"][-1])[:400], file=sys.stderr)
        if clip:
            prec = "int8" if "onnx-int8" in variants else "fp32"
            results["clip"].append(run_child(_TIME_CLIP, {**cfg, "variant": prec}, timeout=3600))
            md = write(results, args.out, args.result_name)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
