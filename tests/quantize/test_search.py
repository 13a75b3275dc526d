"""Mixed-precision search on the random tiny bundle: it meets its target, measured again independently, and is smaller.

The search runs through `kinema quantize --target-psnr` on 2 prompts x 3 steps x 5
frames; its result is regenerated with the plain runtime and its PSNR recomputed here.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from kinema.quantize import search
from kinema.quantize.compare import CompareSettings
from kinema.quantize.recipes import Mixed, recipe_from_dict
from kinema.runtime import Pipeline, load_bundle
from kinema.runtime import cli

GEN = dict(steps=3, frames=5)
SETTINGS = CompareSettings(("a red ball bouncing on a white background", "a green star spinning on a black background"), seeds=(0,), generate=GEN)
TARGET = 30.0


@pytest.fixture(scope="module")
def searched(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "mixed"
    lines = []
    return search.search_recipe(tiny_bundle, out, TARGET, settings=SETTINGS, threads=1, progress=lines.append), lines


def test_units_are_blocks_text_encoder_and_decoders(tiny_bundle):
    units = search.units_of(load_bundle(tiny_bundle))
    assert [u.name for u in units] == ["blocks.0", "blocks.1", "text_encoder", "decoders"]  # DiT "test" size: depth 2


@pytest.mark.slow
def test_search_meets_target_measured_independently(searched, tiny_bundle):
    out, lines = searched
    b = load_bundle(out)
    q = b.manifest["quantization"]
    s = q["search"]
    assert s["target_psnr_db"] == TARGET and s["measured_psnr_db"] >= TARGET
    assert any(lvl != "fp32" for lvl in s["chosen"].values())
    # the written bundle, regenerated with the plain runtime, meets the target against fp32
    ref, mine = Pipeline.from_bundle(tiny_bundle), Pipeline.from_bundle(out)
    sq = n = 0.0
    for p in SETTINGS.prompts:
        a = ref.generate(p, seed=0, **GEN).frames.astype(np.float64)
        o = mine.generate(p, seed=0, **GEN).frames.astype(np.float64)
        sq += float(np.sum((a - o) ** 2))
        n += a.size
    psnr = 10 * math.log10(255.0**2 * n / sq) if sq else math.inf
    print(f"\nsearched recipe {s['chosen']}: {psnr:.2f} dB (manifest {s['measured_psnr_db']}), graphs {s['graph_bytes']} of {s['fp32_graph_bytes']} bytes")
    assert psnr == pytest.approx(s["measured_psnr_db"], abs=0.01)
    # the stopping rule held on the development videos; the held-out prompts are others, recomputed here
    dev, held = s["development"], s["held_out"]
    assert dev["videos"] == len(SETTINGS.prompts) and search.meets(dev["per_video_psnr_db"], TARGET)
    assert held["videos"] == search.HELDOUT_PROMPTS and not set(held["prompts"]) & set(SETTINGS.prompts)
    per = []
    for p in held["prompts"]:
        a = ref.generate(p, seed=0, **GEN).frames.astype(np.float64)
        o = mine.generate(p, seed=0, **GEN).frames.astype(np.float64)
        e = float(np.mean((a - o) ** 2))
        per.append(99.0 if e == 0 else min(99.0, 10 * math.log10(255.0**2 / e)))
    assert held["per_video_psnr_db"] == pytest.approx(per, abs=1e-3)
    assert held["mean_psnr_db"] == pytest.approx(np.mean(per), abs=1e-3)
    assert dev["pooled_psnr_db"] == pytest.approx(s["measured_psnr_db"], abs=2e-3)  # the same pooled figure two ways
    print(f"development mean {dev['mean_psnr_db']} dB (bound {dev['lower_bound_psnr_db']}), held out mean {held['mean_psnr_db']} dB")
    graphs = sum(c["bytes"] for c in b.components.values())
    assert graphs == s["graph_bytes"] < s["fp32_graph_bytes"]
    # every unit was measured alone at each of its lower precisions
    assert set(s["sensitivity"]) == {"blocks.0", "blocks.1", "text_encoder", "decoders"}
    assert set(s["sensitivity"]["blocks.0"]) == {"int8", "int4"} and set(s["sensitivity"]["decoders"]) == {"fp16"}
    # the recorded recipe replays as the recipe the search chose
    rec = q["recipe"]
    replay = recipe_from_dict({"name": rec["name"], "components": rec["components"]})
    chosen = search.recipe_for(s["chosen"], load_bundle(tiny_bundle))
    assert all(replay.for_component(c) == chosen.for_component(c) for c in b.components)
    den = replay.for_component("denoiser")
    if isinstance(den, Mixed):
        kinds = {n.op_type for n in onnx.load(str(b.component_path("denoiser"))).graph.node}
        assert ("MatMulNBits" in kinds) == bool(den.weight_only_groups) and ("MatMulInteger" in kinds) == bool(den.dynamic_groups)


def test_stopping_rule_is_a_t_lower_bound():
    from kinema.quantize.metrics import mean_lower_bound, t95

    assert t95(1) == pytest.approx(math.tan(0.45 * math.pi), abs=1e-4)  # Cauchy: closed form
    assert t95(2) == pytest.approx(0.9 * math.sqrt(2 / (4 * 0.95 * 0.05)), abs=1e-4)  # t(2): closed form
    draws = np.random.default_rng(0).standard_t(40, 2_000_000)
    assert t95(40) == pytest.approx(np.quantile(draws, 0.95), abs=0.01)  # the expansion beyond the table
    v = [30.0, 32.0, 34.0, 36.0]
    assert mean_lower_bound(v) == pytest.approx(33.0 - t95(3) * np.std(v, ddof=1) / 2)
    assert mean_lower_bound([31.0]) is None
    assert search.meets([36.0], 35.0) and not search.meets([40.0, 30.0], 34.0)  # mean 35 but a wide bound
    assert search.meets([35.5, 35.6, 35.4, 35.5], 35.0)


def test_greedy_on_hand_made_sensitivities():
    """Most bytes per added squared error first; a move that would break the predicted limit is not taken."""
    units = [search.Unit("blocks.0", "block"), search.Unit("blocks.1", "block"), search.Unit("decoders", "decoders")]
    fp32 = {"sq": 0.0, "saved": 0}
    sens = {
        "blocks.0": {"fp32": fp32, "int8": {"sq": 10.0, "saved": 300}, "int4": {"sq": 40.0, "saved": 400}},
        "blocks.1": {"fp32": fp32, "int8": {"sq": 50.0, "saved": 300}, "int4": {"sq": 500.0, "saved": 400}},
        "decoders": {"fp32": fp32, "fp16": {"sq": 1.0, "saved": 100}},
    }
    config, moves = search.greedy(units, sens, limit=100.0)
    # bytes per error: decoders fp16 100, blocks.0 int8 30, then blocks.1 int8 6 before blocks.0 int4 (+100 B / +30 = 3.3);
    # blocks.1 int4 alone (500) is over the limit; total 1 + 40 + 50 = 91 <= 100
    assert moves == [("decoders", "fp32", "fp16"), ("blocks.0", "fp32", "int8"), ("blocks.1", "fp32", "int8"), ("blocks.0", "int8", "int4")]
    assert config == {"blocks.0": "int4", "blocks.1": "int8", "decoders": "fp16"} and search.predicted(sens, config) == 91.0
    config, moves = search.greedy(units, sens, limit=0.5)
    assert moves == [] and set(config.values()) == {"fp32"}
    r = search.recipe_for(config | {"blocks.1": "int4", "decoders": "fp16"}, type("B", (), {"manifest": {"tools": {"float_groups": {"denoiser": ["ada"], "text_encoder_int8": []}}}, "path": "b"})())
    den = r.for_component("denoiser")
    assert isinstance(den, Mixed) and den.weight_only_groups == ("blocks.1",) and den.dynamic_groups == () and "ada" in den.nodes_to_exclude
    assert r.for_component("decoder_step").precision == "fp16" and r.for_component("text_encoder").precision == "fp32"


@pytest.mark.slow
def test_unreachable_target_exits_2_one_line_nothing_written(tiny_bundle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    # fewer steps/frames than the bundle's defaults are not CLI options of quantize: one default prompt is used
    assert cli.main(["quantize", str(tiny_bundle), "--target-psnr", "99", "--search-prompts", "1", "--heldout-prompts", "0", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target PSNR 99 dB cannot be met" in err[0] and "lower --target-psnr" in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert cli.main(["quantize", str(tiny_bundle), "--target-psnr", "5", "-o", str(out)]) == 2
    assert "from 10 to 99" in capsys.readouterr().err
    assert cli.main(["quantize", str(tiny_bundle), "--recipe", "int8", "--target-psnr", "30", "-o", str(out)]) == 2
    assert "one of --recipe" in capsys.readouterr().err
    assert cli.main(["quantize", str(tiny_bundle), "--target-psnr", "30", "--search-prompts", "0", "-o", str(out)]) == 2
    assert "--search-prompts 0 must be from 1 to 256" in capsys.readouterr().err
