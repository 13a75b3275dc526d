"""fp32_reference: which fp32 bundle the precision benchmarks start from."""

from __future__ import annotations

import json

from kinema.export import tiny
from kinema.runtime.bundle.load import default_bundle_path


def test_a_given_bundle_is_used_as_it_is(tmp_path):
    assert tiny.fp32_reference(tmp_path / "mine", tmp_path / "work") == tmp_path / "mine"


def test_a_quantized_built_in_bundle_means_one_fp32_export_per_work_folder(tmp_path, monkeypatch):
    builtin_quantized = "quantization" in json.loads((default_bundle_path() / "manifest.json").read_text())
    calls = []

    def fake_export(out, overwrite=False):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "manifest.json").write_text("{}")
        return out

    monkeypatch.setattr(tiny, "export_tiny", fake_export)
    first = tiny.fp32_reference(None, tmp_path)
    second = tiny.fp32_reference(None, tmp_path)
    if builtin_quantized:
        assert first == second == tmp_path / "fp32-export" and calls == [tmp_path / "fp32-export"]
    else:
        assert first == second == default_bundle_path() and calls == []


def test_an_fp32_built_in_bundle_is_its_own_reference(tiny_bundle, tmp_path, monkeypatch):
    import kinema.runtime.bundle.load as bundle_mod

    monkeypatch.setattr(bundle_mod, "default_bundle_path", lambda: tiny_bundle)  # the random-init fp32 test bundle
    monkeypatch.setattr(tiny, "export_tiny", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no export expected")))
    assert tiny.fp32_reference(None, tmp_path) == tiny_bundle
