"""Video files: round trips through PyAV (and Pillow as an outside reader), atomic writes, bad inputs, the scaler."""

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from kinema.runtime.video import codecs as video_codecs
from kinema.runtime.video import core as video_module
from kinema.runtime.errors import InputError
from kinema.runtime.video.core import Video, VideoWriter, read_metadata, read_video, upscale

SETTINGS = {"prompt": "a red square moving right \u2014 then left", "seed": "7", "steps": "20", "bundle": "kinema-tiny"}


def moving_squares(t=17, h=64, w=64, soft=True):
    """(T, H, W, 3) uint8: a red and a green square moving over a dark blue background.

    soft=True gives the squares a 1-pixel ramp edge, like a decoder's output; hard-edged
    saturated squares lose ~28 dB PSNR to 4:2:0 chroma subsampling alone, before any codec.
    """
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        img = np.full((h, w, 3), (20.0, 20.0, 60.0))
        for cy, cx, colour in ((20 + i, 15 + 2 * i, (255, 40, 40)), (50, 50 - i, (30, 200, 90))):
            dist = np.maximum(abs(yy - cy), abs(xx - cx))
            mask = (np.clip(8.5 - dist, 0, 1) if soft else (dist <= 8).astype(float))[..., None]
            img = img * (1 - mask) + np.array(colour, float) * mask
        frames[i] = img.round()
    return frames


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- mp4 / webm ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext, codec", [(".mp4", "h264"), (".webm", "vp9")])
def test_mp4_webm_round_trip_native_and_upscaled(tmp_path, ext, codec):
    frames = moving_squares()
    clip = Video(frames, 8.0, dict(SETTINGS))
    native = clip.save(tmp_path / f"native{ext}", scale=1)
    auto = clip.save(tmp_path / f"auto{ext}")  # 64 -> x4 -> 256
    assert native == tmp_path / f"native{ext}" and auto.exists()

    for path, size, reference, min_psnr in (
        # measured: mp4 31.5 dB, webm 31.3 dB at 64x64; both 41.4 dB at 256x256
        (native, 64, frames, 30.0),
        (auto, 256, np.stack([upscale(f, 4) for f in frames]), 38.0),
    ):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            cc = stream.codec_context
            assert (cc.name, cc.pix_fmt, cc.width, cc.height) == (codec, "yuv420p", size, size)
            assert stream.average_rate == 8
            assert (cc.colorspace, cc.color_primaries, cc.color_trc) == (1, 1, 1)  # BT.709 tagged
            tags = {k.lower(): v for k, v in container.metadata.items()}
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        assert decoded.shape == (17, size, size, 3)
        assert psnr(decoded, reference) >= min_psnr
        assert json.loads(tags["comment"]) == SETTINGS
        assert read_metadata(path) == SETTINGS
        back, fps = read_video(path)
        np.testing.assert_array_equal(back, decoded)
        assert fps == 8.0
    if ext == ".mp4":  # +faststart: the index comes before the media data, so browsers start at once
        data = native.read_bytes()
        assert 0 < data.find(b"moov") < data.find(b"mdat")
    else:  # matroska keeps each setting as its own tag too
        with av.open(str(native)) as container:
            assert container.metadata["SEED"] == "7"


def test_odd_size_is_padded_for_yuv420(tmp_path):
    frames = moving_squares(t=3, h=33, w=63)
    path = Video(frames, 12.0).save(tmp_path / "odd.mp4", scale=1)
    back, fps = read_video(path)
    assert back.shape == (3, 34, 64, 3) and fps == 12.0
    assert psnr(back[:, :33, :63], frames) >= 30.0


# ---- gif ----------------------------------------------------------------------------------


def test_gif_palette_timing_loop_and_metadata(tmp_path):
    frames = moving_squares(soft=False)  # 3 flat colours: the palette holds them exactly
    path = Video(frames, 8.0, dict(SETTINGS)).save(tmp_path / "clip.gif", scale=1)
    back, fps = read_video(path)
    assert back.shape == (17, 64, 64, 3) and fps == 8.0
    assert np.abs(back.astype(int) - frames).mean() < 1.0

    upscaled, _ = read_video(Video(frames, 8.0).save(tmp_path / "big.gif"))
    reference = np.stack([upscale(f, 4) for f in frames])  # bicubic: many colours, dithered to 256
    assert upscaled.shape == (17, 256, 256, 3)
    assert np.abs(upscaled.astype(int) - reference).mean() < 2.0

    with Image.open(path) as im:  # Pillow as an outside reader
        assert im.info["loop"] == 0  # NETSCAPE2.0 loop count 0: forever
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert len(durations) == 17
    assert set(durations) <= {120, 130} and abs(sum(durations) - 17 * 125) <= 10  # 1/8 s in centiseconds
    assert read_metadata(path) == SETTINGS


# ---- png frames ---------------------------------------------------------------------------


