"""kinema: offline text-to-video diffusion on ONNX Runtime."""

__version__ = "0.1.0"
