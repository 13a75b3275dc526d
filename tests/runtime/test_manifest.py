"""The typed manifest: strict parsing with the key path in one line, exit code 2 before any graph opens,
and the serialiser writing back what the parser reads."""

from __future__ import annotations

import json

import pytest

from bundle_copies import clone, replace_bytes
from kinema.runtime.bundle.load import default_bundle_path
from kinema.runtime.bundle.manifest import parse_manifest, to_dict
from test_cli import assert_one_line_error, run_cli


def _edit(d: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value


CASES = [
    ("sampler.stepz", 20, "sampler.stepz is not a field"),  # unknown key (a typo of steps)
    ("vidoe", {}, "vidoe is not a field"),
    ("video.fps", "8", "video.fps = '8' is not a number"),  # wrong type
    ("decoder.caches", {}, "decoder.caches = {} is not a list"),
    ("latent.channels", KeyError, "latent.channels is missing"),  # missing field
    ("sampler", KeyError, "sampler is missing"),
    ("sampler.steps", 0, "sampler.steps = 0 is outside [1, 1000]"),  # out of range
    ("tokenizer.max_length", 10**6, "tokenizer.max_length = 1000000 is outside"),
    ("sampler.prediction", "x0", "sampler.prediction = 'x0' is not one of"),
]


@pytest.mark.parametrize("path,value,needle", CASES, ids=[c[0] for c in CASES])
def test_a_bad_manifest_exits_2_naming_the_key_path(tmp_path, path, value, needle):
    bundle = clone(default_bundle_path(), tmp_path / "b")
    m = json.loads((bundle / "manifest.json").read_text())
    _edit(m, path, value)
    replace_bytes(bundle / "manifest.json", json.dumps(m).encode())
    out = tmp_path / "out.mp4"
    r = run_cli("generate", "a red ball", "--bundle", bundle, "-o", out)
    assert_one_line_error(r, needle)
    assert not out.exists()


def test_an_epsilon_model_needs_its_training_schedule():
    m = json.loads((default_bundle_path() / "manifest.json").read_text())
    m["sampler"]["prediction"] = "epsilon"
    with pytest.raises(Exception, match="sampler.vp is missing"):
        parse_manifest(m)
    m["sampler"]["vp"] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    assert parse_manifest(m).sampler.vp.beta_end == 0.012


def test_the_serialiser_writes_back_what_the_parser_reads(tiny_bundle):
    for folder in (default_bundle_path(), tiny_bundle):
        raw = json.loads((folder / "manifest.json").read_text())
        typed = parse_manifest(raw)
        written = to_dict(typed)
        assert parse_manifest(written) == typed
        _assert_within(raw, written, "")  # every value read is written back; only format defaults are added


def _assert_within(raw, written, path):
    if isinstance(raw, dict):
        for k, v in raw.items():
            assert k in written, f"{path}.{k} dropped"
            _assert_within(v, written[k], f"{path}.{k}")
    elif isinstance(raw, list):
        assert len(raw) == len(written), path
        for i, (a, b) in enumerate(zip(raw, written)):
            _assert_within(a, b, f"{path}[{i}]")
    else:
        assert raw == written and type(raw) is type(written) or (isinstance(raw, int) and isinstance(written, float) and raw == written), path