def test_png_frames_are_lossless_and_named(tmp_path):
    frames = moving_squares(t=5)
    first = Video(frames, 8.0, dict(SETTINGS)).save(tmp_path / "out.png", scale=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert first == tmp_path / "out_00000.png"
    assert names == [f"out_{i:05d}.png" for i in range(5)]
    for i in range(5):
        with Image.open(tmp_path / f"out_{i:05d}.png") as im:
            assert im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), frames[i])
    back, fps = read_video(tmp_path / "out.png")  # decoded by FFmpeg's png decoder
    np.testing.assert_array_equal(back, frames)
    assert fps == 8.0 and read_metadata(tmp_path / "out.png") == SETTINGS

    # saving a shorter clip under the same name replaces the whole set
    Video(frames[:2], 8.0).save(tmp_path / "out.png", scale=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_00000.png", "out_00001.png"]


def test_png_folder_convention(tmp_path):
    frames = moving_squares(t=2, h=16, w=16)
    first = Video(frames, 4.0).save(f"{tmp_path / 'frames'}/")  # missing folder with "/": created
    assert first == tmp_path / "frames" / "frame_00000.png"
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_00000.png", "frame_00001.png"]
    back, fps = read_video(tmp_path / "frames")
    assert back.shape == (2, 256, 256, 3) and fps == 4.0  # auto: 16 -> x16


# ---- atomic writes ------------------------------------------------------------------------


def _fail_after_first(monkeypatch, cls, name):
    original = getattr(cls, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, failing)
    return calls


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
def test_failed_encode_leaves_nothing_and_keeps_existing_file(tmp_path, monkeypatch, ext):
    calls = _fail_after_first(monkeypatch, video_module._AvSink, "add")
    clip = Video(moving_squares(t=4, h=16, w=16), 8.0)
    with pytest.raises(RuntimeError, match="disk on fire"):
        clip.save(tmp_path / f"new{ext}")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []

    existing = tmp_path / f"old{ext}"
    existing.write_bytes(b"previous video")
    with pytest.raises(RuntimeError, match="disk on fire"):
        clip.save(existing)
    assert existing.read_bytes() == b"previous video"
    assert [p.name for p in tmp_path.iterdir()] == [f"old{ext}"]


def test_failed_png_set_leaves_no_half_set(tmp_path, monkeypatch):
    (tmp_path / "out_00000.png").write_bytes(b"previous frame")
    _fail_after_first(monkeypatch, video_codecs, "_png_bytes")
    with pytest.raises(RuntimeError, match="disk on fire"):
        Video(moving_squares(t=3, h=8, w=8), 8.0).save(tmp_path / "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out_00000.png"]
    assert (tmp_path / "out_00000.png").read_bytes() == b"previous frame"


def test_streaming_writer_commits_on_clean_exit_only(tmp_path):
    frames = moving_squares(t=6, h=16, w=16)
    with VideoWriter(tmp_path / "ok.mp4", 8.0, 16, 16, metadata={"seed": "1"}, scale=2) as w:
        for chunk in (frames[:1], frames[1:4], frames[4:]):
            w.write(chunk)
            assert not (tmp_path / "ok.mp4").exists()  # nothing visible until the block ends
    assert w.frames_written == 6 and w.paths == (tmp_path / "ok.mp4",)
    back, _ = read_video(tmp_path / "ok.mp4")
    assert back.shape == (6, 32, 32, 3) and read_metadata(tmp_path / "ok.mp4") == {"seed": "1"}

    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "cancelled.webm", 8.0, 16, 16) as w:
            w.write(frames[:2])
            raise KeyboardInterrupt
    with pytest.raises(InputError, match="no frames were written"):
        with VideoWriter(tmp_path / "empty.gif", 8.0, 16, 16):
            pass
    with pytest.raises(InputError, match=r"frames are 8x16 \(WxH\).*16x16"):
        with VideoWriter(tmp_path / "mixed.mp4", 8.0, 16, 16) as w:
            w.write(frames[:1])
            w.write(frames[:1, :, :8])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]


