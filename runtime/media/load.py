"""Image and video prompts fitted to a request's size and frame rate."""

from __future__ import annotations

import math
import os

from ..video import inputs
from ..video.core import Video
from .rules import MAX_SECONDS


def load_image(image, st, fit: str, name: str = "image") -> inputs.Fitted:
    """An image path or uint8 array fitted to the settings' size."""
    if isinstance(image, (str, os.PathLike)):
        name, image = os.fspath(image), inputs.read_image(image)
    return inputs.fit_image(image, st.width, st.height, fit, name)


def load_clip(video, st, fit: str, name: str = "video", max_frames: int | None = None) -> inputs.Fitted:
    """A video path, `Video` or uint8 (T, H, W, 3) array (at the settings' fps) fitted to the settings."""
    limit = max_frames if max_frames is not None else math.floor(MAX_SECONDS * st.fps)
    if isinstance(video, (str, os.PathLike)):
        return inputs.read_clip(video, st.width, st.height, st.fps, fit, max_frames=limit)
    if isinstance(video, Video):
        return inputs.fit_clip(video.frames, video.fps, st.width, st.height, st.fps, fit, name, limit)
    return inputs.fit_clip(video, st.fps, st.width, st.height, st.fps, fit, name, limit)
