"""Precision table for a tiny bundle: fp32, fp16, int8 dynamic, int8 static, int4 weight-only, searched mixed.

    python benchmarks/quantize_table.py [--bundle runtime/bundles/kinema-tiny] [--prompts 20] [--target-psnr 35]

One command, rerunnable on a retrained bundle. It quantizes the bundle with each preset
(kinema quantize), searches a mixed recipe for --target-psnr (kinema quantize
--target-psnr), then runs `kinema compare` on --prompts ShapesBench rows x 1 seed at the
bundle's default settings, each bundle's cost measured in a fresh process with
--threads threads. Writes (under --out, the results root):

    benchmarks/results/quantize_table/result.{json,md}    the table and the int8 speed line, with the machine
    benchmarks/results/quantize_table/report/             the compare report (HTML, plots, contact sheet, video grid)

The quantized bundles go to --work (default: a temporary folder, deleted at the end).
Measured here: 930 s wall with --prompts 16 --search-prompts 2 on the 2-core machine
while other jobs kept its load average between 4 and 15; the defaults (20 prompts, 4
search prompts) add about a quarter. The table's last line gives each run's wall and
CPU seconds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parent.parent
NAME = "quantize_table"
PRESET_ROWS = (("fp16", "fp16"), ("int8 dynamic", "int8"), ("int8 static", "int8-static"), ("int4 weight-only", "int4"), ("int4 HQQ", "int4-hqq"))


def _recipe(name: str):
    """A preset, or "int4-hqq": the int4 preset with ORT's HQQ quantizer for the denoiser's weights."""
    from dataclasses import replace

    from kinema.quantize.recipes import BundleRecipe, preset

    if name != "int4-hqq":
        return name
    base = preset("int4")
    comps = dict(base.components)
    comps["denoiser"] = replace(comps["denoiser"], algorithm="hqq")
    return BundleRecipe("int4-hqq", comps)


def _fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def table(report: dict, names: list[str]) -> list[str]:
    """The issue's table: one row per precision."""
    ref = report["bundles"][0]
    lines = [
        "| precision | size MiB | time/step ms (CPU ms) | e2e s | peak RSS MiB | video PSNR dB vs fp32 | SSIM vs fp32 | ShapesBench adherence |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in zip(names, report["bundles"]):
        c = e["cost"]
        v = e["video"]
        is_ref = e is ref
        lines.append(
            f"| {name} | {e['bytes'] / 2**20:.1f} | {c['step_s'] * 1000:.1f} ({c['step_cpu_s'] * 1000:.1f}) | {c['e2e_s']:.2f} | {c['peak_rss_mib']:.0f} | "
            f"{'ref' if is_ref else _fmt(v['psnr_db'], '.2f', 'identical')} | {'ref' if is_ref else format(v['ssim'], '.4f')} | {_fmt(e['adherence'], '.3f')} |"
        )
    return lines


def main(argv=None) -> int:
    from kinema.quantize.compare import CompareSettings, check_report_dir, compare_bundles, write_report
    from kinema.quantize.quantize_bundle import quantize_bundle
    from kinema.quantize.search import search_recipe
    from kinema.export.tiny import fp32_reference
    from kinema.runtime.bundle.load import load_bundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="fp32 source bundle (default: the built-in kinema-tiny, or an fp32 export of its weights when it is quantized)")
    ap.add_argument("--prompts", type=int, default=100, help="ShapesBench rows (x 1 seed) for the table (default: 100)")
    ap.add_argument("--target-psnr", type=float, default=35.0, help="target of the mixed-precision search, dB (default: 35)")
    ap.add_argument("--search-prompts", type=int, default=8, help="ShapesBench rows the search measures on (default: 8)")
    ap.add_argument("--heldout-prompts", type=int, default=16, help="other rows the searched recipe is measured on once (default: 16)")
    ap.add_argument("--sensitivity", default="text_encoder,denoiser", help="graphs whose per-group sensitivity the report shows (default: text_encoder,denoiser; empty: none)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph for every run (default: 1)")
    ap.add_argument("--work", type=Path, default=None, help="keep the quantized bundles in this folder")
    ap.add_argument("--out", type=Path, default=common.RESULTS,
                    help=f"results root: writes OUT/{NAME}/result.{{json,md}} and the report in OUT/{NAME}/report/ (default: benchmarks/results)")
    args = ap.parse_args(argv)
    folder = common.result_dir(NAME, args.out)
    folder.mkdir(parents=True, exist_ok=True)
    check_report_dir(folder / "report", overwrite=True)  # before any work
    run, c0 = common.Stopwatch(), time.process_time()
    work = args.work or Path(tempfile.mkdtemp(prefix="kinema-quantize-table-"))
    work.mkdir(parents=True, exist_ok=True)
    src = shown = fp32_reference(args.bundle, work)
    log = lambda msg: print(f"[{run.elapsed():6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        # a snapshot of the source, so that replacing the built-in bundle mid-run cannot mix two
        # models (an export fp32_reference made in `work` is one already)
        snap = src if src.resolve().is_relative_to(work.resolve()) else work / "fp32"
        if not snap.exists():
            shutil.copytree(src, snap)
        load_bundle(snap)  # hashes checked
        src = snap
        bundles, names, made = [], ["fp32"], {}
        for label, preset in PRESET_ROWS:
            out = work / preset
            if not out.exists():
                log(f"quantize {preset}")
                with common.Stopwatch() as sw:
                    quantize_bundle(src, out, _recipe(preset))
                made[preset] = round(sw.seconds, 1)
            bundles.append(out)
            names.append(label)
        mixed = work / "mixed"
        if not mixed.exists():
            log(f"search --target-psnr {args.target_psnr:g}")
            with common.Stopwatch() as sw:
                search_recipe(src, mixed, args.target_psnr, settings=CompareSettings.default(load_bundle(src, verify_hashes=False), args.search_prompts),
                              heldout_prompts=args.heldout_prompts, threads=args.threads, progress=log)
            made["mixed"] = round(sw.seconds, 1)
        search = load_bundle(mixed, verify_hashes=False).manifest["quantization"]["search"]
        chosen = ", ".join(f"{u} {lvl}" for u, lvl in search["chosen"].items() if lvl != "fp32")
        bundles.append(mixed)
        names.append(f"mixed (search, {args.target_psnr:g} dB)")

        settings = CompareSettings.default(load_bundle(src, verify_hashes=False), args.prompts, seeds=(0,), detail_prompts=2)
        log(f"compare {len(bundles) + 1} bundles on {len(settings.prompts)} prompts")
        graphs = tuple(g for g in args.sensitivity.split(",") if g)
        report, videos = compare_bundles(src, bundles, settings, threads=args.threads, cost=True, cost_repeats=2, progress=log, sensitivity=graphs)
        report_dir = write_report(report, videos, folder / "report", overwrite=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    by = dict(zip(names, report["bundles"]))
    fp32, int8 = by["fp32"], by["int8 dynamic"]
    ratio = fp32["cost"]["step_s"] / int8["cost"]["step_s"]
    cpu_ratio = fp32["cost"]["step_cpu_s"] / int8["cost"]["step_cpu_s"]
    d_adh = int8["adherence"] - fp32["adherence"]
    wall, cpu = run.elapsed(), time.process_time() - c0
    given = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("bundle", "prompts", "search_prompts", "heldout_prompts", "target_psnr", "threads") and v != ap.get_default(k)]
    int4 = by["int4 weight-only"]
    command = " ".join(["python benchmarks/quantize_table.py", *given])
    s = report["settings"]
    lines = [
        f"Bundle {report['reference']} ({_shown(shown)}, sha256 of manifest {report_sha(src)}); {len(s['prompts'])} ShapesBench prompts x 1 seed, {s['frames']} frames {s['width']}x{s['height']}, "
        f"{s['steps']} {s['sampler']} steps, guidance {s['guidance']:g}; {args.threads} ONNX Runtime thread(s) per graph; cost per bundle in a fresh process "
        f"(step = median interval between sampler callbacks, CPU ms = this process's CPU time per step, e2e = median of 2 runs after a warm-up, peak RSS = VmHWM).",
        "",
        *table(report, names),
        "",
        f"int8 dynamic vs fp32 denoiser step: {ratio:.2f}x faster wall-clock, {cpu_ratio:.2f}x by CPU time "
        f"({fp32['cost']['step_s'] * 1000:.1f} -> {int8['cost']['step_s'] * 1000:.1f} ms); "
        f"adherence {fp32['adherence']:.3f} -> {int8['adherence']:.3f} ({d_adh:+.3f}).",
        f"int4 weight-only vs fp32 adherence {int4['adherence'] - fp32['adherence']:+.3f} on {len(s['prompts'])} prompts; size {int4['bytes'] / 2**20:.1f} MiB "
        f"against int8's {int8['bytes'] / 2**20:.1f}, denoiser step {int4['cost']['step_s'] * 1000:.1f} ms against int8's {int8['cost']['step_s'] * 1000:.1f}.",
        _search_line(search, chosen, args.target_psnr),
        "",
        f"Run: `{command}` — {wall:.0f} s wall, {cpu:.0f} s CPU in the main process; "
        f"load average at the end {_loadavg()}.",
    ]
    machine = common.machine(threads=args.threads)
    lines.append(f"Machine: {common.describe_machine(machine)}.")
    text = "\n".join(lines) + "\n"
    result = {
        "bundle": str(shown),
        "names": names,
        "table": [{"precision": n, **{k: e[k] for k in ("bytes", "video", "adherence", "cost", "components", "recipe")}} for n, e in zip(names, report["bundles"])],
        "int8_step_speedup": ratio,
        "int8_step_speedup_cpu": cpu_ratio,
        "int8_adherence_delta": d_adh,
        "search": search,
        "quantize_seconds": made,
        "settings": report["settings"],
        "wall_s": wall,
        "main_process_cpu_s": cpu,
        "machine": machine,
        "report": str(report_dir.relative_to(ROOT) if report_dir.is_relative_to(ROOT) else report_dir),
    }
    common.write_result(NAME, result, text, args.out)
    print(text)
    return 0


def _search_line(search: dict, chosen: str, target: float) -> str:
    dev, held = search["development"], search["held_out"]
    line = (f"Searched mixed recipe (target {target:g} dB): {chosen}. Development, {dev['videos']} videos the search measured on: mean video PSNR "
            f"{dev['mean_psnr_db']:.2f} dB (one-sided 95% lower bound {dev['lower_bound_psnr_db']} dB, the stopping rule); ")
    if held:
        line += (f"held out, {held['videos']} videos it never saw: mean {held['mean_psnr_db']:.2f} dB (lower bound {held['lower_bound_psnr_db']} dB), "
                 f"{held['mean_psnr_db'] - dev['mean_psnr_db']:+.2f} dB against development; ")
    return line + f"{search['evaluations']} evaluations in {search['seconds']:.0f} s."


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def report_sha(bundle: Path) -> str:
    from kinema.runtime.bundle.load import load_bundle

    return load_bundle(bundle, verify_hashes=False).digest[:12]


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