# ---- bad inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Video(np.zeros((2, 8, 8, 3), np.float32), 8.0), "dtype uint8.*float32"),
        (lambda: Video(np.zeros((8, 8, 3), np.uint8), 8.0), r"shape \(T, H, W, 3\).*\(8, 8, 3\)"),
        (lambda: Video(np.zeros((2, 8, 8, 4), np.uint8), 8.0), r"\(2, 8, 8, 4\)"),
        (lambda: Video(np.zeros((0, 8, 8, 3), np.uint8), 8.0), r"\(0, 8, 8, 3\)"),
        (lambda: Video(np.zeros((2, 8, 8, 3), np.uint8), 0), "fps must be.*got 0"),
        (lambda: Video(np.zeros((2, 8, 8, 3), np.uint8), -5.0), "got -5.0"),
        (lambda: Video(np.zeros((2, 8, 8, 3), np.uint8), 8.0, {"seed": 7}), "str to str.*'seed': 7"),
        (lambda: Video.from_float(np.full((1, 2, 2, 3), np.nan), 8.0), "NaN"),
    ],
)
def test_bad_video_inputs(make, match):
    with pytest.raises(InputError, match=match):
        make()


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("clip.avi", {}, r"'\.avi'.*\.mp4, \.webm, \.gif, \.png"),
        ("clip", {}, r"'\(none\)'"),
        ("clip.mp4", {"scale": 0}, "scale must be.*got 0"),
        ("clip.mp4", {"scale": 1.5}, "got 1.5"),
        ("clip.mp4", {"scale": 2000}, "16000x16000 .scale 2000. exceeds 8192"),
        ("clip.mp4", {"crf": 60}, r"\[0, 51\].*got 60"),
        ("clip.gif", {"crf": 20}, "crf 20 applies to .mp4 and .webm only"),
        ("missing/clip.mp4", {}, "does not exist"),
    ],
)
def test_bad_save_arguments_fail_before_writing(tmp_path, name, kwargs, match):
    clip = Video(np.zeros((2, 8, 8, 3), np.uint8), 8.0)
    with pytest.raises(InputError, match=match):
        clip.save(tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_gif_rejects_fps_browsers_cannot_play(tmp_path):
    with pytest.raises(InputError, match="fps 60 is too high for .gif"):
        VideoWriter(tmp_path / "fast.gif", 60, 8, 8)


def test_from_float_rounds_and_clips():
    clip = Video.from_float(np.array([[[[-0.2, 0.5, 1.7], [0.0, 1.0, 0.1]]]]), 24.0)
    np.testing.assert_array_equal(clip.frames, [[[[0, 128, 255], [0, 255, 26]]]])
    assert (clip.num_frames, clip.height, clip.width, clip.duration) == (1, 1, 2, 1 / 24)


# ---- the scaler ---------------------------------------------------------------------------


def _keys_upscale_axis0(v, k, a):
    """Reference separable cubic (Keys 1981, parameter a), pixel centres aligned, edges clamped."""
    n = v.shape[0]
    s = (np.arange(n * k) + 0.5) / k - 0.5  # source coordinate of each output pixel
    i0 = np.floor(s).astype(int)
    out = np.zeros((n * k,) + v.shape[1:])
    for o in range(-1, 3):
        x = np.abs(s - (i0 + o))
        w = np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1, np.where(x < 2, a * (x**3 - 5 * x**2 + 8 * x - 4), 0))
        out += w.reshape(-1, *[1] * (v.ndim - 1)) * v[np.clip(i0 + o, 0, n - 1)]
    return out


def test_upscale_is_bicubic_not_pixel_repetition():
    yy, xx = np.mgrid[0:32, 0:32]
    red = 127.5 + 100 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    green = 127.5 + 100 * np.cos((xx + yy) / 5.0)
    img = np.stack([red, green, np.full((32, 32), 80.0)], -1).round().astype(np.uint8)  # (32, 32, 3)
    got = upscale(img, 2).astype(np.float64)
    # libswscale's bicubic is Keys' cubic with a = -0.6 (its default C parameter)
    rows = _keys_upscale_axis0(img.astype(np.float64), 2, -0.6)  # (64, 32, 3)
    ref = _keys_upscale_axis0(rows.swapaxes(0, 1), 2, -0.6).swapaxes(0, 1)  # (64, 64, 3)
    nearest = np.repeat(np.repeat(img, 2, 0), 2, 1)
    inner = np.s_[4:-4, 4:-4]
    assert got.shape == (64, 64, 3)
    assert np.abs(got - ref)[inner].max() <= 1.0  # measured 0.58: rounding only
    assert np.abs(got - nearest)[inner].mean() > 2.0  # measured 2.8
    assert upscale(img, 1) is img


def test_auto_scale_reaches_256_on_the_short_side(tmp_path):
    sizes = [(w.factor, w.out_width, w.out_height) for w in (
        VideoWriter(tmp_path / "a.mp4", 8.0, 64, 64),
        VideoWriter(tmp_path / "b.mp4", 8.0, 80, 48),
        VideoWriter(tmp_path / "c.mp4", 8.0, 63, 63),  # x5 = 315, padded even for 4:2:0
        VideoWriter(tmp_path / "d.png", 8.0, 63, 63),  # PNG keeps odd sides
        VideoWriter(tmp_path / "e.mp4", 8.0, 400, 300),
        VideoWriter(tmp_path / "f.mp4", 8.0, 64, 64, scale=None),
        VideoWriter(f"{tmp_path / 'g'}/", 8.0, 64, 64, scale=2),
    )]
    assert sizes == [
        (4, 256, 256), (6, 480, 288), (5, 316, 316), (5, 315, 315), (1, 400, 300), (1, 64, 64), (2, 128, 128)
    ]
    assert list(tmp_path.iterdir()) == []  # nothing is created before the `with` block
