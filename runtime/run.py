"""The run path: a request checked against a bundle, then run once, in one place.

`prepare` checks everything a request asks for before any graph opens — the prompt policy,
the signer, step skipping, the settings against the bundle's rules, what the task needs
from the bundle, the output path — and reads and fits the input files. `run` samples
window by window, decodes streaming, and either writes the file atomically through
`VideoWriter` (marks and signature applied there) or returns the `Video`. Progress is one
`Progress` event per step; a set cancel token stops the run within a step and nothing is
written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .engine.memory import available_bytes, estimate_memory
from .engine.progress import Progress
from .errors import Cancelled, InputError
from .media import rules, tasks
from .media.load import load_clip, load_image
from .request import Request
from .safety.marks import MarkRule
from .safety.policy import Policy, load_policy
from .safety.provenance import signer_for_output
from .sampling.accel import Accel
from .sampling.prediction import initial_noise_scale
from .settings import GenerationSettings, schedule_warning
from .video.core import Video, VideoWriter

OnEvent = Callable[[Progress], None]


@dataclass
class Job:
    """A checked request: settings resolved, inputs read and fitted, the output opened; nothing sampled yet."""

    request: Request
    settings: GenerationSettings
    accel: Accel
    media: tuple = ()  # fitted uint8 frames per input
    new_frames: int | None = None  # extend and connect: frames to add
    notes: list[str] = field(default_factory=list)  # one line per input fitted
    warnings: list[str] = field(default_factory=list)  # settings that leave what the bundle was made for
    writer: VideoWriter | None = None
    marks: MarkRule | None = None  # kinema's marks; an in-memory Video carries them to its `save`
    extra: dict = field(default_factory=dict)  # task values stored in the metadata


def precheck(request: Request, policy: Policy | None = None):
    """(policy, signer, accel): what a request asks for that needs no bundle, checked first.

    The prompt itself is checked against the policy with the settings (`check_settings`);
    the commands also check it right after this, before the bundle is read.
    """
    if request.policy is not None:
        policy = load_policy(request.policy)
    m = request.marks
    sign = None
    if request.output is not None and m.sign:
        sign = signer_for_output(request.output, m.sign_cert, m.sign_key, include_prompt=m.include_prompt)
    elif request.output is not None:
        sign = False
    accel = Accel(teacache=request.teacache, cfg_cache=request.cfg_cache, cfg_warmup=request.cfg_warmup, leap=request.leap, leap_after=request.leap_after)
    return policy, sign, accel


_NEEDS = {  # task -> (what, latent positions known, needs the encoder)
    "animate": ("animate an image", ("first",), True),
    "connect": ("connect two videos", ("leading", "last"), True),
    "edit": ("edit a video", (), True),
}


def prepare(pipe, request: Request, *, policy: Policy | None = None, early: tuple | None = None) -> Job:
    """The checked `Job` for a request on this pipeline; raises InputError/BundleError in one line.

    `early` is what `precheck` returned when a front end ran it before loading the bundle.
    """
    policy, sign, accel = precheck(request, pipe.policy if policy is None else policy) if early is None else early
    r = request
    need = _NEEDS.get(r.task)
    if r.task == "extend":
        need = (f"extend a video {'backward' if r.backward else 'forward'}", ("last",) if r.backward else ("leading",), True)
    strength = rules.check_strength(r.strength) if r.task == "edit" else None
    if need is not None:
        rules.require(pipe.bundle, *need)
    length = dict(frames=r.frames, seconds=r.seconds) if r.task in ("generate", "animate") else {}
    st = pipe.check_inputs(
        r.prompt, negative_prompt=r.negative_prompt, height=r.height, width=r.width, fps=r.fps, steps=r.steps,
        guidance=r.guidance, shift=r.shift, seed=r.seed, sampler=r.sampler, cfg_mode=r.cfg_mode, loop=r.loop,
        policy=policy, **length,
    )
    if r.memory_check:
        check_memory(pipe, st, in_memory=r.output is None)
    job = Job(r, st, accel, marks=MarkRule(visible=r.marks.visible))
    job.warnings += [w for w in (schedule_warning(pipe.bundle, st),) if w]
    if r.task == "extend" or (r.task == "connect" and r.add_seconds is not None):
        job.new_frames = rules.check_seconds(r.add_seconds, st.fps)
    if r.output is not None:
        job.marks = MarkRule(sign=sign, visible=r.marks.visible)
        job.writer = VideoWriter(r.output, st.fps, st.width, st.height, scale=1 if r.native_size else "auto", marks=job.marks)
    _read_inputs(pipe, job)
    if r.task == "edit":
        job.extra["strength"] = strength
    elif r.task == "extend":
        job.extra.update(seconds=r.add_seconds, backward=r.backward)
    return job


def check_memory(pipe, st, *, in_memory: bool, available: int | None = None) -> None:
    """Refuse, before any graph opens, a run whose estimated peak is over the memory the system has available."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    window = min(st.frames, pipe.bundle.video.max_frames)  # a long clip is sampled window by window
    peak = estimate_memory(pipe.bundle, window, st.height, st.width, guidance=st.guidance != 1 and st.cfg_mode == "batched")["peak"]
    if in_memory:  # a returned Video holds every frame
        peak += st.frames * st.height * st.width * 3
    if peak > available:
        raise InputError(
            f"this run needs about {peak / 2**30:.2f} GiB by kinema's estimate ({window} frames at {st.width}x{st.height} per window), "
            f"but {available / 2**30:.2f} GiB are available: make it smaller, use --cfg-mode sequential or --low-memory, "
            "or pass --no-memory-check")


