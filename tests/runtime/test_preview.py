"""Latent previews: the exported latent->RGB map against the bundle's own decoder, and the manifest checks.

The reference is the clip actually decoded by the bundle's ONNX decoder, averaged over
each latent cell with explicit index lists (not runtime.bundle.preview.cell_means), on
ShapesWorld clips the exporter did not fit on.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_copies import clone, replace_bytes
from kinema.models.shapes_world import render, sample_spec
from kinema.runtime import BundleError, Pipeline, load_bundle
from kinema.runtime.bundle.preview import latent_preview, latent_rgb

# Held-out clips may not reach the fit's own error; the stored map must stay within 10% of
# the best affine map for these very clips (least squares fitted on them, in the test).
OPTIMALITY_TOL = 1.10


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.from_bundle(tiny_bundle)


def decoded_cell_means(frames: np.ndarray) -> np.ndarray:
    """(T', H', W', 3) -> (T, H/8, W/8, 3): latent frame 0 <- video frame 0, latent frame i <- frames 4i-3..4i."""
    n, h, w, _ = frames.shape
    groups = [[0]] + [list(range(4 * i - 3, 4 * i + 1)) for i in range(1, (n - 1) // 4 + 1)]
    out = np.zeros((len(groups), h // 8, w // 8, 3))
    for t, idx in enumerate(groups):
        for y in range(h // 8):
            for x in range(w // 8):
                out[t, y, x] = frames[idx, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8].mean(axis=(0, 1, 2))
    return out


@pytest.fixture(scope="module")
def heldout(pipe):
    """(latents (N, C, T, H, W), decoded cell means (N, T, H, W, 3)) for 6 clips through the bundle's graphs."""
    rng = np.random.default_rng(1234)  # the exporter fits on seed 0
    clips = np.stack([render(sample_spec(rng, allow_heldout=True), 9, 64, 64, rng) for _ in range(6)])
    (z,) = pipe.session("encoder").run(["latents"], {"frames": clips.astype(np.float32) / 255.0})
    means = np.stack([decoded_cell_means(pipe.decode(z[i : i + 1])[0]) for i in range(len(z))])
    return z, means


def test_export_stores_a_fitted_map(pipe):
    entry = pipe.bundle.manifest["preview"]
    pmap = pipe.bundle.preview_map
    assert pmap.matrix.shape == (pipe.bundle.latent["channels"], 3) and pmap.bias.shape == (3,)
    assert entry["rmse"] < entry["baseline_rmse"]


def test_preview_matches_the_decoded_frames(pipe, heldout):
    z, means = heldout
    pmap = pipe.bundle.preview_map
    pred = np.stack([latent_rgb(zi, pmap) for zi in z])  # (N, T, H, W, 3)
    rmse = np.sqrt(np.mean((pred - means) ** 2))
    # the best affine map for these clips, by least squares on them
    cells = z.transpose(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
    design = np.concatenate([cells, np.ones((len(cells), 1))], axis=1)
    target = means.reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    best = np.sqrt(np.mean((design @ coef - target) ** 2))
    constant = np.sqrt(np.mean((target - target.mean(axis=0)) ** 2))
    assert rmse <= OPTIMALITY_TOL * best, (rmse, best)
    assert rmse < constant, (rmse, constant)
    # the uint8 image is the same colours, rounded: within one level
    img = latent_preview(z[0], pmap, scale=2)
    ref = np.clip(pred[0] * 255.0, 0, 255).repeat(2, axis=1).repeat(2, axis=2)
    assert img.dtype == np.uint8 and img.shape == (3, 16, 16, 3)
    assert np.abs(img.astype(float) - ref).max() <= 1.0


def test_step_callback_carries_a_lazy_preview(pipe):
    seen = []
    pipe.generate("a red ball", frames=5, steps=3, seed=2, callback=lambda p: seen.append((p["denoised"].copy(), p["preview"]())))
    assert len(seen) == 3
    for denoised, img in seen:
        assert img.shape == (2, 8, 8, 3) and img.dtype == np.uint8
        assert np.array_equal(img, latent_preview(denoised, pipe.bundle.preview_map))


def _without_preview(src, dst):
    copy = clone(src, dst)
    m = json.loads((copy / "manifest.json").read_text())
    del m["preview"]
    replace_bytes(copy / "manifest.json", json.dumps(m).encode())
    return copy


def test_a_bundle_without_a_map_has_no_previews(tiny_bundle, tmp_path):
    pipe = Pipeline.from_bundle(_without_preview(tiny_bundle, tmp_path / "b"), verify=False)
    assert pipe.bundle.preview_map is None
    seen = []
    pipe.generate("a red ball", frames=5, steps=2, callback=lambda p: seen.append(p["preview"]))
    assert seen == [None, None]
    assert latent_preview(np.zeros((1, 8, 2, 4, 4)), None) is None


@pytest.mark.parametrize(
    "entry,needle",
    [
        ([1, 2, 3], "preview = [1, 2, 3] is not an object"),
        ({"matrix": [[0, 0, 0]] * 7, "bias": [0, 0, 0]}, "8 rows"),
        ({"matrix": [[0, 0]] * 8, "bias": [0, 0, 0]}, "8 rows"),
        ({"matrix": [[0, 0, 0]] * 8, "bias": [0, 0]}, "bias must be"),
        ({"matrix": [[0, 0, float("nan")]] + [[0, 0, 0]] * 7, "bias": [0, 0, 0]}, "finite"),
        ({"matrix": [[0, 0, 0]] * 8, "bias": [0, float("inf"), 0]}, "finite"),
        ({"matrix": [[0, 0, 1e9]] + [[0, 0, 0]] * 7, "bias": [0, 0, 0]}, "magnitude"),
        ({"matrix": [[0, 0, "1"]] + [[0, 0, 0]] * 7, "bias": [0, 0, 0]}, "finite"),
        ({"matrix": [[0, 0, True]] + [[0, 0, 0]] * 7, "bias": [0, 0, 0]}, "finite"),
    ],
)
def test_a_malformed_map_is_refused(tiny_bundle, tmp_path, entry, needle):
    copy = _without_preview(tiny_bundle, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    m["preview"] = entry
    replace_bytes(copy / "manifest.json", json.dumps(m).encode())  # json writes NaN/Infinity, and json.loads reads them
    with pytest.raises(BundleError, match="manifest: preview") as e:
        load_bundle(copy, verify_hashes=False)
    assert needle in str(e.value) and "\n" not in str(e.value)
