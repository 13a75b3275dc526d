"""The invisible watermark: survives H.264 CRF 28, a 0.75x downscale and a left-right flip on a few clips, absent where not embedded,
costs little PSNR; its resampling matrices against closed forms; the visible mark stays in its corner."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from kinema.models import shapes_bench, shapes_world
from kinema.runtime.safety.marks import MarkRule
from kinema.runtime.safety import watermark as wm
from kinema.runtime.video.core import VideoWriter, read_metadata, read_video


def reencode(frames: np.ndarray, crf: int = 28, scale: float = 1.0) -> np.ndarray:
    h, w = frames.shape[1:3]
    ow, oh = round(w * scale) // 2 * 2, round(h * scale) // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt, s.options = ow, oh, "yuv420p", {"crf": str(crf)}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for p in s.encode(vf.reformat(width=ow, height=oh, format="yuv420p", interpolation="BICUBIC")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def written(frames: np.ndarray, path, *, mark: bool, native: bool = False) -> np.ndarray:
    with VideoWriter(path, 8.0, frames.shape[2], frames.shape[1], scale=1 if native else "auto", marks=MarkRule(watermark=mark, sign=False)) as w:
        w.write(frames)
    return read_video(path)[0]


CLIPS = [shapes_bench.ground_truth_generate(row, 0) for row in shapes_bench.load_prompts(
    shapes_bench.__file__.rsplit("/", 1)[0] + "/data/shapes_prompts.jsonl")[:40:10]]  # 4 clips, 17x64x64


@pytest.mark.parametrize("i", range(len(CLIPS)))
def test_survives_reencode_and_downscale(tmp_path, i):
    marked = written(CLIPS[i], tmp_path / "m.mp4", mark=True)
    plain = written(CLIPS[i], tmp_path / "p.mp4", mark=False)
    assert marked.shape == (17, 256, 256, 3)
    for attack in (lambda f: f, lambda f: reencode(f, 28), lambda f: reencode(f, 28, 0.75), lambda f: reencode(f[:, :, ::-1], 28)):
        m, p = wm.detect(attack(marked)), wm.detect(attack(plain))
        assert m.present and m.score > 2 * wm.THRESHOLD, m
        assert not p.present and abs(p.score) < wm.THRESHOLD / 2, p


def test_native_size_survives_reencode(tmp_path):
    marked = written(CLIPS[0], tmp_path / "m.mp4", mark=True, native=True)
    assert marked.shape[1:3] == (64, 64)
    assert wm.detect(reencode(marked, 28)).present
    assert wm.detect(reencode(marked, 28, 0.75)).present


def test_other_aspect_and_gif(tmp_path):
    spec = shapes_world.sample_spec(np.random.default_rng(3))
    clip = shapes_world.render(spec, 9, 48, 80, rng=1)
    for name in ("c.mp4", "c.gif"):
        with VideoWriter(tmp_path / name, 8.0, 80, 48, metadata={"generator": "kinema test"}, marks=MarkRule()) as w:  # kinema's clip: marked
            w.write(clip)
        assert read_metadata(tmp_path / name)["watermark"] == wm.NAME
        assert wm.detect(reencode(read_video(tmp_path / name)[0], 28, 0.75)).present, name


def test_psnr_cost_and_wrong_keys():
    ref = np.stack([VideoWriter("x.mp4", 8.0, 64, 64)._prepare(f) for f in CLIPS[1]])  # unmarked, 256x256
    marked = wm.embed(ref)
    mse = np.mean((marked.astype(np.float64) - ref) ** 2)
    assert 10 * np.log10(255**2 / mse) > 44.0  # measured 45-47 dB on ShapesWorld clips
    r = wm.residual(wm.mean_luma(marked))
    wrong = np.array([wm.score_residual(r, key=k) for k in range(1, 301)])
    assert wm.score_residual(r) > 10
    # The score is the larger of two near-independent standard normals (the template and its
    # mirror image): mean 1/sqrt(pi) = 0.56, standard deviation sqrt(1 - 1/pi) = 0.83.
    assert 0.35 < wrong.mean() < 0.8 and 0.6 < wrong.std() < 1.05, (wrong.mean(), wrong.std())
    assert (wrong > wm.THRESHOLD).sum() == 0
    flipped = wm.residual(wm.mean_luma(marked[:, :, ::-1]))
    assert wm.score_residual(flipped) == pytest.approx(wm.score_residual(r), rel=1e-9)  # detection commutes with the flip


def test_pattern_and_resampling_closed_forms():
    p = wm.pattern()
    assert p.shape == (wm.GRID, wm.GRID) and abs(p.mean()) < 1e-12 and abs(p.std() - 1) < 1e-12
    a = wm._area_matrix(32, 256)  # integer ratio: the mean of 8 pixels
    x = np.random.default_rng(0).standard_normal(256)
    np.testing.assert_allclose(a @ x, x.reshape(32, 8).mean(1), atol=1e-12)
    b = wm._area_matrix(32, 48)  # 1.5 pixels per cell: weights 1, 0.5 / 0.5, 1
    np.testing.assert_allclose(b[0, :2] * 1.5, [1.0, 0.5])
    np.testing.assert_allclose(b.sum(1), 1.0)
    m = wm._interp_matrix(64, 32)  # bilinear between cell centres: 0.25/0.75 weights, clamped edges
    np.testing.assert_allclose(m.sum(1), 1.0)
    np.testing.assert_allclose(m[1, :2], [0.75, 0.25])
    np.testing.assert_allclose(m[0, 0], 1.0)
    assert wm.strength_for(256, 256) == wm.STRENGTH and wm.strength_for(64, 80) == 2 * wm.STRENGTH


def test_visible_mark_only_touches_the_corner():
    frame = np.full((256, 256, 3), 200, np.uint8)
    out = wm.visible_mark(frame)
    changed = np.argwhere((out != frame).any(-1))
    assert changed.size and changed[:, 0].min() > 200 and changed[:, 1].min() > 200  # bottom-right corner only
    assert out.max() == 255 and out.min() == 90  # white glyphs on a darkened box (200 * 0.45)
    assert np.array_equal(wm.visible_mark(np.zeros((8, 8, 3), np.uint8)), np.zeros((8, 8, 3), np.uint8))  # too small: unchanged
