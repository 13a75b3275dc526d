"""Bundles side by side: what each precision costs in accuracy and buys in size, speed and memory.

    from kinema.quantize.compare import CompareSettings, compare_bundles, write_report
    report, videos = compare_bundles("kinema-tiny", ["kinema-tiny-int8"], CompareSettings.default("tiny"))
    write_report(report, videos, "report/")

Every bundle generates the same prompts with the same seeds, so the same initial noise.
Against the reference bundle (the first) it measures:

- per component: SQNR of each graph's outputs on the inputs recorded while the reference
  generated the first `detail_prompts` prompts (every step, both guidance branches);
- per step: PSNR of the denoised latent, teacher-forced (the bundle's denoiser fed the
  reference's trajectory and text embeddings) and free-running (its own trajectory);
- end to end: video PSNR and SSIM, PSNR of the frame-to-frame differences, mean frame
  change, and ShapesBench adherence when the prompts are ShapesBench rows;
- cost, each bundle in a fresh interpreter (quantize/cost.py): bytes, load time, peak
  RSS, time per denoiser step, end-to-end time.

`compare_generators` does the end-to-end part for any `generate(prompt, seed) -> frames`
callables, for changes that are not a bundle (fewer steps, skipped steps, caching).

Runtime and NumPy only (kinema.runtime, kinema.models.shapes_bench); the report's
pictures need matplotlib and Pillow (kinema[export]); without them the JSON, Markdown,
and an HTML page without pictures are written and the report says so.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.writer import write_folder
from kinema.runtime.bundle.load import Bundle, load_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.pipeline import Pipeline

from kinema.quantize import metrics
from kinema.quantize.calibration import GENERIC_PROMPTS, RecordingPipeline
from kinema.quantize.cost import bundle_bytes, measure_cost

COMPONENTS = ("text_encoder", "denoiser", "decoder_prefix", "decoder_step")
GRID_VIDEOS = 4  # prompts shown in the side-by-side video grid
SHEET_PROMPTS = 3  # prompts shown in the contact sheet
SHEET_EVERY = 4  # every 4th frame in the contact sheet


@dataclass(frozen=True)
class CompareSettings:
    """What every bundle generates: prompts (optionally ShapesBench rows), seeds and generate settings."""

    prompts: tuple[str, ...]
    rows: tuple[dict, ...] | None = None  # ShapesBench rows, one per prompt: adherence is scored
    seeds: tuple[int, ...] = (0,)
    detail_prompts: int = 2  # prompts whose every step and graph input is compared
    generate: Mapping = field(default_factory=dict)  # steps, frames, height, width, guidance, ...

    def __post_init__(self):
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise InputError("compare needs at least one non-empty prompt")
        if self.rows is not None and len(self.rows) != len(self.prompts):
            raise InputError("compare: rows and prompts differ in length")
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise InputError(f"seeds {self.seeds!r} must be whole numbers >= 0")
        if not isinstance(self.detail_prompts, int) or self.detail_prompts < 1:
            raise InputError(f"detail_prompts={self.detail_prompts!r} must be at least 1")
        object.__setattr__(self, "generate", dict(self.generate))

    @classmethod
    def default(cls, family: str, n: int = 8, **kw) -> "CompareSettings":
        """`n` ShapesBench rows spread over its prompt file for the tiny family; generic prompts otherwise."""
        if family == "tiny":
            from kinema.models import shapes_bench

            rows = shapes_bench.load_prompts(shapes_bench.PROMPTS_PATH)
            idx = np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)
            picked = tuple(rows[i] for i in idx)
            return cls(tuple(r["prompt"] for r in picked), picked, **kw)
        return cls(tuple(GENERIC_PROMPTS[i % len(GENERIC_PROMPTS)] for i in range(n)), None, **kw)


def load_prompt_file(path: str | Path, family: str, limit: int | None = None) -> tuple[tuple[str, ...], tuple[dict, ...] | None]:
    """Prompts from a file: JSONL rows with a "prompt" (ShapesBench rows are scored for the tiny family), or one prompt per line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {p}: {'is a folder, not a file' if p.is_dir() else 'no such file'}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--prompts {p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if limit is not None:
        lines = lines[:limit]
    if not lines:
        raise InputError(f"--prompts {p}: no prompts in the file")
    if not lines[0].lstrip().startswith("{"):
        return tuple(line.strip() for line in lines), None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"--prompts {p} line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise InputError(f"--prompts {p} line {i}: a row needs a non-empty \"prompt\"")
        rows.append(row)
    prompts = tuple(r["prompt"] for r in rows)
    if family != "tiny" or not all("objects" in r for r in rows):
        return prompts, None
    from kinema.models import shapes_bench

    try:
        checked = tuple(shapes_bench.validate_row(r, f"--prompts {p} line {i}") for i, r in enumerate(rows, 1))
    except ValueError as e:
        raise InputError(str(e)) from None
    return prompts, checked


