"""Prompt cleaning by the manifest's `tokenizer.clean`, against the Wan pipeline's own function."""

from __future__ import annotations

import pytest

from kinema.runtime.engine.prompt_text import clean_prompt

MESSY = ["  a cat \n\t on a   mat ", "fish &amp;amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "", "   ", "naïve café", "tab\tand\u00a0nbsp"]


@pytest.mark.parametrize("text", MESSY)
def test_unescape_whitespace_is_the_wan_pipelines_cleaning(text):
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    assert clean_prompt(text, "unescape-whitespace") == prompt_clean(text)


def test_none_keeps_the_text_and_unknown_cleanings_are_refused():
    assert clean_prompt(MESSY[0], "none") == MESSY[0]
    with pytest.raises(ValueError, match="unknown prompt cleaning 'lower'"):
        clean_prompt("x", "lower")
