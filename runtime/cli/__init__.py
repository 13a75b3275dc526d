"""The `kinema` command; the only part of runtime/ that may import export/, quantize/ or models/ (lazily)."""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