# ---------------------------------------------------------------------- checks


def check_comparable(ref: Bundle, others: Sequence[Bundle], settings: CompareSettings) -> None:
    """InputError unless every bundle is of the reference's family and makes the same latent for the settings."""
    pipe = Pipeline(ref)
    st = pipe.check_inputs(settings.prompts[0], seed=settings.seeds[0], **settings.generate)
    shape = pipe.latent_shape(st)
    for b in others:
        if b.family != ref.family:
            raise InputError(f"cannot compare {b.path} (family {b.family!r}) with {ref.path} (family {ref.family!r}): bundles must be of one family")
        if b.latent != ref.latent:
            raise InputError(f"cannot compare {b.path} with {ref.path}: latent geometry differs ({b.latent} vs {ref.latent})")
        other = Pipeline(b)
        other_shape = other.latent_shape(other.check_inputs(settings.prompts[0], seed=settings.seeds[0], **settings.generate))
        if other_shape != shape:
            raise InputError(f"cannot compare {b.path} with {ref.path}: latent shapes differ for these settings ({list(other_shape)} vs {list(shape)})")


# ---------------------------------------------------------------------- running


@dataclass
class _Run:
    frames: np.ndarray  # (T, H, W, 3) uint8
    sigmas: list[float]
    x: list[np.ndarray]  # the sampler state each step starts from
    denoised: list[np.ndarray]  # the denoised latent of each step
    seconds: float


def _run(pipe: Pipeline, prompt: str, seed: int, gen: Mapping, *, keep_steps: bool) -> _Run:
    st = pipe.check_inputs(prompt, seed=seed, **gen)
    sig, xs, den = [], [], []

    def cb(p):
        sig.append(float(p["sigma"]))
        if keep_steps:
            xs.append(np.array(p["x"], copy=True))
            den.append(np.array(p["denoised"], copy=True))

    t = time.perf_counter()
    frames = pipe.run(st, callback=cb).frames
    return _Run(frames, sig, xs, den, time.perf_counter() - t)


def _adherence(frames: np.ndarray, row: dict | None) -> float | None:
    if row is None:
        return None
    from kinema.models import shapes_bench

    return float(shapes_bench.score_video(frames, row)["adherence"])


def _finite(v: float) -> float | None:
    """JSON has no infinity: identical outputs are recorded as null ("identical" in the tables)."""
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def video_metrics(ref: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> dict:
    """End-to-end error of a set of uint8 videos against the reference set (same order).

    psnr_db pools the squared error over every video (one PSNR of the whole set);
    ssim, temporal_psnr_db and frame_change are means over the videos.
    """
    sq = sum(float(np.sum((r.astype(np.float64) - o.astype(np.float64)) ** 2)) for r, o in zip(ref, other))
    n = sum(r.size for r in ref)
    mse = sq / n
    return {
        "psnr_db": _finite(math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)),
        "ssim": round(float(np.mean([metrics.video_ssim(r, o) for r, o in zip(ref, other)])), 5),
        "temporal_psnr_db": _finite(float(np.mean([min(metrics.temporal_psnr_db(r, o), 99.0) for r, o in zip(ref, other)]))) if mse else None,
        "frame_change": round(float(np.mean([metrics.frame_change(o) for o in other])), 4),
        "videos": len(ref),
    }