def _read_inputs(pipe, job: Job) -> None:
    """Read and fit the request's input files (the notes say how), before anything is sampled."""
    r, st = job.request, job.settings
    if r.task == "animate":
        fitted = [load_image(r.inputs[0], st, r.fit)]
    elif r.task == "connect":
        fitted = [load_clip(v, st, r.fit, name) for v, name in zip(r.inputs, ("video A", "video B"))]
    elif r.task in ("extend", "edit"):
        fitted = [load_clip(r.inputs[0], st, r.fit)]
    else:
        fitted = []
    job.notes += [f.note for f in fitted if f.note]
    job.media = tuple(f.frames for f in fitted)
    if r.task == "edit":
        name = os.fspath(r.inputs[0]) if isinstance(r.inputs[0], (str, os.PathLike)) else "video"
        n = rules.edit_length(pipe.bundle, len(job.media[0]), name)
        if n < len(job.media[0]):
            job.notes.append(f"editing the first {n} of {len(job.media[0])} frames (the decoder needs 4k+1)")
        job.media = (job.media[0][:n],)
        job.settings = replace(st, frames=n)


def metadata(pipe, job: Job) -> dict[str, str]:
    """What the file stores: the settings, the task and its values, step skipping, the bundle and kinema's version."""
    from kinema import __version__

    meta = job.settings.metadata() | {k: str(v) for k, v in job.extra.items()} | {"mode": job.request.mode}
    if job.accel.active:
        meta["accel"] = job.accel.metadata()
    return meta | {"bundle": pipe.bundle.name, "bundle_sha256": pipe.bundle.digest, "generator": f"kinema {__version__}"}


def chunks(pipe, job: Job, *, on_event: OnEvent | None = None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks (t, H, W, 3) of the job's video, in order, as they are decoded."""
    r, st, media = job.request, job.settings, job.media
    kw = dict(callback=on_event, cancel=cancel)
    if r.task == "generate":
        if rules.windowed(pipe.bundle, st):  # longer than one window, or a loop
            return tasks.long_stream(pipe, st, accel=job.accel, **kw)
        return _one_window(pipe, st, job.accel, **kw)
    if r.task == "animate":
        return tasks.animate_stream(pipe, st, media[0], **kw)
    if r.task == "extend":
        stream = tasks.extend_backward_stream if r.backward else tasks.extend_stream
        return stream(pipe, st, media[0], job.new_frames, **kw)
    if r.task == "connect":
        return tasks.connect_stream(pipe, st, media[0], media[1], job.new_frames, **kw)
    return tasks.edit_stream(pipe, st, media[0], job.extra["strength"], **kw)


def _one_window(pipe, st, accel, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    sigmas = pipe.sigmas(st)
    x = pipe.initial_noise(st) * np.float32(initial_noise_scale(sigmas, pipe.bundle.sampler["prediction"]))
    latents = pipe.sample(st, x, sigmas, callback=callback, cancel=cancel, accel=accel)
    for chunk in pipe.decode_stream(latents):
        if cancel is not None and cancel.is_set():
            raise Cancelled("generation cancelled")
        yield Video.from_float(chunk[0], st.fps).frames


def run(pipe, job: Job, *, on_event: OnEvent | None = None, cancel=None) -> Video | Path:
    """Run a prepared job: the written file's path when the request names an output, else the `Video`."""
    meta = metadata(pipe, job)
    stream = chunks(pipe, job, on_event=on_event, cancel=cancel)
    if job.writer is None:
        return Video(np.concatenate(list(stream)), job.settings.fps, meta, marks=job.marks)
    job.writer.metadata = meta
    with job.writer as w:
        for chunk in stream:
            w.write(chunk)
    return job.writer.paths[0] if job.writer.paths else Path(job.request.output)


def execute(pipe, request: Request, *, on_event: OnEvent | None = None, cancel=None) -> Video | Path:
    """`prepare` then `run`."""
    return run(pipe, prepare(pipe, request), on_event=on_event, cancel=cancel)
