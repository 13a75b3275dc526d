"""Image and video prompts: Pillow mode policy, fit policies against Pillow done another way, fps resampling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kinema.runtime import InputError
from kinema.runtime.video.inputs import fit_clip, fit_image, read_clip, read_image
from kinema.runtime.video.core import Video


def _banded(w=160, h=120) -> np.ndarray:
    """Red left band, blue right band, a smooth green ramp in between."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)[None]
    img[:, :20, 0] = 255
    img[:, -20:, 2] = 255
    return img


def test_crop_equals_pillow_crop_then_resize():
    img = _banded()
    out = fit_image(img, 64, 64, "crop")
    # 160x120 -> cover 64x64: scale 64/120; keep the centre 120x120 of the source
    ref = np.asarray(Image.fromarray(img).crop((20, 0, 140, 120)).resize((64, 64), Image.Resampling.BICUBIC))
    assert out.frames.shape == (1, 64, 64, 3)
    # inside; the outermost columns differ: resizing with a box lets the bicubic support read
    # the source pixels just outside the cut, where cropping first repeats the edge pixel
    assert np.abs(out.frames[0, :, 1:-1].astype(int) - ref[:, 1:-1]).max() <= 1
    assert out.frames[0, :, 1:, 0].max() <= 1 and out.frames[0, :, 0, 0].max() <= 20  # the red band was cut away
    assert "--fit crop" in out.note and "160x120" in out.note and "\n" not in out.note


def test_pad_equals_pillow_resize_with_black_bars():
    img = _banded()
    out = fit_image(img, 64, 64, "pad").frames[0]
    ref = np.asarray(Image.fromarray(img).resize((64, 48), Image.Resampling.BICUBIC))
    assert np.array_equal(out[8:56], ref)
    assert out[:8].max() == 0 and out[56:].max() == 0  # 8 black rows above and below


def test_no_note_when_the_size_already_fits():
    img = _banded(64, 48)
    out = fit_image(img, 64, 48)
    assert out.note is None and np.array_equal(out.frames[0], img)


def test_unknown_fit_policy():
    with pytest.raises(InputError, match="'stretch'"):
        fit_image(_banded(), 64, 64, "stretch")


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "1"])
def test_8bit_modes_are_converted(tmp_path, mode):
    img = _banded(32, 32)
    path = tmp_path / "x.png"
    Image.fromarray(img).convert(mode).save(path)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (32, 32, 3)
    assert np.array_equal(got, np.asarray(Image.fromarray(img).convert(mode).convert("RGB")))


def test_alpha_is_composited_over_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, 0, 3] = 255  # opaque
    rgba[1, 1, 3] = 128  # half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert tuple(got[0, 0]) == (200, 100, 50)
    assert tuple(got[2, 2]) == (0, 0, 0)  # fully transparent -> black
    assert np.abs(got[1, 1].astype(int) - np.array([100, 50, 25])).max() <= 1


@pytest.mark.parametrize(
    "mode,ext,needle",
    [("CMYK", "jpg", "CMYK"), ("I;16", "png", "16-bit"), ("I", "tif", "32-bit integer"), ("F", "tif", "32-bit float")],
)
def test_unsupported_modes_are_refused(tmp_path, mode, ext, needle):
    path = tmp_path / f"x.{ext}"
    base = Image.fromarray(_banded(16, 16))
    (base.convert(mode) if mode in ("CMYK", "I", "F") else Image.fromarray(np.full((16, 16), 40000, np.uint16))).save(path)
    assert Image.open(path).mode == mode
    with pytest.raises(InputError) as e:
        read_image(path)
    assert needle in str(e.value) and "8-bit" in str(e.value) and "\n" not in str(e.value)


def test_unreadable_images(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "text.png")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:2000])  # header intact, pixel data cut
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="no such image file"):
        read_image(tmp_path / "missing.png")


def test_fps_resampling_takes_the_frame_on_screen():
    frames = np.zeros((24, 8, 8, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(24)[:, None, None] * 10  # frame k has red = 10k
    out = fit_clip(frames, 24.0, 8, 8, 8.0)
    # output time i/8 s shows input frame 3i; 24 frames last 1 s = 8 output frames
    assert [int(f[0, 0, 0]) // 10 for f in out.frames] == [0, 3, 6, 9, 12, 15, 18, 21]
    assert "24 -> 8 fps" in out.note
    up = fit_clip(frames[:4], 4.0, 8, 8, 8.0)  # 4 fps -> 8 fps: every frame twice
    assert [int(f[0, 0, 0]) // 10 for f in up.frames] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_read_clip_from_a_file_fits_every_frame(tmp_path):
    frames = np.repeat(_banded(80, 48)[None], 5, axis=0)
    Video(frames, 8.0).save(tmp_path / "c.webm", scale=1)
    out = read_clip(tmp_path / "c.webm", 32, 32, 8.0, "crop")
    assert out.frames.shape == (5, 32, 32, 3)
    assert "80x48" in out.note and "fps" in out.note
    with pytest.raises(InputError, match="longer than 3 frames"):
        read_clip(tmp_path / "c.webm", 32, 32, 8.0, "crop", max_frames=3)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="cannot read"):
        read_clip(tmp_path / "bad.mp4", 32, 32, 8.0)