def compare_generators(
    reference: Callable[[str, int], np.ndarray],
    candidates: Mapping[str, Callable[[str, int], np.ndarray]],
    prompts: Sequence[str],
    *,
    rows: Sequence[dict] | None = None,
    seeds: Sequence[int] = (0,),
) -> dict:
    """End-to-end comparison of `generate(prompt, seed) -> uint8 frames (T, H, W, 3)` callables against a reference.

    Returns {"reference": {...}, "candidates": {name: {...}}}: per candidate `video_metrics`
    against the reference's videos, mean seconds per video, and mean ShapesBench adherence
    when `rows` (aligned with `prompts`) are given; the reference gets its own adherence,
    frame change and seconds.
    """
    jobs = [(i, p, s) for i, p in enumerate(prompts) for s in seeds]

    def run_all(gen):
        vids, secs = [], 0.0
        for _, p, s in jobs:
            t = time.perf_counter()
            vids.append(np.asarray(gen(p, s)))
            secs += time.perf_counter() - t
        return vids, secs / len(jobs)

    def adherence(vids):
        if rows is None:
            return None
        return round(float(np.mean([_adherence(v, rows[i]) for v, (i, _, _) in zip(vids, jobs)])), 4)

    ref_v, ref_s = run_all(reference)
    out = {"reference": {"seconds_per_video": ref_s, "adherence": adherence(ref_v), "frame_change": round(float(np.mean([metrics.frame_change(v) for v in ref_v])), 4)}, "candidates": {}}
    for name, gen in candidates.items():
        vids, secs = run_all(gen)
        out["candidates"][name] = {**video_metrics(ref_v, vids), "adherence": adherence(vids), "seconds_per_video": secs}
    return out


def _component_outputs(pipe: Pipeline, name: str, feeds: list[dict]) -> list[list[np.ndarray]]:
    s = pipe.session(name)
    outs = [o.name for o in s.get_outputs()]
    inputs = {i.name for i in s.get_inputs()}
    return [s.run(outs, {k: v for k, v in f.items() if k in inputs}) for f in feeds]


def _component_sqnr(ref_out: list[list[np.ndarray]], other_out: list[list[np.ndarray]], names: list[str], feeds: list[dict]) -> dict:
    """Pooled SQNR per output; text embeddings only over real tokens (padding is masked out downstream)."""
    res = {}
    for j, o in enumerate(names):
        sig = noise = 0.0
        for f, r, q in zip(feeds, ref_out, other_out):
            a, b = np.asarray(r[j], np.float64), np.asarray(q[j], np.float64)
            if o == "text_embeds" and "attention_mask" in f:
                keep = f["attention_mask"].astype(bool)
                a, b = a[keep], b[keep]
            sig += float(np.sum(a * a))
            noise += float(np.sum((a - b) ** 2))
        res[o] = _finite(math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig else -math.inf))
    return res


def _label(b: Bundle, used: set[str]) -> str:
    label = b.name
    q = b.manifest.get("quantization")
    if q and q.get("recipe", {}).get("name") and not label.endswith(q["recipe"]["name"]):
        label = f"{label} ({q['recipe']['name']})"
    base, k = label, 2
    while label in used:
        label, k = f"{base} #{k}", k + 1
    used.add(label)
    return label


