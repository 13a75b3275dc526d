"""`kinema generate`, `animate`, `extend`, `connect` and `edit`: arguments in, one `Request` out, the run path runs it.

Every value is checked before a graph is opened: the prompt policy and the signer before
the bundle is read, the settings and the output path before any input file is read, the
input files (fitted, with one line saying how) before sampling starts. Output is streamed
to a temporary file and renamed when the last frame is in.
"""

from __future__ import annotations

import secrets
import sys
import time

from ..request import Marks, Request

ARG_TASKS = {"generate": (), "animate": ("image",), "extend": ("video",), "connect": ("a", "b"), "edit": ("video",)}


def request_from_args(args) -> Request:
    """The request a command line asks for (a negative --seed draws a random one)."""
    task = args.command
    length = {}
    if task in ("generate", "animate"):
        length = dict(frames=args.frames, seconds=args.seconds)
    return Request(
        task=task,
        prompt=args.prompt,
        inputs=tuple(str(getattr(args, name)) for name in ARG_TASKS[task]),
        negative_prompt=args.negative_prompt,
        height=args.height, width=args.width, fps=args.fps, steps=args.steps, guidance=args.guidance, shift=args.shift,
        seed=args.seed if args.seed >= 0 else secrets.randbelow(2**32),
        sampler=args.sampler, cfg_mode=args.cfg_mode,
        loop=getattr(args, "loop", False),
        add_seconds=args.seconds if task in ("extend", "connect") else None,
        backward=getattr(args, "backward", False),
        strength=getattr(args, "strength", None),
        fit=getattr(args, "fit", "crop"),
        teacache=args.teacache, cfg_cache=args.cfg_cache, leap=args.leap,
        policy=args.policy,
        output=str(args.output),
        native_size=args.native_size,
        memory_check=args.memory_check,
        marks=Marks(visible=args.visible_watermark, sign_cert=args.sign_cert, sign_key=args.sign_key, include_prompt=args.c2pa_include_prompt),
        **length,
    )


def progress(quiet: bool):
    """Step progress on stderr, with the window number when there is more than one."""
    start = time.perf_counter()
    done = 0

    def on_event(p):
        nonlocal done
        done += 1
        if quiet:
            return
        total, step = p.total, p.step + 1
        win = f"window {p.window + 1}/{p.windows} " if p.windows > 1 else "sampling "
        bar = int(30 * step / total)
        sys.stderr.write(f"\r{win}[{'#' * bar}{'.' * (30 - bar)}] {step}/{total} steps, {(time.perf_counter() - start) / done:.2f} s/step ")
        if step == total and p.window + 1 >= p.windows:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return on_event


def _say(args, line: str) -> None:
    if not args.quiet:
        print(f"kinema: {line}", file=sys.stderr)


def _what(req: Request, job) -> str:
    st, n = job.settings, [len(m) for m in job.media]
    if req.task == "generate":
        return f"{st.frames} frames"
    if req.task == "animate":
        return f"animating {req.inputs[0]} into {st.frames} frames"
    if req.task == "extend":
        return f"extending {req.inputs[0]} ({n[0]} frames) {'backward' if req.backward else 'forward'} by {req.add_seconds:g} s"
    if req.task == "connect":
        return f"connecting {req.inputs[0]} ({n[0]} frames) to {req.inputs[1]} ({n[1]} frames)"
    return f"editing {req.inputs[0]} ({st.frames} frames) at strength {req.strength:g}"


def cmd_task(args) -> int:
    """Any of the five task commands: the request, checked, then run."""
    from .. import run
    from ..pipeline import Pipeline
    from ..safety.policy import check_prompt

    req = request_from_args(args)
    early = run.precheck(req)  # the policy, signer and step skipping, before the bundle is read
    policy = early[0]
    for note in policy.notes if policy is not None else ():
        print(f"kinema: note: {note}", file=sys.stderr)
    check_prompt(req.prompt, policy)  # a refused prompt costs nothing: the bundle is not read yet
    pipe = Pipeline.from_bundle(args.bundle, provider=args.provider, threads=args.threads, low_memory=args.low_memory)
    job = run.prepare(pipe, req, early=early)
    for note in job.notes:
        _say(args, note)
    for warning in job.warnings:
        print(f"kinema: warning: {warning}", file=sys.stderr)
    st = job.settings
    t0 = time.perf_counter()
    _say(args, f"{_what(req, job)}, {st.width}x{st.height} @ {st.fps:g} fps, {st.steps} steps, guidance {st.guidance:g}, seed {st.seed}, bundle {pipe.bundle.name}")
    path = run.run(pipe, job, on_event=progress(args.quiet))
    _say(args, f"wrote {path} ({job.writer.frames_written} frames) in {time.perf_counter() - t0:.1f} s")
    return 0
