"""The transformer-fusion pass: fused ops really appear, the video stays the same, bad sources are refused."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import onnx
import pytest

from kinema.quantize.fuse import fuse_bundle
from kinema.runtime import InputError, Pipeline


@pytest.fixture(scope="module")
def written(tiny_bundle, tiny_models, tmp_path_factory):
    """The test bundle with its denoiser traced as written: the decomposed RMSNorm and tanh GELU
    the pass rewrites. (Bundles export their DiT in the export form, whose opset-23 graph has
    nothing left to fuse.) Only the denoiser is traced again; the other graphs are copied."""
    from kinema.export.onnx_graph import export_components
    from kinema.export.tiny import denoiser_graph
    from kinema.quantize.apply import copy_graph
    from kinema.quantize.quantize_bundle import derived_spec
    from kinema.runtime.bundle.load import load_bundle
    from kinema.runtime.bundle.writer import file_entry, write_bundle

    src = load_bundle(tiny_bundle)

    def build(stage):
        comps = {}
        for name, entry in src.components.items():
            if name == "denoiser":
                export_components(stage, [denoiser_graph(tiny_models[0], forms=False)])  # as written: the model is left as it is
            else:
                copy_graph(src.path, entry["file"], stage)
            comps[name] = {**entry, **file_entry(stage, entry["file"])}
        return derived_spec(src, src.name, comps)

    return write_bundle(tmp_path_factory.mktemp("written") / "b", build)


@pytest.fixture(scope="module")
def fused(written, tmp_path_factory):
    return fuse_bundle(written, tmp_path_factory.mktemp("fused") / "b")


def test_the_export_form_has_nothing_left_to_fuse(tiny_bundle, tmp_path):
    rec = json.loads((fuse_bundle(tiny_bundle, tmp_path / "f") / "manifest.json").read_text())["optimization"]["transformer_fusions"]["denoiser"]
    assert rec["fused"] == {}


def test_rmsnorm_and_gelu_are_fused(written, fused):
    ops = collections.Counter(n.op_type for n in onnx.load(fused / "denoiser.onnx").graph.node)
    src = collections.Counter(n.op_type for n in onnx.load(written / "denoiser.onnx").graph.node)
    # DiT size "test": depth 2, each block one q and one k RMSNorm and one tanh GELU.
    assert ops["SimplifiedLayerNormalization"] == 4 and ops["FastGelu"] == 2
    assert src["Tanh"] == 2 and ops["Tanh"] == 0
    rec = json.loads((fused / "manifest.json").read_text())["optimization"]["transformer_fusions"]["denoiser"]
    assert rec["fused"] == {"SimplifiedLayerNormalization": 4, "FastGelu": 2}
    assert rec["max_abs_diff"] < 1e-4


def test_fused_bundle_makes_the_same_video(written, fused):
    a = Pipeline.from_bundle(written).generate("a red ball", steps=4, seed=1).frames
    b = Pipeline.from_bundle(fused).generate("a red ball", steps=4, seed=1).frames
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_quantized_source_is_refused(fused, tmp_path):
    q = tmp_path / "q"
    shutil.copytree(fused, q)
    m = json.loads((q / "manifest.json").read_text())
    m["quantization"] = {"recipe": "int8"}
    (q / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="quantized"):
        fuse_bundle(q, tmp_path / "out")
    assert not (tmp_path / "out").exists()
