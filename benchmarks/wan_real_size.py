"""Wan2.1-T2V-1.3B's transformer at full size (random weights): ONNX fp32 / int8 / int4 against diffusers fp32 / bf16.

    python benchmarks/wan_real_size.py [--work runs/wan_real_size] [--out benchmarks/results]
                                       [--sizes 9x128x128,17x256x256] [--layers 30] [--steps 3]

One run, one machine. The transformer is built from Wan2.1-T2V-1.3B-Diffusers' config with
seeded random weights (nothing is downloaded), exported by kinema's generic path with
external data (`export_graph`: traced, every dynamic axis checked, values checked against
PyTorch at another shape), then quantized with the `wan` presets of quantize/recipes.py
(int8: dynamic uint8 x int8 MatMuls; int4: weight-only MatMulNBits), each graph through
quantize_bundle.apply_recipe. Every variant then runs in a fresh subprocess (peak RSS is
per process): load, one warm-up call, `--steps` timed calls of one sampling step with
guidance, i.e. the transformer at batch 2 (prompt + negative prompt) on latents for each
clip of `--sizes` (FRAMESxHEIGHTxWIDTH) and 512 text tokens (Wan's max_sequence_length); the
fp32 variants at the first size only (`--first-size-only`), `--later-steps` timed calls at
the others. diffusers bf16 loads a bf16 checkpoint of the same weights with from_pretrained,
as a user's process would (it never holds the fp32 model). The JSON's `ratios` hold, per size, diffusers bf16's step time over the fastest
ONNX variant's and that variant's peak RSS as a fraction of diffusers bf16's.
Also reported per variant: load time, the output's SQNR against the ONNX fp32 graph on the
same inputs. Export and quantization steps report their own peak RSS and wall time.

Heavy: ~5.3 GB of fp32 weights; the export child drops PyTorch's copy once its check outputs
are computed, before ONNX Runtime loads the graph (export_graph's release_module); int8
quantization reads one weight at a time (quantize/stream_int8.py). The script checks
MemAvailable first and writes the JSON after every stage, so an interrupted run keeps what
it measured. Large files live under --work and
are deleted at the end unless --keep. `--layers 2` runs the same path on a 2-layer model
(a quick check of the script itself).
`--lora-rank R` first writes a random rank-R LoRA over every linear of every block in Wan's
own key names, then reads, plans and merges it with kinema's export path (export/wan_lora.py);
the export row reports that step's time, and its peak RSS includes it. `--clip FxHxW` then
times one clip's denoising on the int8 graph: the 4 distilled steps without guidance run whole
(lightx2v's timesteps), against `--guided-timed` guided steps timed one by one (reported as 50 x
their median) and, with `--guided-whole 50`, 50 guided steps run whole; then the clip's two
other graphs at real size (wan_real_size_code._PARTS: the VAE decoder decoding it, UMT5-XXL's
text encoder measured at 1 and 2 of its 24 layers) for the clip end to end, distilled against guided;
the decoder is also timed against diffusers' own decode, rounds interleaved. `--parts-only`
runs that last part alone.
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
from wan_real_size_code import _CHECKPOINT, _EXPORT, _PARTS, _QUANTIZE, _TIME_CLIP, _TIME_ORT, _TIME_TORCH

NAME = "wan_real_size"

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
WAN21_1_3B = dict(
    patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
    freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)
TEXT_TOKENS = 512
SEED = 0

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


def _size(text: str, what: str) -> list[int]:
    """[F, H, W] of "FxHxW", checked against Wan's rules (frames 4k+1, sides multiples of 16)."""
    try:
        f, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"wan_real_size: {what} {text!r}: write FRAMESxHEIGHTxWIDTH, e.g. 17x256x256") from None
    if (f - 1) % 4 or h % 16 or w % 16 or min(f, h, w) <= 0:
        raise SystemExit(f"wan_real_size: {what} {text!r}: frames must be 4k+1 and height, width multiples of 16 (Wan's rules)")
    return [f, h, w]


