"""`kinema animate / extend / connect / edit` and long `generate`, run as a user runs them: outputs and exit-2 errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bundle_copies import clone, replace_bytes
from kinema.runtime.video.core import Video, read_metadata, read_video
from test_cli import assert_empty, assert_one_line_error, run_cli

FAST = ["--steps", "1", "--guidance", "1"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(d / "image.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("CMYK").save(d / "cmyk.jpg")
    Video(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8), 8.0).save(d / "clip.mp4", scale=1)
    (d / "notes.txt").write_text("not a picture")
    return d


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_animate_prints_the_fit_and_writes_the_clip(tiny_bundle, media, outdir):
    r = run_cli("animate", media / "image.png", "--prompt", "a red ball", "--frames", "5", *FAST, "--bundle", tiny_bundle, "-o", outdir / "a.mp4")
    assert r.returncode == 0, r.stderr
    fit = [line for line in r.stderr.splitlines() if "--fit crop" in line]
    assert fit == [f"kinema: {media / 'image.png'} 80x48 -> 64x64 (--fit crop: scaled to 107x64, centre cut to 64x64)"]
    frames, _ = read_video(outdir / "a.mp4")
    assert frames.shape[0] == 5 and read_metadata(outdir / "a.mp4")["mode"] == "animate"


def test_generate_past_one_window_streams_every_frame(tiny_bundle, outdir):
    r = run_cli("generate", "a red ball", "--frames", "41", *FAST, "--bundle", tiny_bundle, "-q", "-o", outdir / "long.mp4")
    assert r.returncode == 0, r.stderr
    assert read_video(outdir / "long.mp4")[0].shape[0] == 41
    assert sorted(p.name for p in outdir.iterdir()) == ["long.mp4"]


@pytest.mark.slow
def test_extend_connect_edit(tiny_bundle, media, outdir):
    clip = media / "clip.mp4"
    for args, name, n in (
        (["extend", clip, "--seconds", "1"], "e.mp4", 9 + 8),
        (["extend", clip, "--seconds", "1", "--backward"], "b.mp4", 9 + 9),
        (["connect", clip, clip], "c.mp4", 9 + 8 + 9),
        (["edit", clip, "--strength", "0.5"], "d.mp4", 9),
    ):
        r = run_cli(*args, "--prompt", "a red ball", *FAST, "--bundle", tiny_bundle, "-q", "-o", outdir / name)
        assert r.returncode == 0, r.stderr
        assert read_video(outdir / name)[0].shape[0] == n, args


@pytest.mark.slow
def test_edit_past_one_window_streams_every_frame(tiny_bundle, outdir):
    r = run_cli("generate", "a red ball", "--frames", "41", *FAST, "--bundle", tiny_bundle, "-q", "-o", outdir / "long.mp4")
    assert r.returncode == 0, r.stderr
    r = run_cli("edit", outdir / "long.mp4", "--strength", "0.6", "--prompt", "a blue square", *FAST, "--bundle", tiny_bundle, "-o", outdir / "edited.mp4")
    assert r.returncode == 0, r.stderr
    assert "window 3/3" in r.stderr
    assert read_video(outdir / "edited.mp4")[0].shape[0] == 41
    assert sorted(p.name for p in outdir.iterdir()) == ["edited.mp4", "long.mp4"]


ERRORS = [
    (["animate", "{m}/missing.png"], ["no such image file"]),
    (["animate", "{m}/notes.txt"], ["cannot read", "not an image"]),
    (["animate", "{m}/cmyk.jpg"], ["CMYK", "8-bit RGB"]),
    (["animate", "{m}/image.png", "--fit", "stretch"], ["'stretch'", "crop, pad"]),
    (["extend", "{m}/notes.txt", "--seconds", "1"], ["cannot read"]),
    (["edit", "{m}/clip.mp4", "--strength", "0"], ["strength=0.0", "(0, 1]"]),
    (["edit", "{m}/clip.mp4", "--strength", "1.5"], ["strength=1.5", "(0, 1]"]),
    (["extend", "{m}/clip.mp4", "--seconds", "0"], ["seconds=0.0", "> 0"]),
    (["extend", "{m}/clip.mp4", "--seconds", "301"], ["seconds=301", "300 s"]),
    (["generate", "a red ball", "--seconds", "-1"], ["seconds=-1.0"]),
]


@pytest.mark.parametrize("args,needles", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_bad_input_is_one_line_and_exit_2(tiny_bundle, media, outdir, args, needles):
    argv = [a.format(m=media) for a in args]
    if argv[0] != "generate":
        argv += ["--prompt", "a red ball"]
    r = run_cli(*argv, "--bundle", tiny_bundle, "-o", outdir / "x.mp4")
    assert_one_line_error(r, *needles)
    assert_empty(outdir)


def test_a_bundle_that_cannot_condition_on_its_last_frames(tiny_bundle, media, outdir, tmp_path):
    copy = clone(tiny_bundle, tmp_path / "bundle")
    m = json.loads((copy / "manifest.json").read_text())
    m["conditioning"]["known_frames"] = ["first", "leading"]
    replace_bytes(copy / "manifest.json", json.dumps(m).encode())
    r = run_cli("extend", media / "clip.mp4", "--seconds", "1", "--backward", "--prompt", "x", "--bundle", copy, "-o", outdir / "x.mp4")
    assert_one_line_error(r, "cannot extend a video backward", "last latent frames")
    r = run_cli("generate", "x", "--loop", "--bundle", copy, "-o", outdir / "x.mp4")
    assert_one_line_error(r, "cannot make loops")
    assert_empty(outdir)
