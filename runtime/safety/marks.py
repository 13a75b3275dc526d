"""kinema's marks on a written file, decided when writing starts: the rule the video writer is given.

`MarkRule` is called by `VideoWriter` with the file's final metadata and extension and
returns the `FrameMarks` to apply. A clip kinema made (metadata "generator" is kinema's)
gets the invisible watermark and, as .mp4, a C2PA manifest signed with this machine's local
key (or the given signer); the visible "AI" label is drawn when asked for. The writer knows
none of this: it applies whatever marks it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..video.core import FrameMarks
from . import provenance
from . import watermark as wm


@dataclass(frozen=True)
class MarkRule:
    """sign: None = local key for a clip kinema made; True = local key; False = no C2PA; a callable signs.
    watermark: None = a clip kinema made; True/False force it. visible: draw the "AI" label."""

    sign: Callable[[Path, Path, dict], None] | bool | None = None
    watermark: bool | None = None
    visible: bool = False

    def with_sign(self, sign) -> MarkRule:
        return replace(self, sign=sign)

    def check(self, ext: str) -> None:
        """Refuse, before any work, a signer for a file that cannot hold content credentials."""
        if callable(self.sign) and ext != ".mp4":
            raise InputError(f"content credentials (C2PA) are written into .mp4 files only, not {ext}")

    def __call__(self, metadata: dict[str, str], ext: str) -> FrameMarks:
        self.check(ext)
        made_here = metadata.get("generator", "").startswith("kinema")
        invisible = made_here if self.watermark is None else bool(self.watermark)
        signer = None
        if ext == ".mp4" and self.sign is not False and not (self.sign is None and not made_here):
            signer = provenance.signer_for(provenance.local_credentials()) if self.sign in (None, True) else self.sign
        return FrameMarks(frame=_frame_marks(self.visible, invisible), metadata={"watermark": wm.NAME} if invisible else {}, sign=signer)


def _frame_marks(visible: bool, invisible: bool) -> Callable[[np.ndarray], np.ndarray] | None:
    if not (visible or invisible):
        return None

    def mark(frame: np.ndarray) -> np.ndarray:  # at the written size; detection resamples whatever size it reads
        if visible:
            frame = wm.visible_mark(frame)
        if invisible:
            frame = wm.embed(frame[None])[0]
        return frame

    return mark