def compare_bundles(
    reference: str | Path,
    others: Sequence[str | Path],
    settings: CompareSettings,
    *,
    threads: int | None = None,
    cost: bool = True,
    cost_repeats: int = 2,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Run every bundle on the settings; returns (report, {label: videos of the first prompts}) for `write_report`."""
    say = progress or (lambda msg: None)
    ref_b = load_bundle(reference)
    other_bs = [load_bundle(o) for o in others]
    check_comparable(ref_b, other_bs, settings)
    gen = settings.generate
    jobs = [(i, p, s) for i, p in enumerate(settings.prompts) for s in settings.seeds]
    n_detail = min(settings.detail_prompts, len(settings.prompts))
    detail = [j for j in jobs if j[0] < n_detail]
    keep = GRID_VIDEOS
    used: set[str] = set()
    labels = [_label(b, used) for b in [ref_b, *other_bs]]

    # ---- the reference: videos, trajectories, recorded graph inputs
    say(f"reference {labels[0]}: {len(jobs)} videos")
    comps = [c for c in COMPONENTS if ref_b.has(c)]
    ref_pipe = RecordingPipeline(ref_b, record=comps, threads=threads)
    ref_runs: list[_Run] = []
    for job in jobs:
        ref_pipe.recording = job in detail
        ref_runs.append(_run(ref_pipe, job[1], job[2], gen, keep_steps=job in detail))
    ref_pipe.recording = False
    recorded = ref_pipe.recorded
    ref_outputs = {c: _component_outputs(ref_pipe, c, recorded[c]) for c in comps}
    ref_text = {job: ref_pipe.encode_text([job[1], ref_pipe.check_inputs(job[1], **gen).negative_prompt]) for job in detail}
    rows = settings.rows
    ref_adh = [_adherence(r.frames, rows[i] if rows else None) for r, (i, _, _) in zip(ref_runs, jobs)]
    videos = {labels[0]: [r.frames for r in ref_runs[:keep]]}

    entries = []
    for label, b in zip(labels, [ref_b, *other_bs]):
        is_ref = b is ref_b
        say(f"{label}: {len(jobs)} videos")
        if is_ref:
            runs, pipe = ref_runs, ref_pipe
        else:
            pipe = Pipeline(b, threads=threads)
            runs = [_run(pipe, p, s, gen, keep_steps=(i, p, s) in detail) for i, p, s in jobs]
            videos[label] = [r.frames for r in runs[:keep]]
        adh = ref_adh if is_ref else [_adherence(r.frames, rows[i] if rows else None) for r, (i, _, _) in zip(runs, jobs)]
        entry: dict = {
            "label": label,
            "path": str(b.path),
            "name": b.name,
            "reference": is_ref,
            "precision": {c: e.get("precision", "fp32") for c, e in b.components.items()},
            "recipe": b.manifest.get("quantization", {}).get("recipe", {}).get("name", "fp32" if not b.manifest.get("quantization") else None),
            "bytes": bundle_bytes(b.path),
            "video": video_metrics([r.frames for r in ref_runs], [r.frames for r in runs]),
            "adherence": None if rows is None else round(float(np.mean(adh)), 4),
            "in_process_seconds_per_video": round(float(np.mean([r.seconds for r in runs])), 4),
        }
        # per step: free-running (own trajectory) and teacher-forced (reference trajectory)
        free, forced = [], []
        for job, ref_run in zip(jobs, ref_runs):
            if job not in detail:
                continue
            run = runs[jobs.index(job)]
            free.append([metrics.psnr_db(r, o) for r, o in zip(ref_run.denoised, run.denoised)])
            st = pipe.check_inputs(job[1], seed=job[2], **gen)
            model = pipe.denoiser(st, ref_text[job])
            forced.append([metrics.psnr_db(d, model(x, s)) for x, s, d in zip(ref_run.x, ref_run.sigmas, ref_run.denoised)])
        entry["steps"] = {
            "sigmas": ref_runs[jobs.index(detail[0])].sigmas,
            "free_running_psnr_db": [_finite(float(np.mean(col))) for col in zip(*free)],
            "teacher_forced_psnr_db": [_finite(float(np.mean(col))) for col in zip(*forced)],
        }
        # per component: the same recorded inputs through this bundle's graph
        entry["components"] = {}
        for c in comps:
            if not b.has(c):
                continue
            outs = [o.name for o in pipe.session(c).get_outputs()]
            other_out = ref_outputs[c] if is_ref else _component_outputs(pipe, c, recorded[c])
            entry["components"][c] = {"precision": b.components[c].get("precision", "fp32"), "inputs": len(recorded[c]), "sqnr_db": _component_sqnr(ref_outputs[c], other_out, outs, recorded[c])}
        entries.append(entry)
        if not is_ref:
            del pipe

    if cost:
        for entry in entries:
            say(f"{entry['label']}: cost (fresh process)")
            entry["cost"] = measure_cost(entry["path"], settings.prompts[0], seed=settings.seeds[0], threads=threads, repeats=cost_repeats, **gen)
    st0 = Pipeline(ref_b).check_inputs(settings.prompts[0], seed=settings.seeds[0], **gen)
    report = {
        "reference": labels[0],
        "settings": {
            "prompts": list(settings.prompts),
            "shapesbench_rows": rows is not None,
            "seeds": list(settings.seeds),
            "detail_prompts": n_detail,
            "frames": st0.frames, "height": st0.height, "width": st0.width, "fps": st0.fps,
            "steps": st0.steps, "guidance": st0.guidance, "sampler": st0.sampler, "shift": st0.shift,
            "threads": threads,
        },
        "definitions": DEFINITIONS,
        "bundles": entries,
    }
    return report, videos


DEFINITIONS = {
    "video.psnr_db": "PSNR of all uint8 frames of all videos against the reference's (pooled MSE, peak 255); null = identical",
    "video.ssim": "mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, per RGB channel) over frames and videos",
    "video.temporal_psnr_db": "mean PSNR of the frame-to-frame differences against the reference's (flicker and motion error), capped at 99",
    "video.frame_change": "mean |f_t - f_t-1| of the bundle's own videos, 0-255 (the reference's is its own row)",
    "steps.teacher_forced_psnr_db": "per step: PSNR (peak = reference latent's range) of the denoised latent when the bundle's denoiser is fed the reference's x and text embeddings; mean over detail prompts",
    "steps.free_running_psnr_db": "per step: PSNR of the denoised latent along the bundle's own trajectory from the same initial noise",
    "components.sqnr_db": "per graph output: 10 log10(sum ref^2 / sum err^2) on the inputs recorded from the reference's sampling runs (text embeddings over real tokens only)",
    "cost": "fresh interpreter per bundle: load = open with hash checks + every session; step = median interval between sampler callbacks; e2e = median Pipeline.run after one warm-up; peak RSS = VmHWM (the process's own high-water mark; Linux)",
    "adherence": "ShapesBench adherence (mean of background, count, colour, shape, size, motion checks)",
}


# ---------------------------------------------------------------------- the report


def _fmt(v, spec: str = ".2f", none: str = "identical") -> str:
    if v is None:
        return none
    return format(v, spec)


def markdown_table(report: dict) -> str:
    """The report's main table: one row per bundle."""
    ref_bytes = report["bundles"][0]["bytes"]
    cols = ["bundle", "size MiB", "size vs ref", "load s", "peak RSS MiB", "step ms", "e2e s", "video PSNR dB", "SSIM", "temporal PSNR dB", "adherence", "denoiser SQNR dB", "worst teacher-forced step PSNR dB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in report["bundles"]:
        c = e.get("cost", {})
        den = e["components"].get("denoiser", {}).get("sqnr_db", {})
        tf = [v for v in e["steps"]["teacher_forced_psnr_db"] if v is not None]
        v = e["video"]
        lines.append(
            "| "
            + " | ".join(
                [
                    e["label"] + (" (ref)" if e["reference"] else ""),
                    f"{e['bytes'] / 2**20:.1f}",
                    f"{e['bytes'] / ref_bytes:.2f}",
                    _fmt(c.get("load_s"), ".2f", "-"),
                    _fmt(c.get("peak_rss_mib"), ".0f", "-"),
                    _fmt(None if c.get("step_s") is None else c["step_s"] * 1000, ".1f", "-"),
                    _fmt(c.get("e2e_s"), ".2f", "-"),
                    "ref" if e["reference"] else _fmt(v["psnr_db"]),
                    "ref" if e["reference"] else f"{v['ssim']:.4f}",
                    "ref" if e["reference"] else _fmt(v["temporal_psnr_db"]),
                    _fmt(e["adherence"], ".3f", "-"),
                    "ref" if e["reference"] else ", ".join(_fmt(x, ".1f") for x in den.values()) or "-",
                    "ref" if e["reference"] else (f"{min(tf):.1f}" if tf else "identical"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _pictures_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def _plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    others = [e for e in report["bundles"] if not e["reference"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in ((axes[0], "teacher_forced_psnr_db", "teacher-forced (reference trajectory)"), (axes[1], "free_running_psnr_db", "free-running (own trajectory)")):
        for e in others:
            ys = [99.0 if y is None else y for y in e["steps"][key]]
            ax.plot(range(len(ys)), ys, marker="o", ms=3, label=e["label"])
        ax.set_title(f"denoised latent PSNR per step, {title}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR vs reference (dB)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "error_per_step.png", dpi=100)
    plt.close(fig)
    written.append("error_per_step.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for e in others:
        y = 99.0 if e["video"]["psnr_db"] is None else e["video"]["psnr_db"]
        axes[0].scatter(e["bytes"] / 2**20, y)
        axes[0].annotate(e["label"], (e["bytes"] / 2**20, y), fontsize=7)
        if e.get("cost", {}).get("step_s"):
            axes[1].scatter(e["cost"]["step_s"] * 1000, y)
            axes[1].annotate(e["label"], (e["cost"]["step_s"] * 1000, y), fontsize=7)
    ref = report["bundles"][0]
    axes[0].axvline(ref["bytes"] / 2**20, color="gray", ls="--", lw=1, label=f"{ref['label']} (reference)")
    if ref.get("cost", {}).get("step_s"):
        axes[1].axvline(ref["cost"]["step_s"] * 1000, color="gray", ls="--", lw=1, label=f"{ref['label']} (reference)")
    axes[0].set_xlabel("bundle size (MiB)")
    axes[1].set_xlabel("time per denoiser step (ms)")
    axes[0].set_ylabel("video PSNR vs reference (dB)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("what each bundle buys (x) for what it costs in accuracy (y)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "size_latency_vs_psnr.png", dpi=100)
    plt.close(fig)
    written.append("size_latency_vs_psnr.png")
    return written


def _text_strip(text: str, width: int, height: int = 14) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).text((2, 1), text, fill="black")
    return np.asarray(img)


def _even(a: np.ndarray) -> np.ndarray:
    """Pad (.., H, W, 3) with white to even H and W (H.264/VP9 4:2:0 needs them)."""
    h, w = a.shape[-3:-1]
    pad = [(0, 0)] * (a.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
    return np.pad(a, pad, constant_values=255)


def video_grid(videos: dict[str, list[np.ndarray]], prompts: Sequence[str], scale: int = 2, gap: int = 4) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: one column per bundle (labelled), one row per prompt (labelled)."""
    labels = list(videos)
    n = min(len(v) for v in videos.values())
    first = videos[labels[0]][0]
    t, h, w = first.shape[0], first.shape[1] * scale, first.shape[2] * scale
    col_w = w + gap
    width = col_w * len(labels)
    header = np.concatenate([_text_strip(lab[: col_w // 6], col_w) for lab in labels], axis=1)  # (14, width, 3)
    blocks = [np.broadcast_to(header, (t, *header.shape))]
    for i in range(n):
        strip = _text_strip(prompts[i][: width // 6], width)
        blocks.append(np.broadcast_to(strip, (t, *strip.shape)))
        cells = []
        for lab in labels:
            v = np.kron(videos[lab][i], np.ones((1, scale, scale, 1), np.uint8))  # (T, h, w, 3)
            cells.append(np.pad(v, ((0, 0), (0, gap), (0, gap), (0, 0)), constant_values=255))
        blocks.append(np.concatenate(cells, axis=2))
    return _even(np.ascontiguousarray(np.concatenate(blocks, axis=1)))


def contact_sheet(videos: dict[str, list[np.ndarray]], prompts: Sequence[str], scale: int = 2, gap: int = 4) -> np.ndarray:
    """One image (H, W, 3): per prompt, a row of every 4th frame for each bundle, labelled."""
    labels = list(videos)
    n = min(SHEET_PROMPTS, min(len(v) for v in videos.values()))
    label_w = 150
    parts = []
    for i in range(n):
        rows = []
        for lab in labels:
            picks = videos[lab][i][::SHEET_EVERY]
            cells = [np.pad(np.kron(f, np.ones((scale, scale, 1), np.uint8)), ((0, gap), (0, gap), (0, 0)), constant_values=255) for f in picks]
            strip = np.concatenate(cells, axis=1)
            name = _text_strip(lab[:24], label_w, strip.shape[0])
            rows.append(np.concatenate([name, strip], axis=1))
        width = rows[0].shape[1]
        parts.append(_text_strip(f"{prompts[i]}  (every {SHEET_EVERY}th frame)"[: width // 6], width, 16))
        parts.extend(rows)
        parts.append(np.full((gap * 2, width, 3), 255, np.uint8))
    return np.concatenate(parts, axis=0)


def _html(report: dict, table_md: str, plots: list[str], sheet: str | None, grid: list[str], note: str | None) -> str:
    def md_to_html(md: str) -> str:
        rows = [r.strip().strip("|").split("|") for r in md.strip().splitlines() if not r.startswith("|---")]
        head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    s = report["settings"]
    comp_rows = []
    for e in report["bundles"][1:]:  # the reference against itself is identical everywhere
        for c, v in e["components"].items():
            sq = ", ".join(f"{k} {_fmt(x, '.1f')}" for k, x in v["sqnr_db"].items())
            comp_rows.append(f"<tr><td>{html.escape(e['label'])}</td><td>{c}</td><td>{v['precision']}</td><td>{v['inputs']}</td><td>{html.escape(sq)}</td></tr>")
    figs = "".join(f'<figure><img src="{p}" alt="{p}"><figcaption>{p}</figcaption></figure>' for p in plots)
    vids = "".join(f'<source src="{g}" type="video/{g.rsplit(".", 1)[1]}">' for g in grid)
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report["definitions"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kinema compare: {html.escape(report['reference'])}</title>
<style>body{{font-family:sans-serif;margin:16px;max-width:1300px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:3px 6px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:6px}}img{{max-width:100%}}</style></head><body>
<h1>kinema compare</h1>
<p>Reference <b>{html.escape(report['reference'])}</b>; {len(s['prompts'])} prompt(s) x {len(s['seeds'])} seed(s),
{s['frames']} frames {s['width']}x{s['height']}, {s['steps']} {s['sampler']} steps, guidance {s['guidance']:g};
per-step and per-graph figures over the first {s['detail_prompts']} prompt(s). Same prompts, seeds and initial noise for every bundle.</p>
{f'<p><b>{html.escape(note)}</b></p>' if note else ''}
<h2>Summary</h2>{md_to_html(table_md)}
<h2>Plots</h2>{figs or '<p>(no plots)</p>'}
<h2>Contact sheet</h2>{f'<img src="{sheet}" alt="contact sheet">' if sheet else '<p>(none)</p>'}
<h2>Side-by-side videos</h2>{f'<video controls loop autoplay muted>{vids}</video>' if grid else '<p>(none)</p>'}
<h2>Per graph SQNR on recorded inputs</h2><table><tr><th>bundle</th><th>graph</th><th>precision</th><th>inputs</th><th>SQNR dB</th></tr>{''.join(comp_rows)}</table>
<h2>Definitions</h2><ul>{defs}</ul>
<p><a href="report.json">report.json</a> · <a href="report.md">report.md</a></p>
</body></html>
"""


def check_report_dir(out: str | Path, overwrite: bool = False) -> Path:
    """The report folder, checked before any work: new, empty, or (with overwrite) an earlier report."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; give a folder for the report")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"-o {out}: folder exists and is not empty; choose another or pass --overwrite")
        if not (out / "report.json").is_file():
            raise InputError(f"-o {out}: not an earlier compare report (no report.json); refusing to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"-o {out}: folder {parent} does not exist")
    return out


def write_report(report: dict, videos: dict[str, list[np.ndarray]], out: str | Path, *, overwrite: bool = False) -> Path:
    """Write report.json, report.md, PNG plots, contact_sheet.png, video_grid.{webm,mp4} and index.html into `out`, atomically."""
    out = check_report_dir(out, overwrite)
    table = markdown_table(report)

    def fill(stage: Path) -> None:
        note = None
        plots, sheet, grid = [], None, []
        if _pictures_available():
            plots = _plots(report, stage)
            prompts = report["settings"]["prompts"]
            from PIL import Image

            sheet = "contact_sheet.png"
            Image.fromarray(contact_sheet(videos, prompts)).save(stage / sheet)
            from kinema.runtime.video.core import Video

            frames = video_grid(videos, prompts)
            fps = float(report["settings"]["fps"])
            for name in ("video_grid.webm", "video_grid.mp4"):
                Video(frames, fps).save(stage / name, scale=1)
                grid.append(name)
        else:
            note = "pictures skipped: matplotlib and Pillow are not installed (pip install 'kinema[export]')"
        full = {**report, "files": {"plots": plots, "contact_sheet": sheet, "videos": grid}, "note": note}
        (stage / "report.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        md = f"# kinema compare\n\nReference: {report['reference']}\n\n{table}\n" + "".join(f"- {k}: {v}\n" for k, v in report["definitions"].items())
        (stage / "report.md").write_text(md, encoding="utf-8")
        (stage / "index.html").write_text(_html(full, table, plots, sheet, grid, note), encoding="utf-8")

    return write_folder(out, fill)


__all__ = [
    "CompareSettings",
    "check_comparable",
    "check_report_dir",
    "compare_bundles",
    "compare_generators",
    "contact_sheet",
    "load_prompt_file",
    "markdown_table",
    "video_grid",
    "video_metrics",
    "write_report",
]
