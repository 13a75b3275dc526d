"""Video values, files and input readers: `Video`, `VideoWriter`, `read_video`, `read_metadata`."""

from .core import Video, VideoWriter, read_metadata, read_video

__all__ = ["Video", "VideoWriter", "read_metadata", "read_video"]
