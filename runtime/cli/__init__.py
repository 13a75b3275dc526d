"""The `kinema` command; the only part of runtime/ that may import export/, quantize/ or models/ (lazily)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
