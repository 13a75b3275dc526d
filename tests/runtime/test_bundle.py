"""runtime.bundle: load_bundle on a real exported bundle, and on tampered copies of it.

Every tampered copy is made with `clone` (hard links, so the 100 MB bundle is not copied
each time) and changed only through `replace_bytes` / `edit_manifest`, which unlink a
file before writing it: the session fixture's folder is never modified.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from kinema.runtime.sampling import samplers
from kinema.runtime.bundle.load import COMPONENTS_REQUIRED, FORMAT_NAME, FORMAT_VERSION, PREDICTION_TYPES, Bundle, VideoRules, load_bundle, sha256_file
from bundle_copies import clone, replace_bytes
from kinema.runtime.errors import BundleError, KinemaError

# ----------------------------------------------------------------------------- helpers


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def edit_manifest(bundle: Path, change) -> dict:
    m = read_manifest(bundle)
    change(m)
    replace_bytes(bundle / "manifest.json", json.dumps(m, indent=1).encode())
    return m


def entry_for(bundle: Path, rel: str) -> dict:
    p = bundle / rel
    return {"bytes": p.stat().st_size, "sha256": sha256_file(p)}


@pytest.fixture
def copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the fixture bundle, two folders below tmp_path (room for '../' targets)."""
    return clone(tiny_bundle, tmp_path / "outer" / "inner" / "bundle")


