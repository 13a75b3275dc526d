"""Video values, files and input readers: `Video`, `VideoWriter`, `read_video`, `read_metadata`."""

from .core import FrameMarks, Video, VideoWriter, read_metadata, read_video

__all__ = ["FrameMarks", "Video", "VideoWriter", "read_metadata", "read_video"]
