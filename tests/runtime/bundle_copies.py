"""Copies of a bundle to tamper with, leaving the session fixture untouched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def clone(src: Path, dst: Path) -> Path:
    """Copy a bundle folder; files are hard links where possible (see replace_bytes)."""

    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def replace_bytes(path: Path, data: bytes) -> None:
    """Write a file without touching a hard-linked original: unlink first."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(data)
