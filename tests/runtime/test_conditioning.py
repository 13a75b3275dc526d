"""Known latent frames, SDEdit, windows and loops on the random tiny bundle (fixed seeds, stated tolerances)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_copies import clone, replace_bytes
from kinema.runtime import BundleError, InputError, Pipeline
from kinema.runtime.media import rules, tasks
from kinema.runtime.media import windows as win_mod
from kinema.runtime.sampling.schedules import flow_sigmas

FAST = dict(steps=2, guidance=3.0)


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.from_bundle(tiny_bundle)


def _clip(n=9, seed=0) -> np.ndarray:
    """A smooth moving blob, (n, 64, 64, 3) uint8."""
    yy, xx = np.mgrid[0:64, 0:64]
    frames = []
    for t in range(n):
        d = (xx - 20 - 3 * t) ** 2 + (yy - 32) ** 2
        f = np.stack([np.exp(-d / 80.0) * 220, np.full_like(d, 40, dtype=float), 120 - np.exp(-d / 80.0) * 100], -1)
        frames.append(f)
    return np.clip(np.stack(frames) + seed, 0, 255).astype(np.uint8)


def test_known_frames_follow_the_closed_form_and_end_at_the_given_latents(pipe):
    st = pipe.check_inputs("a red ball", frames=17, **FAST, seed=5)
    win = win_mod.Windows(pipe, st)
    rng = np.random.default_rng(1)
    start = rng.standard_normal((1, 8, 2, 8, 8)).astype(np.float32)
    end = rng.standard_normal((1, 8, 1, 8, 8)).astype(np.float32)
    eps = np.random.Generator(np.random.PCG64(5)).standard_normal((1, 8, 5, 8, 8), dtype=np.float32)
    seen = []
    win.callback = lambda p: seen.append((p["sigma"], p["x"].copy()))
    out = win.sample(5, start=start, end=end)
    # the known frames' state is (1 - σ) c + σ ε at every step (flow), with ε the window's noise
    for sigma, x in seen:
        np.testing.assert_allclose(x[:, :, :2], (1 - sigma) * start + sigma * eps[:, :, :2], atol=1e-5)
        np.testing.assert_allclose(x[:, :, 4:], (1 - sigma) * end + sigma * eps[:, :, 4:], atol=1e-5)
    np.testing.assert_allclose(out[:, :, :2], start, atol=1e-5)
    np.testing.assert_allclose(out[:, :, 4:], end, atol=1e-5)
    assert np.abs(out[:, :, 2:4] - eps[:, :, 2:4]).mean() > 0.1  # the free frames moved


def test_extension_fades_the_clip_into_its_reconstruction():
    clip = np.full((9, 2, 2, 3), 200, np.uint8)
    decoded = [np.full((5, 2, 2, 3), 0.2, np.float32), np.full((4, 2, 2, 3), 0.3, np.float32)]
    out = np.concatenate(list(win_mod.fade_clip(clip, iter(decoded), 5, 8.0)))
    assert out.shape == (13, 2, 2, 3)
    w = np.arange(1, 6) / 5
    expect = np.concatenate([[200.0] * 4, (1 - w) * 200 + w * 0.2 * 255, [0.3 * 255] * 4])
    np.testing.assert_allclose(out[:, 0, 0, 0], expect, atol=1.0)


def test_a_clip_fades_into_and_out_of_its_reconstruction():
    clip = np.full((4, 1, 1, 3), 255, np.uint8)
    recon = np.zeros((4, 1, 1, 3), np.float32)
    np.testing.assert_allclose(win_mod.ramp_mix(clip, recon, into=True)[:, 0, 0, 0], [0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(win_mod.ramp_mix(clip, recon, into=False)[:, 0, 0, 0], [0.25, 0.5, 0.75, 1.0])


def test_first_window_noise_is_the_plain_generation_noise(pipe):
    st = pipe.check_inputs("a red ball", frames=17, seed=11)
    assert np.array_equal(win_mod.Windows(pipe, st).noise(5), pipe.initial_noise(st))


def test_animate_starts_at_the_image_round_trip(pipe):
    img = _clip(1)[0]
    video = pipe.animate(img, "a red ball", frames=9, **FAST)
    rt = pipe.decode(win_mod.encode(pipe, img[None]))[0, 0]
    rt8 = np.rint(np.clip(rt, 0, 1) * 255).astype(np.int32)
    assert video.frames.shape == (9, 64, 64, 3)
    assert np.abs(video.frames[0].astype(np.int32) - rt8).max() <= 1  # latent held to 1e-5
    assert video.metadata["mode"] == "animate"


def test_edit_strength_1_is_plain_generation(pipe):
    clip = _clip(9)
    plain = pipe.generate("a blue square", frames=9, seed=7, **FAST).frames
    edited = pipe.edit(clip, "a blue square", 1.0, seed=7, **FAST).frames
    assert np.array_equal(plain, edited)


def test_edit_small_strength_stays_close_to_the_input(pipe):
    clip = _clip(9)
    rt = np.rint(np.clip(pipe.decode(win_mod.encode(pipe, clip))[0], 0, 1) * 255)
    st = dict(seed=7, steps=20, guidance=3.0)
    small = pipe.edit(clip, "a blue square", 0.05, **st).frames.astype(float)
    plain = pipe.generate("a blue square", frames=9, **st).frames.astype(float)
    err_small, err_plain = np.abs(small - rt).mean(), np.abs(plain - rt).mean()
    # measured 6.3 vs 31.1 (of 255): a random network's velocity moves even 1/20 of the path
    assert err_small < 0.3 * err_plain, (err_small, err_plain)


def test_a_long_edit_at_strength_1_is_the_long_generation(pipe):
    # 41 frames = 11 latents, past max_frames=33: windows of 5, then 2 known + 3 new, twice
    plain = pipe.generate("a blue square", frames=41, seed=7, **FAST).frames
    edited = pipe.edit(_clip(41), "a blue square", 1.0, seed=7, **FAST).frames
    assert np.array_equal(plain, edited)


def test_a_long_edit_goes_window_by_window(pipe):
    clip = _clip(41)
    st = pipe.check_inputs("a blue square", frames=41, seed=7, **FAST)
    seen = []
    chunks = list(tasks.edit_stream(pipe, st, clip, 0.5, callback=lambda p: seen.append((p["window"], p["windows"]))))
    assert [len(c) for c in chunks] == [17, 12, 12]
    assert sorted(set(seen)) == [(0, 3), (1, 3), (2, 3)]
    # the first window is the edit of the first 17 frames alone (each window encodes its own stretch)
    first = pipe.edit(clip[:17], "a blue square", 0.5, seed=7, **FAST).frames
    assert np.array_equal(chunks[0], first)
    # the later windows stay near the source too (strength 0.5), as near as the first does
    rt = np.rint(np.clip(pipe.decode(win_mod.encode(pipe, clip))[0], 0, 1) * 255)
    out = np.concatenate(chunks).astype(float)
    err_first, err_rest = np.abs(out[:17] - rt[:17]).mean(), np.abs(out[17:] - rt[17:]).mean()
    assert err_rest < 2.0 * err_first, (err_first, err_rest)


def test_edit_sigmas_start_at_the_strength():
    full = flow_sigmas(20, 1.0)
    s = win_mod.edit_sigmas(full, 0.5, "flow")
    assert np.array_equal(s, np.concatenate([[0.5], full[full < 0.5]])) and len(s) == 12  # 0.5, 0.474, ..., 0.001, 0
    assert np.all(np.diff(s) < 0)
    assert np.array_equal(win_mod.edit_sigmas(full, 1.0, "flow"), full)


@pytest.mark.parametrize("frames,chunks", [(17, [17]), (25, [17, 8]), (41, [17, 12, 12])])
def test_windows_stream_the_expected_frames(pipe, frames, chunks):
    st = pipe.check_inputs("a red ball", frames=frames, seed=3, **FAST)
    sizes = [len(c) for c in tasks.long_stream(pipe, st)]
    assert sizes == chunks and sum(sizes) == frames


def test_long_video_starts_with_the_plain_clip(pipe):
    long = pipe.generate("a red ball", frames=41, seed=3, **FAST)  # past max_frames=33: windowed
    plain = pipe.generate("a red ball", frames=17, seed=3, **FAST)
    assert long.num_frames == 41 and np.array_equal(long.frames[:17], plain.frames)


def test_seconds_60_is_windowed_and_the_limit_is_checked_first(pipe):
    st = pipe.check_inputs("a red ball", seconds=60)
    assert st.frames == 481 and rules.windowed(pipe.bundle, st)
    with pytest.raises(InputError, match=r"seconds=301 .* limit is 300 s"):
        pipe.check_inputs("a red ball", seconds=301)


def test_reencode_seams_also_stream(pipe):
    st = pipe.check_inputs("a red ball", frames=25, seed=3, **FAST)
    assert [len(c) for c in tasks.long_stream(pipe, st, seam="reencode")] == [17, 8]


def test_loop_writes_4k_frames_starting_inside_the_plain_clip(pipe):
    video = pipe.generate("a red ball", frames=25, loop=True, seed=3, **FAST)
    assert video.num_frames == 24 and video.metadata["loop"] == "True"
    # 7 latents = a plain 5-latent window + a closing window of 2 new ones; playback starts at
    # frame 9 of the plain clip (latents 1 and 2 are decoded again at the end)
    plain = pipe.generate("a red ball", frames=17, seed=3, **FAST).frames
    assert np.array_equal(video.frames[:8], plain[9:])
    assert pipe.generate("a red ball", frames=17, loop=True, seed=3, **FAST).num_frames == 16
    with pytest.raises(InputError, match="too short to loop: a loop needs at least 17 frames"):
        pipe.check_inputs("a red ball", frames=13, loop=True)


def test_extend_forward_keeps_the_clip_and_adds_whole_latent_frames(pipe):
    clip = _clip(9)
    video = pipe.extend(clip, "a red ball", 2.0, seed=1, **FAST)  # 16 frames = 4 latents: windows 3 + 1
    # the clip's last 5 frames (its two known latents) fade into their decoded reconstruction
    assert video.num_frames == 9 + 16 and np.array_equal(video.frames[:4], clip[:4])
    assert np.abs(video.frames[4:9].astype(int) - clip[4:]).mean() < 40


def test_extend_backward_ends_with_the_clip(pipe):
    clip = _clip(9)
    video = pipe.extend(clip, "a red ball", 1.0, backward=True, seed=1, **FAST)  # 8 frames -> one window of 9
    # the clip's first 4 frames fade out of the window's decode of them (its known end latent)
    assert video.num_frames == 9 + 9 and np.array_equal(video.frames[-5:], clip[4:])
    assert np.abs(video.frames[-9:-5].astype(int) - clip[:4]).mean() < 40


def test_extend_backward_streams_windows_in_time_order_and_fades_each_into_the_next(pipe):
    from kinema.runtime.engine.decode import StreamingDecoder

    clip = _clip(9)
    st = pipe.check_inputs("a red ball", seed=3, **FAST)
    chunks = list(tasks.extend_backward_stream(pipe, st, clip, 24))
    assert [len(c) for c in chunks] == [5, 9, 13, 9]  # earliest window first, then the clip
    assert np.array_equal(chunks[-1][4:], clip[4:])
    # reference: each window decoded whole (with its known end) and held; the next (earlier)
    # one conditioned on the first frames of the later one as decoded
    win, later, parts = win_mod.Windows(pipe, st), clip, []
    for c in reversed(chunks[:-1]):
        j = (len(c) - 1) // 4
        lat = win.sample(j + 1 + rules.END_KNOWN, end=win_mod.encode_head(pipe, later))
        full = StreamingDecoder(pipe).push(lat)[0]
        later = win_mod.to_uint8(full[: j * 4 + 1], st.fps)
        parts.insert(0, (later, full[j * 4 + 1 :]))
    want = [parts[0][0]]
    # each part's first 4 frames: the earlier window's decode of its known end, fading into them
    for (frames, _), (_, rec) in zip([*parts[1:], (clip, None)], parts):
        want.append(np.concatenate([win_mod.to_uint8(win_mod.ramp_mix(frames[:4], rec, into=False), st.fps), frames[4:]]))
    for got, w in zip(chunks, want):
        assert np.array_equal(got, w)
    assert np.abs(chunks[-1][:4].astype(int) - clip[:4]).mean() < 40


def test_connect_puts_a_transition_between_the_clips(pipe):
    a, b = _clip(9), _clip(5, seed=30)
    video = pipe.connect(a, b, "a red ball", seed=1, **FAST)
    assert video.num_frames == 9 + 8 + 5
    # a's last 5 frames fade into their reconstruction, b's first 4 out of theirs
    assert np.array_equal(video.frames[:4], a[:4]) and np.array_equal(video.frames[-2:], b[-2:])
    assert np.abs(video.frames[4:9].astype(int) - a[4:]).mean() < 40
    assert np.abs(video.frames[-5:-2].astype(int) - b[:3]).mean() < 40


def test_connect_of_one_window_is_one_sample_between_both_ends(pipe):
    from kinema.runtime.engine.decode import StreamingDecoder

    a, b = _clip(9), _clip(5, seed=30)
    st = pipe.check_inputs("a red ball", seed=4, **FAST)
    chunks = list(tasks.connect_stream(pipe, st, a, b))
    got = np.concatenate(chunks)
    # reference: one window from a's last 2 latents to b's first, decoded in one stream
    win = win_mod.Windows(pipe, st)
    start, end = win_mod.encode_tail(pipe, a), win_mod.encode_head(pipe, b)
    lat = win.sample(2 + 2 + 1, start=start, end=end)
    frames = StreamingDecoder(pipe).push(np.concatenate([start, lat[:, :, 2:]], axis=2))[0]
    want = np.concatenate([a[:4], win_mod.to_uint8(win_mod.ramp_mix(a[4:], frames[:5], into=True), st.fps),
                           win_mod.to_uint8(frames[5:-4], st.fps), win_mod.to_uint8(win_mod.ramp_mix(b[:4], frames[-4:], into=False), st.fps), b[4:]])
    assert np.array_equal(got, want)


def test_a_connect_longer_than_a_window_continues_a_like_extend_and_ends_on_b(pipe):
    a, b = _clip(9), _clip(9, seed=30)
    st = pipe.check_inputs("a red ball", seed=4, **FAST)
    room = win_mod.Windows(pipe, st).most - rules.OVERLAP - rules.END_KNOWN  # new latents of a two-ended window
    n = room + 4
    # the first 4 new latents go from a's end window by window, as `extend` makes them; the
    # last window makes the remaining `room` with b's first latent known at its end
    chunks = list(tasks.connect_stream(pipe, st, a, b, 4 * n))
    got = np.concatenate(chunks)
    assert len(got) == 9 + 4 * n + 9 and len(chunks) > 4  # streamed, not one block
    assert np.array_equal(got[:4], a[:4]) and np.array_equal(got[-5:], b[-5:])
    ext = np.concatenate(list(tasks.extend_stream(pipe, st, a, 16)))
    assert np.array_equal(got[: 9 + 16], ext[: 9 + 16])
    assert np.abs(got[-9:-5].astype(int) - b[:4]).mean() < 40  # fades into b's own frames


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda p: p.edit(_clip(9), "x", 0.0), "strength=0.0"),
        (lambda p: p.edit(_clip(9), "x", 1.5), "strength=1.5"),
        (lambda p: p.extend(_clip(9), "x", 0), "seconds=0"),
        (lambda p: p.extend(_clip(9), "x", 301), "seconds=301"),
        (lambda p: p.animate(_clip(1)[0], "x", fit="stretch"), "'stretch'"),
    ],
)
def test_bad_values_are_named(pipe, call, needle):
    with pytest.raises(InputError) as e:
        call(pipe)
    assert needle in str(e.value) and "\n" not in str(e.value)


def _edited(tiny_bundle, tmp_path, change) -> Pipeline:
    copy = clone(tiny_bundle, tmp_path / "bundle")
    m = json.loads((copy / "manifest.json").read_text())
    change(m)
    replace_bytes(copy / "manifest.json", json.dumps(m).encode())
    return Pipeline.from_bundle(copy)


def test_a_bundle_that_cannot_condition_on_the_last_frames_says_so(tiny_bundle, tmp_path):
    p = _edited(tiny_bundle, tmp_path, lambda m: m["conditioning"].update(known_frames=["first", "leading"]))
    with pytest.raises(BundleError, match="cannot extend a video backward: .*the last latent frames"):
        p.extend(_clip(9), "x", 1.0, backward=True)
    with pytest.raises(BundleError, match="cannot connect two videos"):
        p.connect(_clip(9), _clip(9), "x")
    p.extend(_clip(9), "x", 0.5, **FAST)  # forward still works


def test_a_bundle_without_conditioning_or_encoder_says_so(tiny_bundle, tmp_path):
    p = _edited(tiny_bundle, tmp_path, lambda m: m["conditioning"].update(cond_latents=False))
    with pytest.raises(InputError, match="cannot go on window by window"):
        p.check_inputs("x", seconds=60)
    with pytest.raises(InputError, match=r"has 40 frames after fitting; this bundle edits at most 33 frames .* cannot go on window by window"):
        p.edit(_clip(40), "x", 0.5)
    with pytest.raises(BundleError, match="cannot animate an image: its denoiser takes no known latent frames"):
        p.animate(_clip(1)[0], "x")
    p = _edited(tiny_bundle, tmp_path / "2", lambda m: m["components"].pop("encoder"))
    with pytest.raises(BundleError, match="has no encoder graph"):
        p.edit(_clip(9), "x", 0.5)
    assert p.generate("x", frames=41, **FAST).num_frames == 41  # long text-to-video needs no encoder
