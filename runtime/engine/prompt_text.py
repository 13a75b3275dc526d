"""Prompt text as a bundle's text encoder was trained to see it, by the cleaning its manifest names.

`tokenizer.clean` in the manifest: "none" (the text as given) or "unescape-whitespace": ftfy's
repair of mis-decoded text where ftfy is installed, HTML entities unescaped (twice, so
"&amp;amp;" is "&"), and runs of whitespace made one space, trimmed. The second is what the
Wan pipelines do before tokenizing, so a Wan bundle gets the same tokens for the same prompt.
"""

from __future__ import annotations

import html
import re

CLEANINGS = ("none", "unescape-whitespace")


def clean_prompt(text: str, cleaning: str) -> str:
    if cleaning == "none":
        return text
    if cleaning != "unescape-whitespace":
        raise ValueError(f"unknown prompt cleaning {cleaning!r} (known: {', '.join(CLEANINGS)})")
    try:
        import ftfy
    except ImportError:  # optional, as in the pipelines that clean this way
        pass
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


__all__ = ["CLEANINGS", "clean_prompt"]
