"""Per-group sensitivity in the compare report: every group of every quantized graph, values recomputed another way.

The groups are checked against the PyTorch modules the tiny bundle was exported from
(its DiT blocks and its text encoder's layers); one value against ONNX Runtime's
quantize_dynamic called directly on the fp32 graph with only that block's MatMuls
selected, run on inputs recorded again from the reference; the HTML page in headless
Chromium, which must show every group and load every chart.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from kinema.quantize.calibration import RecordingPipeline
from kinema.quantize.compare import CompareSettings, compare_bundles, write_report
from kinema.quantize.compare.sensitivity import group_name, module_path
from kinema.quantize.quantize_bundle import quantize_bundle
from kinema.runtime.bundle.load import load_bundle

GEN = dict(steps=3, frames=5)
PROMPT = "a red ball bouncing on a white background"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tiny_bundle, tmp_path_factory):
    int8 = quantize_bundle(tiny_bundle, tmp_path_factory.mktemp("sens") / "int8", "int8")
    settings = CompareSettings((PROMPT,), None, seeds=(0,), detail_prompts=1, generate=GEN)
    # the denoiser only: the text encoder's 90 MB graph takes about 20 s (its layers are checked in the benchmark's report)
    rep, videos = compare_bundles(tiny_bundle, [int8], settings, threads=1, cost=False, sensitivity=("denoiser",))
    out = write_report(rep, videos, tmp_path_factory.mktemp("sensrep") / "report")
    return rep, out


def test_every_group_of_every_quantized_graph_is_listed(report, tiny_models, tiny_bundle):
    import onnx

    from kinema.quantize.compare.sensitivity import groups_of
    from kinema.quantize.recipes import DynamicInt8

    rep, out = report
    dit, _, text_encoder = tiny_models
    sens = rep["bundles"][1]["sensitivity"]
    assert rep["bundles"][0].get("sensitivity") is None  # the reference is not measured against itself
    assert set(sens) == {"denoiser"}
    # the int8 recipe keeps t_embed, ada, patch_embed, final and text_pool float: every other
    # quantized MatMul is inside a DiT block, so the groups are exactly the blocks
    assert {r["group"] for r in sens["denoiser"]["groups"]} == {f"dit.blocks.{i}" for i in range(len(dit.blocks))}
    # the text encoder's groups (not measured here) are its PyTorch layers, `intermediate` kept float
    graph = onnx.load(str(tiny_bundle / "text_encoder.onnx"), load_external_data=False).graph
    layers = len(text_encoder.bert.encoder.layer)
    assert list(groups_of(graph, DynamicInt8(nodes_to_exclude=("intermediate",)), "text_encoder.onnx")) == [f"bert.encoder.layer.{i}" for i in range(layers)]
    for s in sens.values():
        vals = [r["only_quantized_sqnr_db"] for r in s["groups"]]
        assert vals == sorted(vals)  # most sensitive first
        assert all(math.isfinite(v) and v > 5 for v in vals)
        assert s["inputs"] > 0
    # with two blocks, "only block 0 quantized" and "only block 1 kept float" are the same graph
    den = {r["group"]: r for r in sens["denoiser"]["groups"]}
    if len(den) == 2:
        a, b = den["dit.blocks.0"], den["dit.blocks.1"]
        assert a["only_quantized_sqnr_db"] == b["only_float_sqnr_db"]
    md = (out / "report.md").read_text()
    for s in sens.values():
        for r in s["groups"]:
            assert f"| {r['group']} | {r['nodes']} |" in md
    saved = json.loads((out / "report.json").read_text())
    assert [p for p in saved["files"]["plots"] if p.startswith("sensitivity_")] == ["sensitivity_1_denoiser.png"]


def test_an_unknown_graph_is_one_line_exit_2_before_work(tiny_bundle, tmp_path, capsys):
    from kinema.runtime import cli

    code = cli.main(["compare", str(tiny_bundle), str(tiny_bundle), "-o", str(tmp_path / "r"), "--sensitivity", "decoder", "--no-cost"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--sensitivity decoder" in err[0] and "denoiser" in err[0]
    assert not (tmp_path / "r").exists()


def _sqnr(ref: list[np.ndarray], other: list[np.ndarray]) -> float:
    sig = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in ref)
    noise = sum(float(np.sum((np.asarray(r, np.float64) - np.asarray(o, np.float64)) ** 2)) for r, o in zip(ref, other))
    return 10 * math.log10(sig / noise)


def test_one_value_recomputed_with_ort_directly(report, tiny_bundle, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rep, _ = report
    ref = load_bundle(tiny_bundle)
    pipe = RecordingPipeline(ref, record=["denoiser"], threads=1)  # the reference run the report recorded, again
    pipe.run(pipe.check_inputs(PROMPT, seed=0, **GEN))
    feeds = pipe.recorded["denoiser"]
    src = ref.component_path("denoiser")
    graph = onnx.load(str(src)).graph
    chosen = [n.name for n in graph.node if n.op_type == "MatMul" and (m := module_path(n)) and group_name(m) == "dit.blocks.0" and ".ada" not in m]
    assert chosen
    dst = tmp_path / "block0.onnx"
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=False, weight_type=QuantType.QInt8, nodes_to_quantize=chosen)

    def run(path):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in s.get_inputs()}
        return [s.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds]

    expect = _sqnr(run(src), run(dst))
    got = {r["group"]: r for r in rep["bundles"][1]["sensitivity"]["denoiser"]["groups"]}["dit.blocks.0"]["only_quantized_sqnr_db"]
    assert got == pytest.approx(expect, abs=0.011)  # the report rounds to 0.01 dB


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs the distribution's package)")
def test_report_page_shows_every_group_in_a_browser(report):
    from playwright.sync_api import sync_playwright

    rep, out = report
    sens = rep["bundles"][1]["sensitivity"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        tab.goto((out / "index.html").resolve().as_uri())
        sections = tab.locator("section.sensitivity")
        assert sections.count() == len(sens)
        for comp, s in sens.items():
            sec = tab.locator(f'section.sensitivity[data-graph="{comp}"]')
            shown = sec.locator("tbody tr td:first-child").all_inner_texts()
            assert shown == [r["group"] for r in s["groups"]]
            img = sec.locator("img")
            img.wait_for()
            tab.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
            assert img.evaluate("i => i.naturalWidth") > 300
            assert sec.is_visible()
        browser.close()
