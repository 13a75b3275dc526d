"""How far one output is from a reference: SQNR, PSNR, SSIM and frame-to-frame change, in NumPy.

Video frames are uint8 (T, H, W, 3); latents and graph outputs are float arrays. Infinite
values (identical inputs) are returned as `math.inf`; JSON writers turn them into null.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from error visibility
# to structural similarity": an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def sqnr_db(ref: np.ndarray, other: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - other)^2): signal to quantization noise, in dB."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(other, np.float64)) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return math.inf
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def psnr_db(ref: np.ndarray, other: np.ndarray, peak: float | None = None) -> float:
    """10 log10(peak^2 / MSE). `peak` defaults to 255 for uint8 and to the reference's range (max - min) otherwise."""
    ref = np.asarray(ref)
    if peak is None:
        peak = 255.0 if ref.dtype == np.uint8 else float(np.max(ref) - np.min(ref))
    mse = float(np.mean((ref.astype(np.float64) - np.asarray(other, np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return -math.inf if peak == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of the last two axes with `k`, 'valid' region: (..., H, W) -> (..., H-n+1, W-n+1)."""
    x = sliding_window_view(x, len(k), axis=-1) @ k  # (..., H, W-n+1)
    return sliding_window_view(x, len(k), axis=-2) @ k  # (..., H-n+1, W-n+1)


def ssim_map(ref: np.ndarray, other: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM at every 'valid' window position over the last two axes (Wang et al. 2004, Gaussian window)."""
    x = np.asarray(ref, np.float64)
    y = np.asarray(other, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {x.shape} vs {y.shape}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images are {x.shape[-2:]}; the window needs at least {SSIM_WINDOW}x{SSIM_WINDOW}")
    k = _gaussian(SSIM_WINDOW, SSIM_SIGMA)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mx, my = _filter_valid(x, k), _filter_valid(y, k)
    sxx = _filter_valid(x * x, k) - mx * mx
    syy = _filter_valid(y * y, k) - my * my
    sxy = _filter_valid(x * y, k) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def video_ssim(ref: np.ndarray, other: np.ndarray) -> float:
    """Mean SSIM of uint8 videos (T, H, W, 3): per frame and colour channel, averaged."""
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        raise ValueError(f"video_ssim: shapes differ, {ref.shape} vs {other.shape}")
    # (T, H, W, 3) -> (T, 3, H, W): filter over the spatial axes
    return float(np.mean(ssim_map(np.moveaxis(ref, -1, -3), np.moveaxis(other, -1, -3))))


def frame_change(frames: np.ndarray) -> float:
    """Mean |f_t - f_{t-1}| of a uint8 video, in 0-255 units: 0 for a still video."""
    f = np.asarray(frames, np.float32)
    return 0.0 if len(f) < 2 else float(np.abs(f[1:] - f[:-1]).mean())


def temporal_psnr_db(ref: np.ndarray, other: np.ndarray) -> float:
    """PSNR of the frame-to-frame differences (f_t - f_{t-1}) against the reference's, peak 255.

    Low when the video changes differently from one frame to the next (flicker, motion
    error) even if each frame alone is close.
    """
    r = np.diff(np.asarray(ref, np.float64), axis=0)
    o = np.diff(np.asarray(other, np.float64), axis=0)
    return psnr_db(r, o, peak=255.0)


# Student's t, one-sided 95% quantiles for 1..30 degrees of freedom (standard tables).
_T95 = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823, 1.7709, 1.7613, 1.7531,
        1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056, 1.7033, 1.7011, 1.6991, 1.6973)
_Z95 = 1.6448536269514722


def t95(df: int) -> float:
    """One-sided 95% quantile of Student's t with `df` degrees of freedom (a table to 30, Cornish-Fisher beyond)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df!r} must be at least 1")
    if df <= len(_T95):
        return _T95[df - 1]
    z = _Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_lower_bound(values) -> float | None:
    """One-sided 95% lower confidence bound of the mean of `values` (Student's t); None for fewer than two."""
    v = np.asarray(list(values), np.float64)
    if v.size < 2:
        return None
    return float(v.mean() - t95(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


__all__ = ["frame_change", "mean_lower_bound", "psnr_db", "sqnr_db", "ssim_map", "t95", "temporal_psnr_db", "video_ssim"]
