"""What every batch worker does, in a pool process or a Ray actor: open the bundle once, run requests.

A task is a request as JSON (`Request.to_dict`) and how its result comes back:

- `"file"`: the run path writes the request's output atomically; the result names it with
  its sha256;
- `"bytes"`: the same, into a private temporary folder, and the file's bytes come back (a
  Ray worker on a machine that does not share the output folder);
- `"frames"`: no file; the uint8 frames and the fps come back (a benchmark scoring videos).

A request that breaks a rule comes back as a result with `error` set; only a crash of the
process itself loses a task, and the runner retries it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .. import run
from ..errors import KinemaError
from ..request import Request


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Worker:
    """One loaded bundle; `run(task)` makes one video through the run path."""

    def __init__(self, bundle: str | None, threads: int | None, provider: str = "cpu", name: str = ""):
        from ..pipeline import Pipeline

        self.pipe = Pipeline.from_bundle(bundle, provider=provider, threads=threads)
        self.name = name or f"{os.uname().nodename}:{os.getpid()}"

    def run(self, task: dict) -> dict:
        t0 = time.perf_counter()
        out = {"key": task["key"], "worker": self.name}
        try:
            request = Request.from_dict(task["request"])
            out |= getattr(self, f"_{task['mode']}")(request)
        except KinemaError as e:
            out["error"] = str(e)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _file(self, request: Request) -> dict:
        job = run.prepare(self.pipe, request)
        path = run.run(self.pipe, job)
        return {"output": str(path), "sha256": sha256_file(path), "settings": job.settings.metadata()}

    def _bytes(self, request: Request) -> dict:
        with tempfile.TemporaryDirectory(prefix="kinema-batch-") as tmp:
            r = self._file(replace(request, output=str(Path(tmp) / Path(request.output).name)))
            data = Path(r["output"]).read_bytes()
        return r | {"output": request.output, "data": data}

    def _frames(self, request: Request) -> dict:
        job = run.prepare(self.pipe, replace(request, output=None))
        video = run.run(self.pipe, job)
        return {"frames": video.frames, "fps": video.fps, "settings": job.settings.metadata()}
