"""Text to video from a bundle, in Python: the façade over the request and the run path.

    from kinema.runtime import Pipeline
    pipe = Pipeline.from_bundle()              # the built-in bundle
    video = pipe.generate("a red ball bouncing", seed=1)
    video.save("ball.mp4")

Each method builds a `Request` (runtime/request.py) and runs it through `run.execute`,
exactly as the `kinema` commands do. Settings are checked (`Pipeline.check_inputs`)
before any graph is opened. The graphs open on first use and stay open.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import run as run_path
from .bundle.load import default_bundle_path, load_bundle
from .engine.engine import Engine
from .engine.memory import estimate_memory
from .engine.sessions import check_provider, check_threads
from .errors import BundleError, InputError
from .request import Request
from .safety.policy import Policy
from .sampling.accel import Accel
from .settings import GenerationSettings, check_settings, check_size
from .video.core import Video

log = logging.getLogger("kinema")


class Pipeline(Engine):
    """A bundle's graphs on one execution provider; `generate` turns a prompt into a `Video`.

    Thread-safe: several threads may call `generate` on one Pipeline at once. Graphs open
    once, under a lock; ONNX Runtime's `InferenceSession.run` is thread-safe; every run
    keeps its state in local variables. Logs go to the "kinema" logger; nothing is printed.
    """

    policy: Policy | None = None  # the prompt policy check_inputs applies; None = the built-in one

    @classmethod
    def from_bundle(cls, path: str | Path | None = None, *, provider: str = "cpu", threads: int | None = None, verify: bool = True, low_memory: bool = False) -> "Pipeline":
        """Check a bundle folder (the built-in one when path is None) and prepare to run it."""
        check_provider(provider)
        check_threads(threads)
        if path is None:
            path = default_bundle_path()
            if not (path / "manifest.json").is_file():
                raise BundleError(f"the built-in bundle is missing from this installation ({path}); reinstall kinema or pass a bundle folder")
        return cls(load_bundle(path, verify_hashes=verify), provider=provider, threads=threads, low_memory=low_memory)

    def check_inputs(self, prompt: str, *, policy: Policy | None = None, **settings) -> GenerationSettings:
        """Resolve settings against the bundle's defaults; raises InputError naming the first bad value.

        Settings: negative_prompt, frames or seconds, height, width, fps, steps, guidance,
        shift, seed, sampler, cfg_mode, loop (see runtime/settings.py).
        """
        return check_settings(self.bundle, prompt, self.policy if policy is None else policy, **settings)

    def estimate_memory(self, frames: int | None = None, height: int | None = None, width: int | None = None, *, guidance: bool = True) -> dict[str, int]:
        """Bytes per stage and `peak` for one generation at this size (bundle defaults when None); see runtime/engine/memory.py."""
        _, frames, height, width = check_size(self.bundle, None, frames, None, height, width, False)
        return estimate_memory(self.bundle, frames, height, width, guidance=guidance)

    # ------------------------------------------------------------------ tasks

    def execute(self, request: Request, *, callback=None, cancel=None) -> Video | Path:
        """Run any request: the `Video` (request.output None) or the written file's path."""
        job = run_path.prepare(self, request)
        for note in job.notes:
            log.info(note)
        for warning in job.warnings:
            log.warning(warning)
        return run_path.run(self, job, on_event=callback, cancel=cancel)

    def generate(self, prompt: str, *, callback=None, cancel=None, accel: Accel | None = None, **settings) -> Video:
        """Generate a video. `callback(event)` runs after every step; setting `cancel` stops within one step.

        Settings are those of `check_inputs`. A cancelled run raises `Cancelled` and returns
        nothing. The cancellation token is a `threading.Event` (any object with `is_set()`
        works), checked before and after every step's callback and between decoder chunks.
        The event is a `Progress` (runtime/engine/progress.py); its `preview` renders the
        step's clean estimate. `accel` (runtime.sampling.accel.Accel) turns on step skipping.
        """
        return self.execute(Request("generate", prompt, **_accel_fields(accel), **settings), callback=callback, cancel=cancel)

    def run(self, st: GenerationSettings, *, callback=None, cancel=None, accel: Accel | None = None) -> Video:
        """Generate from already checked settings."""
        fields = {k: getattr(st, k) for k in ("negative_prompt", "frames", "height", "width", "fps", "steps", "guidance", "shift", "seed", "sampler", "cfg_mode", "loop")}
        return self.generate(st.prompt, callback=callback, cancel=cancel, accel=accel, **fields)

    def animate(self, image, prompt: str, *, fit: str = "crop", callback=None, cancel=None, **settings) -> Video:
        """A clip that starts from `image` (a path or uint8 (H, W, 3)); settings as in `generate`."""
        return self.execute(Request("animate", prompt, (image,), fit=fit, **settings), callback=callback, cancel=cancel)

    def extend(self, video, prompt: str, seconds: float, *, backward: bool = False, fit: str = "crop",
               callback=None, cancel=None, **settings) -> Video:
        """The clip (a path, `Video` or uint8 frames) with `seconds` more before (backward) or after it."""
        req = Request("extend", prompt, (video,), add_seconds=seconds, backward=backward, fit=fit, **settings)
        return self.execute(req, callback=callback, cancel=cancel)

    def connect(self, a, b, prompt: str, *, seconds: float | None = None, fit: str = "crop",
                callback=None, cancel=None, **settings) -> Video:
        """Clip a, a generated transition into clip b, then clip b."""
        return self.execute(Request("connect", prompt, (a, b), add_seconds=seconds, fit=fit, **settings), callback=callback, cancel=cancel)

    def edit(self, video, prompt: str, strength: float, *, fit: str = "crop", callback=None, cancel=None, **settings) -> Video:
        """The clip redone under `prompt` from noise level `strength` in (0, 1] (SDEdit)."""
        return self.execute(Request("edit", prompt, (video,), strength=strength, fit=fit, **settings), callback=callback, cancel=cancel)


def _accel_fields(accel: Accel | None) -> dict:
    if accel is None:
        return {}
    if not isinstance(accel, Accel):
        raise InputError(f"accel={accel!r} must be a kinema.runtime.sampling.accel.Accel or None")
    return {k: getattr(accel, k) for k in ("teacache", "cfg_cache", "cfg_warmup", "leap", "leap_after")}


__all__ = ["Pipeline", "GenerationSettings"]
