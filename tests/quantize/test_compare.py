"""compare: metrics against independent computations, the report on a tiny random bundle, and the exit-2 errors.

SSIM is checked against a PyTorch conv2d implementation of Wang et al. 2004 and against
the closed form for flat images; PSNR and the per-step figures against direct NumPy
formulas on the report's own videos and a re-run teacher-forced step.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.quantize import metrics
from kinema.quantize.compare import CompareSettings, compare_bundles, compare_generators, video_grid, video_metrics, write_report
from kinema.quantize.cost import bundle_bytes
from kinema.quantize.quantize_bundle import quantize_bundle
from kinema.runtime import Pipeline
from kinema.runtime import cli
from kinema.runtime.video.core import read_video

GEN = dict(steps=3, frames=5)
PROMPTS = ("a red ball bouncing on a white background", "a blue square moving left on a black background")


# ---------------------------------------------------------------------- metrics vs independent computations


def _torch_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (H, W) images with a Gaussian 11x11 sigma 1.5 window, valid region, via torch conv2d."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    a = torch.tensor(x, dtype=torch.float64)[None, None]
    b = torch.tensor(y, dtype=torch.float64)[None, None]
    f = lambda t: torch.nn.functional.conv2d(t, w)  # noqa: E731
    mx, my = f(a), f(b)
    sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean())


def test_ssim_matches_torch_and_closed_form():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 24, 20, 3)).astype(np.uint8)  # (T, H, W, 3)
    y = np.clip(x.astype(int) + rng.integers(-30, 31, x.shape), 0, 255).astype(np.uint8)
    ref = np.mean([_torch_ssim(x[t, :, :, c], y[t, :, :, c]) for t in range(3) for c in range(3)])
    assert metrics.video_ssim(x, y) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert 0.3 < ref < 0.99
    assert metrics.video_ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # flat images a and b: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert metrics.video_ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-12)


def test_psnr_sqnr_and_temporal_closed_forms():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] = 10  # MSE = 100 / 2 over the video
    assert metrics.psnr_db(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    assert metrics.psnr_db(a, a) == math.inf
    r = np.array([3.0, -4.0])
    assert metrics.sqnr_db(r, r + np.array([0.0, 0.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert metrics.psnr_db(r, r + 0.7) == pytest.approx(10 * math.log10(49 / 0.49))  # peak = range of the reference
    # frame differences: reference 0 -> 0, other 0 -> 10: diff error 10 everywhere
    assert metrics.temporal_psnr_db(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert metrics.frame_change(b) == 10.0


def test_video_metrics_and_compare_generators_on_synthetic_videos():
    rng = np.random.default_rng(1)
    ref = {(p, s): rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8) for p in ("x", "y") for s in (0, 1)}
    noisy = {k: np.clip(v.astype(int) + 3, 0, 255).astype(np.uint8) for k, v in ref.items()}
    out = compare_generators(lambda p, s: ref[p, s], {"same": lambda p, s: ref[p, s], "plus3": lambda p, s: noisy[p, s]}, ["x", "y"], seeds=(0, 1))
    same, plus3 = out["candidates"]["same"], out["candidates"]["plus3"]
    assert same["psnr_db"] is None and same["ssim"] == 1.0
    mse = np.mean([np.mean((ref[k].astype(float) - noisy[k]) ** 2) for k in ref])
    assert plus3["psnr_db"] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-4)
    assert plus3["videos"] == 4 and out["reference"]["adherence"] is None
    assert video_metrics(list(ref.values()), list(noisy.values()))["psnr_db"] == plus3["psnr_db"]


# ---------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory) -> Path:
    return quantize_bundle(tiny_bundle, tmp_path_factory.mktemp("cmp") / "int8", "int8")


@pytest.fixture(scope="module")
def compared(tiny_bundle, int8_bundle, tmp_path_factory):
    from kinema.models import shapes_bench

    rows = tuple(shapes_bench.load_prompts(shapes_bench.PROMPTS_PATH)[:2])
    settings = CompareSettings(tuple(r["prompt"] for r in rows), rows, seeds=(0,), detail_prompts=1, generate=GEN)
    report, videos = compare_bundles(tiny_bundle, [int8_bundle], settings, threads=1, cost=True, cost_repeats=1)
    out = write_report(report, videos, tmp_path_factory.mktemp("rep") / "report")
    return report, videos, out, settings


def test_compare_report_values_recomputed(compared, tiny_bundle, int8_bundle):
    report, videos, out, settings = compared
    ref, q = report["bundles"]
    assert ref["reference"] and ref["video"]["psnr_db"] is None and ref["components"]["denoiser"]["sqnr_db"]["prediction"] is None
    # the same prompt, seed and settings through the plain runtime give the same videos
    for label, path in ((ref["label"], tiny_bundle), (q["label"], int8_bundle)):
        pipe = Pipeline.from_bundle(path)
        for i, prompt in enumerate(settings.prompts):
            np.testing.assert_array_equal(videos[label][i], pipe.generate(prompt, seed=0, **GEN).frames)
    r, o = videos[ref["label"]], videos[q["label"]]
    mse = np.mean([(a.astype(float) - b) ** 2 for a, b in zip(r, o)])
    assert q["video"]["psnr_db"] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-3)
    assert q["video"]["ssim"] == pytest.approx(np.mean([metrics.video_ssim(a, b) for a, b in zip(r, o)]), abs=1e-5)
    print(f"\nint8 vs fp32 (random tiny bundle, 3 steps): video PSNR {q['video']['psnr_db']} dB, SSIM {q['video']['ssim']}")
    assert 20 < q["video"]["psnr_db"] < 80 and 0.5 < q["video"]["ssim"] < 1
    # teacher-forced step 0: the int8 denoiser on the reference's first x (the seeded noise) and text
    src = Pipeline.from_bundle(tiny_bundle)
    qp = Pipeline.from_bundle(int8_bundle)
    st = src.check_inputs(settings.prompts[0], seed=0, **GEN)
    text = src.encode_text([st.prompt, st.negative_prompt])
    x0, s0 = src.initial_noise(st), float(src.sigmas(st)[0])
    expect = metrics.psnr_db(src.denoiser(st, text)(x0, s0), qp.denoiser(st, text)(x0, s0))
    assert q["steps"]["teacher_forced_psnr_db"][0] == pytest.approx(expect, abs=1e-3)
    # free-running step 0: the same noise, but the int8 bundle's own (int8) text encoder
    free = metrics.psnr_db(src.denoiser(st, text)(x0, s0), qp.denoiser(st, qp.encode_text([st.prompt, st.negative_prompt]))(x0, s0))
    assert len(q["steps"]["free_running_psnr_db"]) == 3 and q["steps"]["free_running_psnr_db"][0] == pytest.approx(free, abs=1e-3)
    den = q["components"]["denoiser"]
    assert den["inputs"] == 3 and den["precision"] == "int8-dynamic" and 15 < den["sqnr_db"]["prediction"] < 80
    assert q["components"]["decoder_step"]["sqnr_db"]["frames"] is None  # fp32 in both: identical
    # ShapesBench adherence recomputed from the videos
    from kinema.models import shapes_bench

    adh = np.mean([shapes_bench.score_video(v, row)["adherence"] for v, row in zip(o, settings.rows)])
    assert q["adherence"] == pytest.approx(adh, abs=1e-4)


def test_compare_cost_and_files(compared, tiny_bundle):
    report, videos, out, settings = compared
    ref = report["bundles"][0]
    files = [p for p in Path(tiny_bundle).iterdir() if p.is_file() and p.name != "manifest.json"]
    assert ref["bytes"] == bundle_bytes(tiny_bundle) == sum(p.stat().st_size for p in files)
    for e in report["bundles"]:
        c = e["cost"]
        assert c["load_s"] > 0 and c["step_s"] > 0 and c["e2e_s"] > c["step_s"] and c["steps_timed"] == 2  # 3 steps: 2 intervals between callbacks
        assert c["peak_rss_mib"] > c["rss_after_imports_mib"] > 10  # the bundle's own sessions, in its own process
    assert json.loads((out / "report.json").read_text())["bundles"][1]["label"] == report["bundles"][1]["label"]
    page = (out / "index.html").read_text()
    for name in ("error_per_step.png", "size_latency_vs_psnr.png", "contact_sheet.png", "video_grid.webm"):
        assert (out / name).stat().st_size > 1000 and name in page, name
    frames, fps = read_video(out / "video_grid.webm")
    assert fps == 8.0 and frames.shape[0] == 5
    grid = video_grid(videos, settings.prompts)
    assert frames.shape[1:] == grid.shape[1:]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def _copy_with(tiny_bundle: Path, dst: Path, **changes) -> Path:
    shutil.copytree(tiny_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(changes)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _one_line_exit_2(argv, capsys, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err
    return err[0]


def test_compare_refuses_other_family_or_latent_before_work(tiny_bundle, tmp_path, capsys):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    fam = _copy_with(tiny_bundle, tmp_path / "fam", family="wan")
    lat = _copy_with(tiny_bundle, tmp_path / "lat", latent={**m["latent"], "spatial_compression": m["latent"]["spatial_compression"] * 2})
    out = tmp_path / "rep"
    _one_line_exit_2(["compare", str(tiny_bundle), str(fam), "-o", str(out)], capsys, "family 'wan'", "one family")
    _one_line_exit_2(["compare", str(tiny_bundle), str(lat), "-o", str(out)], capsys, "latent geometry differs")
    _one_line_exit_2(["compare", str(tiny_bundle), str(tiny_bundle), "-o", str(out), "--frames", "6"], capsys, "frames=6")
    assert not out.exists()


def test_quantize_recipe_file_naming_a_missing_node_exits_2(tiny_bundle, tmp_path, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"name": "mine", "components": {"denoiser": {"kind": "DynamicInt8", "nodes_to_exclude": ["ada", "blocks.9"]}}}))
    out = tmp_path / "q"
    _one_line_exit_2(["quantize", str(tiny_bundle), "--recipe", str(recipe), "-o", str(out)], capsys, "'blocks.9'", "not in denoiser.onnx")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_compare_imports_neither_torch_nor_onnx():
    """compare, its cost probe and the metrics run on a runtime-only install (plus matplotlib for pictures)."""
    import subprocess
    import sys

    code = "import sys, kinema.quantize.compare, kinema.quantize.cost; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnx', 'transformers', 'diffusers'}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


def _without_timing(report: dict) -> dict:
    out = json.loads(json.dumps(report))
    for b in out["bundles"]:
        b.pop("in_process_seconds_per_video", None)
        b.pop("cost", None)
    return out


def test_compare_on_the_batch_workers_is_the_sequential_run(tiny_bundle, int8_bundle):
    prompts = PROMPTS + ("a green triangle growing on a black background",)
    settings = CompareSettings(prompts, seeds=(0, 1), detail_prompts=1, generate=GEN)
    seq, seq_videos = compare_bundles(tiny_bundle, [int8_bundle], settings, threads=1, cost=False)
    par, par_videos = compare_bundles(tiny_bundle, [int8_bundle], settings, threads=1, cost=False, fan_out={"workers": 2, "threads": 1})
    assert _without_timing(par) == _without_timing(seq)
    for label in seq_videos:
        assert all(np.array_equal(a, b) for a, b in zip(seq_videos[label], par_videos[label]))