def latent_of(size: list[int]) -> list[int]:
    f, h, w = size
    return [(f - 1) // 4 + 1, h // 8, w // 8]


def _timing_rows(results: dict) -> list[str]:
    rows = ["| clip (latent) | variant | s / step (median) | steps timed | load s | CPU s (child) | peak RSS MiB | SQNR vs ONNX fp32 dB |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results["timing"]:
        clip = f"{r.get('size', '')} ({'x'.join(map(str, r.get('latent', [])))})"
        if "error" in r:
            rows.append(f"| {clip} | {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        steps = r["step_s"]
        sq = "" if r.get("sqnr_db_vs_onnx_fp32") is None else f"{r['sqnr_db_vs_onnx_fp32']:.1f}"
        rows.append(f"| {clip} | {r['variant']} | {statistics.median(steps):.2f} | {len(steps)} | {r['load_s']} | {r.get('cpu_s', '')} | {r['peak_rss_mib']:.0f} | {sq} |")
    return rows


def ratios(results: dict) -> list[dict]:
    """Per size: diffusers bf16 against the fastest ONNX variant, time and peak RSS (the issue's two ratios)."""
    out = []
    for size in results["settings"]["sizes"]:
        rs = [r for r in results["timing"] if r.get("size") == size and "error" not in r]
        bf16 = next((r for r in rs if r["variant"] == "torch-bf16"), None)
        onnx = [r for r in rs if r["variant"].startswith("onnx-")]
        if bf16 is None or not onnx:
            continue
        best = min(onnx, key=lambda r: statistics.median(r["step_s"]))
        out.append({"size": size, "best": best["variant"], "speedup_vs_torch_bf16": round(statistics.median(bf16["step_s"]) / statistics.median(best["step_s"]), 2),
                    "rss_fraction_of_torch_bf16": round(best["peak_rss_mib"] / bf16["peak_rss_mib"], 3)})
    return out


def write(results: dict, out: Path, name: str = NAME) -> str:
    """Write the results so far (JSON and Markdown table); returns the Markdown."""
    results["ratios"] = ratios(results)
    rows = _timing_rows(results)
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
            f"{s['tokens']} text tokens, {s['threads']} threads, "
            f"{common.describe_machine(results['machine'])}, {results['date']}, load average at start {s['load_average_at_start']}")
    if results["timing"] or results["prepare"]:
        md = head + "\n\n" + "\n".join(rows + prep) + "\n"
    else:  # --parts-only: no transformer
        md = (f"Wan 2.1 VAE decoder and UMT5-XXL text encoder at real size (random weights), clip {s['clip']}, {s['tokens']} text tokens, "
              f"{s['threads']} threads, {common.describe_machine(results['machine'])}, {results['date']}, load average at start {s['load_average_at_start']}\n")
    for q in results["ratios"]:
        md += (f"\nAt {q['size']}: {q['best']} is {q['speedup_vs_torch_bf16']}x faster than diffusers bf16 per step, "
               f"at {q['rss_fraction_of_torch_bf16']:.3f} of its peak RSS.\n")
    for c in results.get("clip", []):
        if "error" in c:
            md += f"\nclip: failed: {c['error']}\n"
            continue
        if c.get("stage") == "parts":
            md += _end_to_end(results["clip"], c)
            continue
        g = statistics.median(c["guided_step_s"])
        md += (f"\nOne clip's denoising, latent {c['latent']}, {c['variant']}: 4 distilled steps without guidance (4 batch-1 calls, "
               f"run whole) {c['distilled_4_steps_s']} s; one guided step (a batch-2 call) median {g:.2f} s over {len(c['guided_step_s'])}, "
               f"so 50 guided steps {50 * g:.0f} s (50 x the median, not run whole): {50 * g / c['distilled_4_steps_s']:.1f}x the distilled clip; "
               f"peak RSS {c['peak_rss_mib']:.0f} MiB.\n")
        if c.get("guided_whole_s"):
            md += (f"\n{c['guided_steps_run_whole']} guided steps run whole: {c['guided_whole_s']} s, "
                   f"{c['guided_whole_s'] / c['distilled_4_steps_s']:.1f}x the 4 distilled steps.\n")
    common.write_result(name, results, md, out)
    return md


def _against_diffusers(parts: dict) -> str:
    if "diffusers_decode_s" not in parts:
        return ""
    d = parts["diffusers_decode_s"]
    return (f", diffusers' decode of the same latent (fp32, rounds interleaved) {d:.2f} s, {d / parts['decode_s']:.2f}x kinema's time, "
            f"max |kinema - diffusers| {parts['max_abs_diff_vs_diffusers']:.1e} on frames in [0, 1]")


def _end_to_end(clips: list[dict], parts: dict) -> str:
    """The clip end to end: text encoding + denoising + decoding, 4 distilled steps against 50 guided ones."""
    den = next((c for c in clips if c.get("stage") == "clip"), None)
    dec, te1, te2 = parts["decode_s"], parts["text_encoder_b1_24_layers_s"], parts["text_encoder_b2_24_layers_s"]
    md = (f"\nThe clip's other graphs, real size with random weights: the VAE decoder ({parts['decoder_params'] / 1e6:.1f}M parameters, fp32 "
          f"streaming graphs) decodes it to {parts['decoded_shape']} in {dec:.2f} s (median of {len(parts['decode_runs_s'])}){_against_diffusers(parts)}; UMT5-XXL int8 "
          f"at 512 tokens takes {parts['text_encoder_b1_1_layer_s']} s with 1 layer and {parts['text_encoder_b1_2_layers_s']} s with 2 "
          f"(one prompt), {parts['text_encoder_b2_1_layer_s']} / {parts['text_encoder_b2_2_layers_s']} s for prompt + negative prompt, "
          f"so its 24 layers take {te1} s / {te2} s (t1 + 23 (t2 - t1): its fp32 weights, 22.8 GB, exceed this machine's memory).\n")
    if den is None or "error" in den:
        return md
    guided50 = den.get("guided_whole_s") if den.get("guided_steps_run_whole") == 50 else 50 * statistics.median(den["guided_step_s"])
    distilled = te1 + den["distilled_4_steps_s"] + dec
    guided = te2 + guided50 + dec
    parts["end_to_end"] = {"distilled_4_steps_s": round(distilled, 1), "guided_50_steps_s": round(guided, 1), "ratio": round(guided / distilled, 1)}
    return (md + f"\nEnd to end (text encoder + denoising + decoder): 4 distilled steps {distilled:.1f} s against 50 guided steps "
            f"{guided:.0f} s, {guided / distilled:.1f}x.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/wan_real_size"), help="folder for the large graphs (deleted at the end unless --keep)")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    ap.add_argument("--sizes", default="9x128x128", help="FxHxW[,FxHxW...]: the clips one step is timed at, in order")
    ap.add_argument("--first-size-only", default="onnx-fp32,torch-fp32", help="variants timed at the first size only (the fp32 ones: the SQNR reference)")
    ap.add_argument("--layers", type=int, default=30, help="transformer blocks (30 = Wan2.1-1.3B)")
    ap.add_argument("--steps", type=int, default=3, help="timed calls per variant after one warm-up, at the first size")
    ap.add_argument("--later-steps", type=int, default=1, help="timed calls per variant after one warm-up, at the other sizes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="onnx-fp32,torch-fp32,torch-bf16,onnx-int8,onnx-int4")
    ap.add_argument("--min-free-gib", type=float, default=14.0, help="refuse to start with less MemAvailable")
    ap.add_argument("--keep", action="store_true", help="keep the exported graphs under --work")
    ap.add_argument("--lora-rank", type=int, default=0, help="merge a random LoRA of this rank into every block's linears before export")
    ap.add_argument("--clip", default="", help="FxHxW: also time one clip's denoising there, 4 distilled steps against guided steps")
    ap.add_argument("--guided-timed", type=int, default=2, help="guided steps timed one by one for --clip")
    ap.add_argument("--guided-whole", type=int, default=0, help="also run this many guided steps whole for --clip (50: Wan's default)")
    ap.add_argument("--result-name", default=NAME, help="results subfolder")
    ap.add_argument("--parts-only", action="store_true", help="with --clip: only the VAE decoder (against diffusers' decode) and the text encoder, no transformer")
    args = ap.parse_args(argv)
    sizes = [_size(v, "--sizes") for v in args.sizes.split(",") if v.strip()]
    clip = latent_of(_size(args.clip, "--clip")) if args.clip else None
    if args.parts_only and not clip:
        print("wan_real_size: --parts-only needs --clip FxHxW", file=sys.stderr)
        return 2
    free = mem_available_gib()
    if args.layers == 30 and free < args.min_free_gib:
        print(f"wan_real_size: only {free:.1f} GiB available, need {args.min_free_gib} (pass --min-free-gib to override)", file=sys.stderr)
        return 2
    model = {**WAN21_1_3B, "num_layers": args.layers}
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = {"model": model, "seed": SEED, "tokens": TEXT_TOKENS, "threads": args.threads, "work": str(args.work.resolve()),
           "lora_rank": args.lora_rank, "clip_latent": clip, "guided_timed": args.guided_timed, "guided_whole": args.guided_whole}
    names = ["x".join(map(str, z)) for z in sizes]
    results = {
        "settings": {"sizes": names, "latents": [latent_of(z) for z in sizes], "tokens": TEXT_TOKENS, "layers": args.layers, "threads": args.threads,
                     "lora_rank": args.lora_rank, "clip": args.clip, "steps_timed": args.steps, "later_steps_timed": args.later_steps,
                     "mem_available_gib_at_start": round(free, 1), "load_average_at_start": [round(v, 1) for v in os.getloadavg()]},
        "machine": common.machine(),
        "date": common.utc_now(),
        "prepare": [],
        "timing": [],
        "clip": [],
    }
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    first_only = {v.strip() for v in args.first_size_only.split(",")}
    md = ""
    if args.parts_only:
        results["clip"].append(run_child(_PARTS, cfg, timeout=3600))
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
        print(write(results, args.out, args.result_name))
        return 0
    try:
        r = run_child(_EXPORT, cfg, timeout=3600)
        results["prepare"].append({"stage": "export", **r})
        md = write(results, args.out, args.result_name)
        print(json.dumps(results["prepare"][-1])[:400], file=sys.stderr)
        if "error" in r:
            return 1
        failed = set()
        for v in variants:
            kind, prec = v.split("-", 1)
            if kind == "onnx" and prec != "fp32":
                q = run_child(_QUANTIZE, {**cfg, "variant": prec}, timeout=3600)
                results["prepare"].append({"stage": "quantize", "variant": prec, **q})
                md = write(results, args.out, args.result_name)
                failed |= {v} if "error" in q else set()
        if "torch-bf16" in variants:
            c = run_child(_CHECKPOINT, cfg, timeout=3600)
            failed |= {"torch-bf16"} if "error" in c else set()
        for i, (size, name) in enumerate(zip(sizes, names)):
            for v in variants:
                if i and v in first_only:
                    continue
                kind, prec = v.split("-", 1)
                if v in failed:
                    results["timing"].append({"variant": v, "size": name, "latent": latent_of(size), "error": "its graph or checkpoint could not be made"})
                    continue
                run_cfg = {**cfg, "variant": prec, "latent": latent_of(size), "steps": args.later_steps if i else args.steps}
                t = run_child(_TIME_ORT if kind == "onnx" else _TIME_TORCH, run_cfg, timeout=3600)
                results["timing"].append({"variant": v, "size": name, "latent": latent_of(size), **t})
                md = write(results, args.out, args.result_name)
                print(json.dumps(results["timing"][-1])[:400], file=sys.stderr)
        if clip:
            prec = "int8" if "onnx-int8" in variants else "fp32"
            results["clip"].append(run_child(_TIME_CLIP, {**cfg, "variant": prec}, timeout=3600))
            md = write(results, args.out, args.result_name)
            results["clip"].append(run_child(_PARTS, cfg, timeout=3600))
            md = write(results, args.out, args.result_name)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
