"""Low-memory mode: one graph open at a time, each released before the next loads; the same video."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from kinema.runtime import Pipeline
from kinema.runtime.engine import engine as pipeline_mod
from kinema.runtime.errors import InputError


def _tracked(monkeypatch):
    """Wrap open_session: per open, (name, names still open, weakrefs to every session opened before)."""
    events, refs = [], []
    real = pipeline_mod.open_session

    def opening(path, *args, **kwargs):
        gc.collect()
        events.append((path.stem, [r() is not None for r in refs]))
        session = real(path, *args, **kwargs)
        refs.append(weakref.ref(session))
        return session

    monkeypatch.setattr(pipeline_mod, "open_session", opening)
    return events


def test_low_memory_releases_each_graph_before_the_next(monkeypatch):
    kw = dict(frames=9, steps=3, seed=5)
    ref = Pipeline.from_bundle().generate("a red ball bouncing", **kw).frames  # the built-in bundle: no export needed
    events = _tracked(monkeypatch)
    pipe = Pipeline.from_bundle(low_memory=True)
    video = pipe.generate("a red ball bouncing", **kw).frames
    names = [n for n, _ in events]
    assert names == ["text_encoder", "denoiser", "decoder_prefix", "decoder_step"]
    # each component opens after the previous ones were freed; the decoder's two graphs are one component
    assert [alive for _, alive in events] == [[], [False], [False, False], [False, False, True]]
    assert sorted(pipe._sessions) == ["decoder_prefix", "decoder_step"]
    np.testing.assert_array_equal(video, ref)


def test_default_keeps_graphs_open_and_low_memory_is_checked():
    pipe = Pipeline.from_bundle()
    pipe.generate("a blue square", frames=5, steps=2, seed=1)
    assert {"text_encoder", "denoiser", "decoder_step"} <= set(pipe._sessions)
    with pytest.raises(InputError, match=r"low_memory='yes' must be True or False"):
        Pipeline.from_bundle(low_memory="yes")
