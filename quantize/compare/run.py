"""Running a comparison: every bundle generates the same prompts from the same noise; the errors against the reference.

See the package docstring for what is measured; metrics.py holds the numbers, report.py writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.load import Bundle, load_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.pipeline import Pipeline

from kinema.quantize import metrics
from kinema.quantize.calibration import RecordingPipeline
from kinema.quantize.compare.metrics import adherence, component_sqnr, finite, video_metrics
from kinema.quantize.compare.sensitivity import bundle_sensitivity
from kinema.quantize.compare.settings import CompareSettings, check_comparable
from kinema.quantize.cost import bundle_bytes, measure_cost

COMPONENTS = ("text_encoder", "denoiser", "decoder_prefix", "decoder_step")
GRID_VIDEOS = 4  # prompts shown in the side-by-side video grid


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

    def mean_adherence(vids):
        if rows is None:
            return None
        return round(float(np.mean([adherence(v, rows[i]) for v, (i, _, _) in zip(vids, jobs)])), 4)

    ref_v, ref_s = run_all(reference)
    out = {"reference": {"seconds_per_video": ref_s, "adherence": mean_adherence(ref_v), "frame_change": round(float(np.mean([metrics.frame_change(v) for v in ref_v])), 4)}, "candidates": {}}
    for name, gen in candidates.items():
        vids, secs = run_all(gen)
        out["candidates"][name] = {**video_metrics(ref_v, vids), "adherence": mean_adherence(vids), "seconds_per_video": secs}
    return out


def _component_outputs(pipe: Pipeline, name: str, feeds: list[dict]) -> list[list[np.ndarray]]:
    s = pipe.session(name)
    outs = [o.name for o in s.get_outputs()]
    inputs = {i.name for i in s.get_inputs()}
    return [s.run(outs, {k: v for k, v in f.items() if k in inputs}) for f in feeds]


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


@dataclass
class _Reference:
    """What the reference bundle left for the others to be measured against."""

    pipe: RecordingPipeline
    runs: list[_Run]
    outputs: dict[str, list[list[np.ndarray]]]  # per component: its outputs on the recorded feeds
    text: dict[tuple, tuple]  # per detail job: (text embeddings, mask) of the prompt and its negative prompt
    adherence: list[float | None]


@dataclass(frozen=True)
class _Jobs:
    """The (prompt index, prompt, seed) runs of a comparison, and those compared step by step."""

    all: list[tuple[int, str, int]]
    detail: list[tuple[int, str, int]]
    generate: Mapping
    rows: tuple[dict, ...] | None

    def row(self, job) -> dict | None:
        return self.rows[job[0]] if self.rows else None


def _fanned(b: Bundle, jobs: _Jobs, fan_out: dict | None) -> dict:
    """{job: _Run} of the jobs not compared step by step, made on the batch workers when `fan_out` is given, else {}."""
    if not fan_out:
        return {}
    from kinema.runtime.batch.dispatch import map_tasks
    from kinema.runtime.request import Request

    todo = [j for j in jobs.all if j not in jobs.detail]
    tasks = [{"key": str(k), "mode": "frames", "request": Request(prompt=p, seed=s, **jobs.generate).to_dict()} for k, (_, p, s) in enumerate(todo)]
    made: dict = {}

    def on_result(r: dict) -> None:
        if r.get("error"):
            raise InputError(f"compare: a worker failed on {b.name}: {r['error']}")
        made[todo[int(r["key"])]] = _Run(r["frames"], [], [], [], r["seconds"])

    map_tasks(str(b.path), tasks, on_result, **fan_out)
    return made


def _reference(b: Bundle, comps: list[str], jobs: _Jobs, threads: int | None, fan_out: dict | None = None) -> _Reference:
    """Run the reference: its videos, its trajectories on the detail jobs, and every graph's feeds recorded there."""
    pipe = RecordingPipeline(b, record=comps, threads=threads)
    made = _fanned(b, jobs, fan_out)
    runs: list[_Run] = []
    for job in jobs.all:
        pipe.recording = job in jobs.detail
        runs.append(made[job] if job in made else _run(pipe, job[1], job[2], jobs.generate, keep_steps=job in jobs.detail))
    pipe.recording = False
    outputs = {c: _component_outputs(pipe, c, pipe.recorded[c]) for c in comps}
    gen = jobs.generate
    text = {job: pipe.encode_text([job[1], pipe.check_inputs(job[1], **gen).negative_prompt]) for job in jobs.detail}
    adh = [adherence(r.frames, jobs.row(job)) for r, job in zip(runs, jobs.all)]
    return _Reference(pipe, runs, outputs, text, adh)


