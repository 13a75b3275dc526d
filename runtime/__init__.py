"""kinema.runtime: bundle -> video with NumPy and ONNX Runtime. Never imports torch."""

from .bundle.load import Bundle, load_bundle
from .errors import BundleError, Cancelled, InputError, KinemaError, ProviderError
from .pipeline import GenerationSettings, Pipeline
from .video.core import Video

__all__ = [
    "Bundle",
    "BundleError",
    "Cancelled",
    "GenerationSettings",
    "InputError",
    "KinemaError",
    "Pipeline",
    "ProviderError",
    "Video",
    "load_bundle",
]