def load_error(bundle: Path, **kw) -> str:
    with pytest.raises(BundleError) as e:
        load_bundle(bundle, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(bundle) in msg or bundle.name in msg, msg
    return msg


# ----------------------------------------------------------------------------- the real bundle


def test_fixture_bundle_loads_with_its_rules(tiny_bundle):
    from kinema.export.tiny import TinyDefaults
    from kinema.models.tiny_vae import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION

    b = load_bundle(tiny_bundle)
    assert isinstance(b, Bundle)
    assert b.path == tiny_bundle.resolve()
    assert b.manifest["format"] == FORMAT_NAME and b.manifest["format_version"] == FORMAT_VERSION
    assert b.family == "tiny"
    assert b.digest == hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()

    d = TinyDefaults()
    v = b.video
    assert isinstance(v, VideoRules)
    assert (v.fps, v.frames, v.height, v.width) == (d.fps, d.frames, d.height, d.width)
    assert (v.size_multiple, v.min_side, v.max_side, v.max_frames) == (d.size_multiple, d.min_side, d.max_side, d.max_frames)
    assert (v.frame_multiple, v.frame_offset) == (TEMPORAL_COMPRESSION, 1)  # 4k+1
    # the defaults obey the bundle's own rules
    assert (v.frames - v.frame_offset) % v.frame_multiple == 0 and v.frames <= v.max_frames
    assert v.width % v.size_multiple == 0 and v.min_side <= v.width <= v.max_side
    assert v.height % v.size_multiple == 0 and v.min_side <= v.height <= v.max_side

    s = b.sampler
    assert (s["steps"], s["guidance"], s["shift"], s["sampler"]) == (d.steps, d.guidance, d.shift, d.sampler)
    assert s["prediction"] in PREDICTION_TYPES and s["sampler"] in samplers.SAMPLERS
    assert b.latent["spatial_compression"] == SPATIAL_COMPRESSION
    assert b.latent["temporal_compression"] == TEMPORAL_COMPRESSION
    assert 1 <= b.tokenizer["max_length"] and isinstance(b.tokenizer["pad_id"], int)

    for name in COMPONENTS_REQUIRED:
        assert b.has(name)
        path = b.component_path(name)
        assert path.is_file() and path.parent == b.path
        assert path.stat().st_size == b.components[name]["bytes"]
    assert not b.has("nonexistent")


def test_an_unknown_video_key_is_refused_by_its_path(copy):
    """A misspelt or unknown field is an error naming it, never silently ignored (a typo would take a default)."""
    edit_manifest(copy, lambda m: m["video"].update(preview_fps=4.0))
    assert "manifest: video.preview_fps is not a field of this format" in load_error(copy)


def test_verify_hashes_false_skips_sha256_but_not_size(copy):
    den = copy / "denoiser.onnx"
    data = bytearray(den.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    replace_bytes(den, bytes(data))
    assert "sha256" in load_error(copy)
    load_bundle(copy, verify_hashes=False)  # no hash check: loads

    replace_bytes(den, bytes(data[:-1]))
    msg = load_error(copy, verify_hashes=False)
    assert "denoiser.onnx" in msg and str(len(data) - 1) in msg and str(len(data)) in msg


# ----------------------------------------------------------------------------- tampering


def test_not_a_folder(tmp_path):
    assert "not a folder" in load_error(tmp_path / "nope")


def test_missing_manifest(copy):
    (copy / "manifest.json").unlink()
    msg = load_error(copy)
    assert "manifest.json" in msg and "missing" in msg


@pytest.mark.parametrize(
    "text",
    ['{"format": "kinema-bundle",', "\xff\xfe", "[" * 100_000],
    ids=["truncated", "not-utf8", "nested-too-deep"],
)
def test_invalid_json(copy, text):
    replace_bytes(copy / "manifest.json", text.encode("latin-1"))
    msg = load_error(copy)
    assert "manifest.json" in msg and "not valid JSON" in msg


def test_manifest_not_an_object(copy):
    replace_bytes(copy / "manifest.json", b"[1, 2]")
    assert "JSON object" in load_error(copy)


def test_wrong_format_name(copy):
    edit_manifest(copy, lambda m: m.update(format="not-kinema"))
    msg = load_error(copy)
    assert "'not-kinema'" in msg and FORMAT_NAME in msg


def test_version_too_new(copy):
    edit_manifest(copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    msg = load_error(copy)
    assert f"format_version {FORMAT_VERSION + 1}" in msg and "newer" in msg


@pytest.mark.parametrize("version", [0, "1", 1.0, True, None])
def test_version_not_a_positive_integer(copy, version):
    edit_manifest(copy, lambda m: m.update(format_version=version))
    assert "format_version" in load_error(copy)


def test_missing_component_entry(copy):
    edit_manifest(copy, lambda m: m["components"].pop("decoder_step"))
    msg = load_error(copy)
    assert "manifest: components.decoder_step is missing" in msg


def test_unknown_component(copy):
    edit_manifest(copy, lambda m: m["components"].update(upscaler=m["components"]["denoiser"]))
    assert "manifest: components.upscaler is not a component of this format" in load_error(copy)


def test_missing_component_file(copy):
    (copy / "denoiser.onnx").unlink()
    msg = load_error(copy)
    assert "'denoiser.onnx'" in msg and "missing" in msg


def test_bad_size_in_manifest(copy):
    size = (copy / "denoiser.onnx").stat().st_size
    edit_manifest(copy, lambda m: m["components"]["denoiser"].update(bytes=size + 1))
    msg = load_error(copy)
    assert "denoiser.onnx" in msg and str(size) in msg and str(size + 1) in msg


def test_truncated_file(copy):
    den = copy / "decoder_prefix.onnx"
    data = den.read_bytes()
    replace_bytes(den, data[: len(data) // 2])
    msg = load_error(copy)
    assert "decoder_prefix.onnx" in msg and str(len(data) // 2) in msg and str(len(data)) in msg


def test_wrong_sha256_file_flipped(copy):
    den = copy / "denoiser.onnx"
    data = bytearray(den.read_bytes())
    data[-10] ^= 0x01
    replace_bytes(den, bytes(data))
    msg = load_error(copy)
    assert "denoiser.onnx" in msg and "sha256" in msg


def test_wrong_sha256_in_manifest(copy):
    edit_manifest(copy, lambda m: m["tokenizer"].update(sha256="0" * 64))
    msg = load_error(copy)
    assert "tokenizer.json" in msg and "sha256" in msg


def _point_component_at(copy: Path, component: str, rel: str, real: Path) -> None:
    """Make `component` name `rel` (which reaches `real`, a valid copy with matching size and hash)."""
    shutil.copyfile(copy / f"{component}.onnx", real)
    edit_manifest(copy, lambda m: m["components"][component].update(file=rel, **entry_for(real.parent, real.name)))


@pytest.mark.parametrize("component", ["denoiser", "encoder"])
def test_path_escape_with_dotdot(copy, component):
    _point_component_at(copy, component, "../x.onnx", copy.parent / "x.onnx")
    msg = load_error(copy)
    assert "'../x.onnx'" in msg and "escapes" in msg and component in msg


def test_path_escape_inside_then_out(copy):
    (copy / "sub").mkdir()
    _point_component_at(copy, "denoiser", "sub/../../x.onnx", copy.parent / "x.onnx")
    assert "'sub/../../x.onnx'" in load_error(copy)


def test_absolute_path(copy, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    _point_component_at(copy, "denoiser", str(target), target)
    msg = load_error(copy)
    assert repr(str(target)) in msg and "escapes" in msg


@pytest.mark.parametrize("name", ["", "a\\b.onnx", "x\x00.onnx", 7, None])
def test_invalid_file_names(copy, name):
    edit_manifest(copy, lambda m: m["components"]["denoiser"].update(file=name))
    assert "component denoiser" in load_error(copy) or "components.denoiser.file" in load_error(copy)


def test_tokenizer_path_escape(copy):
    shutil.copyfile(copy / "tokenizer.json", copy.parent / "tokenizer.json")
    edit_manifest(copy, lambda m: m["tokenizer"].update(file="../tokenizer.json"))
    msg = load_error(copy)
    assert "tokenizer" in msg and "'../tokenizer.json'" in msg


def test_symlink_pointing_outside(copy):
    outside = copy.parent / "outside.onnx"
    shutil.copyfile(copy / "denoiser.onnx", outside)  # same bytes: size and hash still match
    (copy / "denoiser.onnx").unlink()
    (copy / "denoiser.onnx").symlink_to(outside)
    msg = load_error(copy)
    assert "'denoiser.onnx'" in msg and "outside the bundle" in msg
    # a symlinked folder that leaves the bundle is caught the same way
    (copy / "denoiser.onnx").unlink()
    (copy / "linked").symlink_to(copy.parent, target_is_directory=True)
    edit_manifest(copy, lambda m: m["components"]["denoiser"].update(file="linked/outside.onnx"))
    assert "'linked/outside.onnx'" in load_error(copy)


def test_symlink_inside_the_bundle_is_fine(copy):
    (copy / "graphs").mkdir()
    shutil.copyfile(copy / "denoiser.onnx", copy / "graphs" / "den.onnx")
    (copy / "denoiser.onnx").unlink()
    (copy / "denoiser.onnx").symlink_to(copy / "graphs" / "den.onnx")
    load_bundle(copy)


def _drop(path: tuple[str, ...]):
    def change(m):
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]

    return change


@pytest.mark.parametrize(
    "path, expected",
    [
        (("family",), "manifest: family is missing"),
        (("components",), "manifest: components is missing"),
        (("components", "denoiser", "sha256"), "manifest: components.denoiser.sha256 is missing"),
        (("components", "denoiser", "bytes"), "manifest: components.denoiser.bytes is missing"),
        (("components", "text_encoder", "file"), "manifest: components.text_encoder.file is missing"),
        (("components", "denoiser", "inputs"), "manifest: components.denoiser.inputs is missing"),
        (("video",), "manifest: video is missing"),
        (("video", "fps"), "video.fps is missing"),
        (("video", "max_frames"), "video.max_frames is missing"),
        (("latent", "channels"), "latent.channels is missing"),
        (("tokenizer", "max_length"), "tokenizer.max_length is missing"),
        (("sampler", "prediction"), "sampler.prediction is missing"),
        (("decoder", "caches"), "decoder.caches is missing"),
        (("files",), "manifest: files is missing"),
    ],
)
def test_missing_required_field(copy, path, expected):
    edit_manifest(copy, _drop(path))
    assert expected in load_error(copy)


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("video", "fps", math.nan, "video.fps = nan"),
        ("video", "fps", 1000.0, "video.fps = 1000.0"),
        ("video", "frames", 17.5, "video.frames = 17.5"),
        ("video", "max_side", 10**6, "max_side"),
        ("video", "max_frames", 10**6, "max_frames"),
        ("sampler", "prediction", "x0", "'x0'"),
        ("sampler", "guidance", math.inf, "sampler.guidance = inf"),
        ("tokenizer", "max_length", 10**9, "tokenizer.max_length"),
        ("latent", "channels", 0, "latent.channels"),
    ],
)
def test_bad_values(copy, section, key, value, expected):
    edit_manifest(copy, lambda m: m[section].update({key: value}))
    assert expected in load_error(copy)


def test_bundle_error_is_a_kinema_error():
    assert issubclass(BundleError, KinemaError)


# ----------------------------------------------------------------------------- external data


def _graph_with_external(loc: str, data_path: Path | None = None):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, external_data_helper, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    external_data_helper.set_external_data(w, location=loc, offset=0, length=16)
    w.ClearField("raw_data")
    # the encoder's signature, so that only the external data is at issue
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["B", "F", "FH", "FW", 3])
    y = helper.make_tensor_value_info("latents", TensorProto.FLOAT, ["B", 8, "t", "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["latents"])], "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if data_path is not None:
        data_path.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return onnx, model


def _install_graph(copy: Path, model, rel: str, external: list[str] | None = None) -> None:
    """Put `model` at `rel` as the encoder component, with correct bytes/sha256 (and external_data entries)."""
    path = copy / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_bytes(path, model.SerializeToString())

    def change(m):
        enc = m["components"]["encoder"]
        enc.update(file=rel, **entry_for(copy, rel))
        enc.pop("external_data", None)
        if external is not None:
            enc["external_data"] = [{"file": f, **entry_for(copy, f)} for f in external]

    edit_manifest(copy, change)


@pytest.mark.parametrize("loc", ["../../secret.bin", "/etc/passwd", "a/../../../secret.bin"])
def test_external_data_outside_the_bundle(copy, loc):
    secret = copy.parent.parent / "secret.bin"  # what '../../secret.bin' reaches from the bundle
    _, model = _graph_with_external(loc, secret)
    _install_graph(copy, model, "evil.onnx")
    msg = load_error(copy)
    assert "component encoder external data" in msg and repr(loc) in msg


def test_external_data_resolved_against_the_graph_folder(copy):
    """ONNX Runtime resolves a location against the graph's own folder: graphs/evil.onnx naming
    '../../secret.bin' reaches outside the bundle (bundle/graphs/../../secret.bin)."""
    _, model = _graph_with_external("../../secret.bin", copy.parent / "secret.bin")
    _install_graph(copy, model, "graphs/evil.onnx")
    msg = load_error(copy)
    assert "'graphs/../../secret.bin'" in msg and "escapes" in msg


def test_external_data_not_listed_in_manifest(copy):
    _, model = _graph_with_external("encoder.onnx.data", copy / "encoder.onnx.data")
    _install_graph(copy, model, "encoder2.onnx")
    msg = load_error(copy)
    assert "'encoder.onnx.data'" in msg and "does not list" in msg


def test_external_data_listed_with_hash_loads(copy):
    _, model = _graph_with_external("encoder.onnx.data", copy / "encoder.onnx.data")
    _install_graph(copy, model, "encoder2.onnx", external=["encoder.onnx.data"])
    b = load_bundle(copy)
    assert b.components["encoder"]["external_data"][0]["file"] == "encoder.onnx.data"
    # the listed data file is hash-checked like any other
    replace_bytes(copy / "encoder.onnx.data", b"\x00" * 16)
    msg = load_error(copy)
    assert "encoder.onnx.data" in msg and "sha256" in msg


def test_fixture_bundle_untouched_by_the_tampering_above(tiny_bundle):
    """The copies were hard links; had any test written through one, the fixture would now fail its hashes."""
    load_bundle(tiny_bundle, verify_hashes=True)


def test_a_graph_swapped_after_the_check_is_refused_when_opened(copy):
    from kinema.runtime import Pipeline

    pipe = Pipeline(load_bundle(copy))
    pipe.session("text_encoder")  # unchanged: opens
    # another valid graph put in the denoiser's place between the check and its first use
    replace_bytes(copy / "denoiser.onnx", (copy / "decoder_step.onnx").read_bytes())
    with pytest.raises(BundleError) as e:
        pipe.session("denoiser")
    msg = str(e.value)
    assert "\n" not in msg and "denoiser.onnx" in msg and "changed after the bundle was checked" in msg
    assert "denoiser" not in pipe._sessions
    load_error(copy)  # and loading it again names the mismatch


@pytest.mark.parametrize("change", ["rewrite", "remove"])
def test_a_graph_rewritten_in_place_or_removed_after_the_check_is_refused(copy, change):
    bundle = load_bundle(copy)
    bundle.check_unchanged("decoder_step")
    path = copy / "decoder_step.onnx"
    if change == "rewrite":
        data = bytearray(path.read_bytes())
        data[-10] ^= 0x01
        replace_bytes(path, bytes(data))
    else:
        path.unlink()
    with pytest.raises(BundleError, match="decoder_step.onnx changed after the bundle was checked"):
        bundle.check_unchanged("decoder_step")
    bundle.check_unchanged("denoiser")  # the others are untouched


def test_a_tokenizer_rewritten_after_the_check_is_refused_when_first_used(copy):
    from kinema.runtime import Pipeline

    pipe = Pipeline(load_bundle(copy))
    replace_bytes(copy / "tokenizer.json", (copy / "tokenizer.json").read_bytes())  # same bytes, another file
    with pytest.raises(BundleError, match="tokenizer.json changed after the bundle was checked"):
        pipe.tokenizer()
