"""The manifest's tools section: what the exporter writes there is what quantize uses, and a bundle without one gets generic fallbacks."""

from __future__ import annotations

import json
import logging
import shutil

import onnx
import pytest

from kinema.export import tiny_manifest as tiny
from kinema.runtime.bundle.load import load_bundle
from kinema.runtime.errors import BundleError, InputError
from kinema.quantize.bundle_tools import GENERIC_PROMPTS, spread, tools_from_manifest, tools_of
from kinema.quantize.compare import CompareSettings
from kinema.quantize.plan import plan
from kinema.quantize.quantize_bundle import bound_recipe
from kinema.quantize.recipes import BundleRecipe, DynamicInt8, bind_float_groups, group_ref, preset


def test_the_tiny_export_writes_its_tools(tiny_bundle):
    t = json.loads((tiny_bundle / "manifest.json").read_text())["tools"]
    assert sorted(t) == ["calibration_prompts", "float_groups", "probe_prompts"]
    assert t["float_groups"] == tiny.FLOAT_GROUPS and t["probe_prompts"] == tiny.PROBE_PROMPTS
    assert all("objects" in r for r in t["calibration_prompts"])  # ShapesBench rows: compare scores them
    tools = tools_of(load_bundle(tiny_bundle, verify_hashes=False))
    assert tools.declared and tools.float_groups["denoiser"] == tuple(tiny.FLOAT_GROUPS["denoiser"])


def test_a_preset_takes_the_float_groups_of_the_bundle(tiny_bundle):
    src = load_bundle(tiny_bundle, verify_hashes=False)
    recipe = bound_recipe(src, preset("int8"))
    assert recipe.for_component("denoiser").nodes_to_exclude == tuple(tiny.FLOAT_GROUPS["denoiser"])
    assert recipe == bound_recipe(src, preset("int8", "tiny"))  # the old signature, family not looked up
    assert recipe == preset("int8", tiny.FLOAT_GROUPS)  # groups given outright
    assert plan(src, recipe)["denoiser"].float_nodes


def test_a_bundle_without_tools_gets_generic_fallbacks(tiny_bundle, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["tools"]
    (old / "manifest.json").write_text(json.dumps(m))
    src = load_bundle(old, verify_hashes=False)
    tools = tools_of(src)
    assert not tools.declared and tools.float_groups == {} and tools.prompts(4) == list(GENERIC_PROMPTS)
    with caplog.at_level(logging.WARNING):
        recipe = bound_recipe(src, preset("int8"))
    assert "no \"tools\" section" in caplog.text and "'tiny'" in caplog.text
    assert recipe.for_component("denoiser").nodes_to_exclude == ()
    settings = CompareSettings.default(src, 2)
    assert settings.rows is None and settings.prompts == (GENERIC_PROMPTS[0], GENERIC_PROMPTS[-1])


def test_bad_tools_and_unknown_groups_are_named():
    with pytest.raises(BundleError, match="tools.float_groups.denoiser"):
        tools_from_manifest({"tools": {"float_groups": {"denoiser": "ada"}}})
    with pytest.raises(BundleError, match=r"calibration_prompts\[1\]"):
        tools_from_manifest({"tools": {"calibration_prompts": ["a cat", {"text": "no prompt key"}]}})
    r = BundleRecipe("x", {"denoiser": DynamicInt8(nodes_to_exclude=(group_ref("denoisr"), "ada"))})
    with pytest.raises(InputError, match="float group 'denoisr'.*its groups: denoiser"):
        bind_float_groups(r, {"denoiser": ("t_embed",)})
    assert spread(list(range(10)), 3) == [0, 4, 9] and spread([1, 2], 5) == [1, 2, 1, 2, 1]


def test_an_unbound_group_entry_is_named(tiny_bundle):
    from kinema.quantize.plan import resolve_nodes

    src = load_bundle(tiny_bundle, verify_hashes=False)
    g = onnx.load(str(src.component_path("denoiser")), load_external_data=False).graph
    with pytest.raises(InputError, match="never bound"):
        resolve_nodes(g, (group_ref("denoiser"),), "denoiser.onnx")