def _step_errors(pipe: Pipeline, ref: _Reference, runs: list[_Run], jobs: _Jobs) -> dict:
    """Per step: free-running (own trajectory) and teacher-forced (reference trajectory) PSNR of the denoised latent."""
    free, forced = [], []
    for job, ref_run in zip(jobs.all, ref.runs):
        if job not in jobs.detail:
            continue
        run = runs[jobs.all.index(job)]
        free.append([metrics.psnr_db(r, o) for r, o in zip(ref_run.denoised, run.denoised)])
        st = pipe.check_inputs(job[1], seed=job[2], **jobs.generate)
        model = pipe.denoiser(st, ref.text[job])
        forced.append([metrics.psnr_db(d, model(x, s)) for x, s, d in zip(ref_run.x, ref_run.sigmas, ref_run.denoised)])
    return {
        "sigmas": ref.runs[jobs.all.index(jobs.detail[0])].sigmas,
        "free_running_psnr_db": [finite(float(np.mean(col))) for col in zip(*free)],
        "teacher_forced_psnr_db": [finite(float(np.mean(col))) for col in zip(*forced)],
    }


def _component_errors(b: Bundle, pipe: Pipeline, ref: _Reference, comps: list[str], is_ref: bool) -> dict:
    """Per component: the reference's recorded feeds through this bundle's graph, SQNR of each output."""
    out = {}
    recorded = ref.pipe.recorded
    for c in comps:
        if not b.has(c):
            continue
        outs = [o.name for o in pipe.session(c).get_outputs()]
        other_out = ref.outputs[c] if is_ref else _component_outputs(pipe, c, recorded[c])
        out[c] = {"precision": b.components[c].get("precision", "fp32"), "inputs": len(recorded[c]), "sqnr_db": component_sqnr(ref.outputs[c], other_out, outs, recorded[c])}
    return out


def _entry(label: str, b: Bundle, pipe: Pipeline, runs: list[_Run], ref: _Reference, jobs: _Jobs, comps: list[str], is_ref: bool) -> dict:
    """One bundle's row of the report (cost is added later, in fresh processes)."""
    adh = ref.adherence if is_ref else [adherence(r.frames, jobs.row(job)) for r, job in zip(runs, jobs.all)]
    q = b.manifest.get("quantization")
    return {
        "label": label,
        "path": str(b.path),
        "name": b.name,
        "reference": is_ref,
        "precision": {c: e.get("precision", "fp32") for c, e in b.components.items()},
        "recipe": b.manifest.get("quantization", {}).get("recipe", {}).get("name", "fp32" if not q else None),
        "bytes": bundle_bytes(b.path),
        "video": video_metrics([r.frames for r in ref.runs], [r.frames for r in runs]),
        "adherence": None if jobs.rows is None else round(float(np.mean(adh)), 4),
        "in_process_seconds_per_video": round(float(np.mean([r.seconds for r in runs])), 4),
        "steps": _step_errors(pipe, ref, runs, jobs),
        "components": _component_errors(b, pipe, ref, comps, is_ref),
    }


