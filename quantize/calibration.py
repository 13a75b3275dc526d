"""Inputs recorded from real sampling runs: what each graph of a bundle is fed while it generates.

    rec = record_inputs(pipe, calibration_prompts(pipe.bundle, 4))
    rec["denoiser"]   # [feeds, ...]: every step of the schedule, both guidance branches (batched)

Static int8 calibration reads these (an ORT CalibrationDataReader that is just an
iterator over them), and `compare` measures each component's SQNR on them. NumPy and the
runtime only: no torch, no onnx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from kinema.runtime.bundle.load import Bundle
from kinema.runtime.pipeline import Pipeline

from kinema.quantize.bundle_tools import BundleTools, tools_of

class RecordingSession:
    """An ONNX Runtime session that keeps a copy of every feed it is run on while `active()` (then runs it)."""

    def __init__(self, session, keep: list, active: Callable[[], bool] = lambda: True):
        self._session = session
        self._keep = keep
        self._active = active

    def run(self, output_names, feeds, *args, **kwargs):
        if self._active():
            self._keep.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self._session.run(output_names, feeds, *args, **kwargs)

    def __getattr__(self, name):  # get_inputs, get_outputs, ...
        return getattr(self._session, name)


class RecordingPipeline(Pipeline):
    """A Pipeline whose graphs named in `record` keep their feeds in `self.recorded[name]` while `self.recording`."""

    def __init__(self, bundle, *, record: Sequence[str], provider: str = "cpu", threads: int | None = None):
        super().__init__(bundle, provider=provider, threads=threads)
        self.recorded: dict[str, list[dict]] = {name: [] for name in record}
        self.recording = True
        self._recorders: dict = {}

    def session(self, name: str):
        s = super().session(name)
        if name not in self.recorded:
            return s
        if name not in self._recorders:
            self._recorders[name] = RecordingSession(s, self.recorded[name], lambda: self.recording)
        return self._recorders[name]


def calibration_prompts(source: Bundle | BundleTools, n: int) -> list[str]:
    """`n` prompts the bundle's users would write: spread over its manifest's tools.calibration_prompts.

    A bundle without a tools section gets generic prompts (bundle_tools.GENERIC_PROMPTS).
    """
    tools = source if isinstance(source, BundleTools) else tools_of(source)
    return tools.prompts(n)


def record_inputs(
    pipe: Pipeline,
    prompts: Iterable[str],
    *,
    components: Sequence[str] = ("text_encoder", "denoiser", "decoder_prefix", "decoder_step"),
    seeds: Sequence[int] = (0,),
    **settings,
) -> dict[str, list[dict]]:
    """Feeds of each named graph while `pipe`'s bundle generates every prompt x seed (settings as for `generate`).

    The denoiser's feeds hold both guidance branches (the pipeline's batched mode) at every
    step of the schedule.
    """
    rec = RecordingPipeline(pipe.bundle, record=components, provider=pipe.provider, threads=pipe.threads)
    for prompt in prompts:
        for seed in seeds:
            rec.generate(prompt, seed=seed, **settings)
    return rec.recorded


def data_reader(feeds: list[dict], input_names: Sequence[str]):
    """An ORT CalibrationDataReader over recorded feeds, keeping only the graph's own inputs."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            f = next(self._it, None)
            return None if f is None else {k: f[k] for k in input_names}

        def rewind(self):
            self._it = iter(feeds)

    return _Reader()


__all__ = ["RecordingPipeline", "RecordingSession", "calibration_prompts", "data_reader", "record_inputs"]
