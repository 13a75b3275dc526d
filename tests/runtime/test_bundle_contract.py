"""A bundle's manifest against its graphs and against itself, checked at load before any session opens.

The graphs' signatures are read from the protobuf by the runtime's own scanner; the
reference is the `onnx` package reading the same files.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from bundle_copies import clone, replace_bytes
from kinema.export.graph_checks import onnx_io_signature
from kinema.runtime.bundle.load import default_bundle_path, load_bundle
from kinema.runtime.bundle.scan import scan_model
from kinema.runtime.errors import BundleError
from test_cli import assert_one_line_error, run_cli


@pytest.fixture
def bundle(tmp_path):
    return clone(default_bundle_path(), tmp_path / "b")


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write(bundle, m: dict) -> None:
    replace_bytes(bundle / "manifest.json", json.dumps(m).encode())


def _swap_graph(bundle, component: str, source: str) -> None:
    """Put another graph's file in place of `component`'s, with the manifest's hash and size updated: only the signature is wrong."""
    m = _manifest(bundle)
    data = (bundle / m["components"][source]["file"]).read_bytes()
    replace_bytes(bundle / m["components"][component]["file"], data)
    m["components"][component].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    _write(bundle, m)


def test_the_scanner_reads_the_signatures_onnx_reads(tiny_bundle):
    for folder in (default_bundle_path(), tiny_bundle):
        m = _manifest(folder)
        for name, comp in m["components"].items():
            path = folder / comp["file"]
            _, inputs, outputs = scan_model(path)
            assert (inputs, outputs) == onnx_io_signature(path), f"{folder.name}/{name}"


def test_the_shipped_bundle_passes_every_check():
    load_bundle(default_bundle_path())


def test_a_graph_of_the_wrong_kind_with_a_correct_hash_exits_2_before_sampling(bundle, tmp_path):
    _swap_graph(bundle, "decoder_step", "decoder_prefix")
    out = tmp_path / "out.mp4"
    r = run_cli("generate", "a red ball", "--bundle", bundle, "-o", out)
    assert_one_line_error(r, "component decoder_step inputs do not match its graph", "cache_0")
    assert not out.exists() and list(tmp_path.iterdir()) == [bundle]


def test_a_swapped_denoiser_is_named(bundle):
    _swap_graph(bundle, "denoiser", "encoder")
    with pytest.raises(BundleError, match="component denoiser inputs do not match its graph"):
        load_bundle(bundle)


CASES = [
    # (what is edited, how, the message's words)
    ("dtype", lambda m: m["components"]["denoiser"]["inputs"][1].update(dtype="float16"),
     "component denoiser input 'timestep' is float32 in the graph, the manifest declares float16"),
    ("rank", lambda m: m["components"]["denoiser"]["inputs"][1].update(shape=["B", 1]),
     "component denoiser input 'timestep' has rank 1 in the graph"),
    ("fixed axis", lambda m: m["components"]["text_encoder"]["outputs"][0].update(shape=["B", "L", 512]),
     "'text_embeds' axis 2 is fixed to 384 in the graph, the manifest declares 512"),
    ("latent channels", lambda m: (m["latent"].update(channels=4), m.pop("preview", None)),
     "component denoiser input 'latents' axis 1 is 8, but latent.channels is 4"),
    ("cache input", lambda m: m["decoder"]["caches"][0].update(input="cache_9"),
     "decoder.caches input 'cache_9' is not an input of decoder_step"),
    ("cache output", lambda m: m["decoder"]["caches"][2].update(output="next_cache_1"),
     "decoder.caches names 'cache_2' / 'next_cache_1' twice"),
    ("dropped cache", lambda m: m["decoder"]["caches"].pop(),
     "component decoder_step wants input(s) 'cache_5' that the runtime never feeds"),
    ("prefix frames", lambda m: m["decoder"].update(prefix_latent_frames=2),
     "component decoder_prefix input 'latents' axis 2 is 1, but decoder.prefix_latent_frames is 2"),
    ("frame rule", lambda m: m["video"].update(frame_multiple=3, frame_offset=1),
     "video frame rule 3k+1 does not fit latent.temporal_compression 4"),
    ("default frames", lambda m: m["video"].update(frames=19),
     "video.frames = 19 does not follow the frame rule 4k+1"),
    ("default size", lambda m: m["video"].update(width=72),
     "video.width = 72 must be a multiple of 16 within [32, 128]"),
    ("size rule", lambda m: m["video"].update(size_multiple=4, min_side=32, height=64, width=64),
     "video.size_multiple = 4 is not a multiple of latent.spatial_compression = 8"),
    ("frames over the window", lambda m: m["video"].update(frames=37),
     "video.frames = 37 is more than video.max_frames = 33"),
    ("tiny fps", lambda m: m["video"].update(fps=0.001),
     "video.fps = 0.001 is outside [0.1, 240]"),
]


@pytest.mark.parametrize("edit,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_manifest_that_disagrees_with_its_graphs_or_itself_is_refused(bundle, edit, needle):
    m = _manifest(bundle)
    edit(m)
    _write(bundle, m)
    with pytest.raises(BundleError) as e:
        load_bundle(bundle)
    assert needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_duplicate_key_is_refused(bundle, tmp_path):
    text = (bundle / "manifest.json").read_text()
    assert text.count('"steps": ') == 1
    replace_bytes(bundle / "manifest.json", text.replace('"steps": ', '"steps": 4, "steps": ').encode())
    out = tmp_path / "out.mp4"
    r = run_cli("generate", "a red ball", "--bundle", bundle, "-o", out)
    assert_one_line_error(r, "manifest.json names 'steps' twice in one object")
    assert not out.exists()


def test_a_window_no_longer_than_the_overlap_cannot_go_on(bundle, tmp_path):
    """A window of 3 latent frames shares all 3 with the next: a long clip used to loop for ever."""
    m = _manifest(bundle)
    m["video"].update(max_frames=9, frames=9)
    _write(bundle, m)
    out = tmp_path / "long.mp4"
    r = run_cli("generate", "a red ball", "--bundle", bundle, "--seconds", "4", "-o", out, timeout=60)
    assert_one_line_error(r, "its window of 3 latent frames (video.max_frames = 9) is not longer than the 3 latent frames")
    assert not out.exists()


def test_a_tiny_fps_is_refused_before_work(tmp_path):
    out = tmp_path / "slow.mp4"
    r = run_cli("generate", "a red ball", "--fps", "0.001", "-o", out)
    assert_one_line_error(r, "fps=0.001 must be a number in [0.1, 240]")
    assert not out.exists()