def compare_bundles(
    reference: str | Path,
    others: Sequence[str | Path],
    settings: CompareSettings,
    *,
    threads: int | None = None,
    cost: bool = True,
    cost_repeats: int = 2,
    progress: Callable[[str], None] | None = None,
    fan_out: dict | None = None,
    sensitivity: bool | Sequence[str] = False,
) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Run every bundle on the settings; returns (report, {label: videos of the first prompts}) for `write_report`.

    `sensitivity`: per quantized bundle, each graph group's SQNR with only it quantized and
    with only it kept in float (compare/sensitivity.py), under the entry's "sensitivity";
    True for every graph the bundle quantizes, or the graph names to measure.

    `fan_out` (map_tasks' workers, threads, ray): the videos not compared step by step are
    made on the batch runner's workers, the same requests the sequential run makes.
    """
    say = progress or (lambda msg: None)
    ref_b = load_bundle(reference)
    other_bs = [load_bundle(o) for o in others]
    check_comparable(ref_b, other_bs, settings)
    graphs = _sensitivity_graphs(ref_b, sensitivity)
    gen = settings.generate
    all_jobs = [(i, p, s) for i, p in enumerate(settings.prompts) for s in settings.seeds]
    n_detail = min(settings.detail_prompts, len(settings.prompts))
    jobs = _Jobs(all_jobs, [j for j in all_jobs if j[0] < n_detail], gen, settings.rows)
    used: set[str] = set()
    labels = [_label(b, used) for b in [ref_b, *other_bs]]

    say(f"reference {labels[0]}: {len(jobs.all)} videos")
    comps = [c for c in COMPONENTS if ref_b.has(c)]
    ref = _reference(ref_b, comps, jobs, threads, fan_out)
    grid = [k for k, job in enumerate(jobs.all) if job[2] == settings.seeds[0]][:GRID_VIDEOS]  # the first seed of each prompt
    videos = {labels[0]: [ref.runs[k].frames for k in grid]}
    entries = []
    for label, b in zip(labels, [ref_b, *other_bs]):
        is_ref = b is ref_b
        say(f"{label}: {len(jobs.all)} videos")
        if is_ref:
            runs, pipe = ref.runs, ref.pipe
        else:
            pipe = Pipeline(b, threads=threads)
            made = _fanned(b, jobs, fan_out)
            runs = [made.get((i, p, s)) or _run(pipe, p, s, gen, keep_steps=(i, p, s) in jobs.detail) for i, p, s in jobs.all]
            videos[label] = [runs[k].frames for k in grid]
        entries.append(_entry(label, b, pipe, runs, ref, jobs, comps, is_ref))
        if not is_ref:
            del pipe
            if graphs:
                say(f"{label}: per-group sensitivity")
                recorded = {c: f for c, f in ref.pipe.recorded.items() if c in graphs}
                entries[-1]["sensitivity"] = bundle_sensitivity(ref_b, b, recorded, ref.outputs, threads=threads, progress=say)

    if cost:
        for entry in entries:
            say(f"{entry['label']}: cost (fresh process)")
            entry["cost"] = measure_cost(entry["path"], settings.prompts[0], seed=settings.seeds[0], threads=threads, repeats=cost_repeats, **gen)
    return _report(ref_b, labels[0], settings, n_detail, threads, entries), videos


def _sensitivity_graphs(ref: Bundle, sensitivity: bool | Sequence[str]) -> tuple[str, ...]:
    """The graphs whose groups are measured: none, every compared graph (True), or those named, checked before any run."""
    if sensitivity is True:
        return COMPONENTS
    if not sensitivity:
        return ()
    names = tuple(sensitivity)
    bad = [n for n in names if n not in COMPONENTS or not ref.has(n)]
    if bad:
        have = ", ".join(c for c in COMPONENTS if ref.has(c))
        raise InputError(f"--sensitivity {' '.join(bad)}: not a graph compare measures in {ref.path}; choose from {have}")
    return names


def _report(ref_b: Bundle, label: str, settings: CompareSettings, n_detail: int, threads: int | None, entries: list[dict]) -> dict:
    st0 = Pipeline(ref_b).check_inputs(settings.prompts[0], seed=settings.seeds[0], **settings.generate)
    return {
        "reference": label,
        "settings": {
            "prompts": list(settings.prompts),
            "shapesbench_rows": settings.rows is not None,
            "seeds": list(settings.seeds),
            "detail_prompts": n_detail,
            "frames": st0.frames, "height": st0.height, "width": st0.width, "fps": st0.fps,
            "steps": st0.steps, "guidance": st0.guidance, "sampler": st0.sampler, "shift": st0.shift,
            "threads": threads,
        },
        "definitions": DEFINITIONS,
        "bundles": entries,
    }


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
    "sensitivity": "per graph a bundle quantizes: its recipe replayed on the reference's graph with only one group quantized (every other kept float), and with only that group kept float; worst output SQNR on the recorded inputs; sorted most sensitive first",
}


__all__ = ["COMPONENTS", "DEFINITIONS", "GRID_VIDEOS", "compare_bundles", "compare_generators"]
