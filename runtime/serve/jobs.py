"""The server's job queue: records in memory and on disk, one worker per served bundle running its jobs in order.

The worker turns each job's stored request into a `Request` whose output is the job's
video file and hands it to the run path (`run.prepare`, `run.run`) — the same code
`kinema generate` runs. Progress events go to whoever listens (the events stream); a
cancel token stops a running job within a step. On start, jobs a killed server left
`in_progress` are queued again (at most `RETRIES` times, then failed with code
`interrupted`), and queued jobs keep their order. Finished jobs expire `ttl` seconds after
they end (their record and files removed), unless `ttl` is None.
"""

from __future__ import annotations

import base64
import io
import threading
import traceback
from collections import deque
from collections.abc import Callable

import numpy as np

from .. import run
from ..errors import Cancelled, InputError, KinemaError
from ..request import Request
from ..video.codecs import read_video
from .store import Store, now

RETRIES = 2
PUBLIC = ("id", "object", "created_at", "completed_at", "expires_at", "model", "progress", "prompt",
          "remixed_from_video_id", "seconds", "size", "status", "error", "task", "width", "height", "num_frames", "fps",
          "num_inference_steps", "guidance_scale", "flow_shift", "seed", "negative_prompt", "sampler")


class QueueFull(Exception):
    """The queue holds `max_queue` jobs already."""


def public(record: dict) -> dict:
    """A record as the API shows it: the OpenAI `Video` fields and the settings used."""
    return {k: record.get(k) for k in PUBLIC if k in record}


def used_settings(st) -> dict:
    """The settings a checked request resolved to, under the names the API takes them by."""
    return dict(width=st.width, height=st.height, num_frames=st.frames, fps=st.fps, num_inference_steps=st.steps,
                guidance_scale=st.guidance, flow_shift=st.shift, seed=st.seed, negative_prompt=st.negative_prompt,
                sampler=st.sampler, seconds=f"{st.frames / st.fps:g}", size=f"{st.width}x{st.height}")


class Jobs:
    """Records by id, the queue, and the worker thread; every method is safe from any thread."""

    def __init__(self, store: Store, pipes: dict, *, max_queue: int = 16, ttl: float | None = None):
        self.store, self.pipes, self.max_queue, self.ttl = store, pipes, max_queue, ttl
        self.lock = threading.Condition()
        self.records: dict[str, dict] = {}
        self.queues: dict[str, deque[str]] = {model: deque() for model in pipes}
        self.cancels: dict[str, threading.Event] = {}
        self.listeners: dict[str, list[Callable[[dict], None]]] = {}
        self.previews: dict[str, int] = {}
        self.running: dict[str, str] = {}  # model -> the job its worker runs
        self._stop = False
        self._seq = 0
        for record in store.load_all():
            self._seq = max(self._seq, record.get("seq", 0))
            if record["status"] == "in_progress":
                record["attempts"] = record.get("attempts", 0) + 1
                if record["attempts"] > RETRIES:
                    record.update(status="failed", error={"code": "interrupted", "message": "the server stopped during this job too many times"})
                else:
                    record.update(status="queued", progress=0)
                store.save(record)
            if record["model"] not in pipes and record["status"] == "queued":
                record.update(status="failed", error={"code": "model_not_served", "message": f"model {record['model']!r} is not served now"})
                store.save(record)
            self.records[record["id"]] = record
            if record["status"] == "queued":
                self.queues[record["model"]].append(record["id"])
        self.threads = [threading.Thread(target=self._work, args=(m,), name=f"kinema-serve-{m}", daemon=True) for m in pipes]
        self.threads.append(threading.Thread(target=self._sweep, name="kinema-serve-expiry", daemon=True))

    def waiting(self) -> int:
        """Jobs queued or running, over all bundles."""
        with self.lock:
            return sum(map(len, self.queues.values())) + len(self.running)

    # -- the API's side ------------------------------------------------------------------

    def submit(self, record: dict) -> dict:
        """Queue a new job (its record and request already checked); QueueFull when the queue is full."""
        with self.lock:
            if self.waiting() >= self.max_queue:
                raise QueueFull
            self._seq += 1
            record.update(seq=self._seq, status="queued", progress=0, object="video", created_at=now(),
                          completed_at=None, expires_at=None, error=None)
            self.store.save(record)
            self.records[record["id"]] = record
            self.queues[record["model"]].append(record["id"])
            self.lock.notify_all()
            return dict(record)

    def get(self, job_id: str) -> dict | None:
        with self.lock:
            r = self.records.get(job_id)
            return dict(r) if r is not None else None

    def page(self, *, after: str | None, limit: int, order: str) -> tuple[list[dict], bool]:
        with self.lock:
            ids = sorted(self.records, key=lambda i: self.records[i]["seq"], reverse=order == "desc")
            if after is not None:
                if after not in self.records:
                    raise KeyError(after)
                ids = ids[ids.index(after) + 1:]
            return [dict(self.records[i]) for i in ids[:limit]], len(ids) > limit

    def cancel(self, job_id: str) -> dict | None:
        """Stop a queued or running job; it reads `failed` with code `cancelled`."""
        with self.lock:
            record = self.records.get(job_id)
            if record is None:
                return None
            if record["status"] == "queued":
                self.queues[record["model"]].remove(job_id)
                self._finish(record, "failed", error={"code": "cancelled", "message": "the job was cancelled before it started"})
            elif record["status"] == "in_progress":
                self.cancels[job_id].set()
            return dict(record)

    def delete(self, job_id: str) -> bool:
        """Cancel the job if it runs, forget it, and remove its files."""
        with self.lock:
            if job_id not in self.records:
                return False
            queue = self.queues.get(self.records[job_id]["model"], ())
            if job_id in queue:
                queue.remove(job_id)
            if job_id in self.cancels:
                self.cancels[job_id].set()
            del self.records[job_id]
            self.store.remove(job_id)
            return True

    def listen(self, job_id: str, fn: Callable[[dict], None], preview: bool = False) -> Callable[[], None]:
        """Call `fn(event)` for each of the job's progress events (from the worker thread); returns the unsubscribe."""
        with self.lock:
            self.listeners.setdefault(job_id, []).append(fn)
            self.previews[job_id] = self.previews.get(job_id, 0) + int(preview)

        def stop():
            with self.lock:
                if fn in self.listeners.get(job_id, []):
                    self.listeners[job_id].remove(fn)
                    self.previews[job_id] -= int(preview)

        return stop

    # -- the worker's side ---------------------------------------------------------------

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        with self.lock:
            self._stop = True
            for event in self.cancels.values():
                event.set()
            self.lock.notify_all()
        for t in self.threads:
            if t.is_alive():
                t.join(timeout=30)

    def _work(self, model: str) -> None:
        queue = self.queues[model]
        while True:
            with self.lock:
                while not queue and not self._stop:
                    self.lock.wait()
                if self._stop:
                    return
                job_id = queue.popleft()
                record = self.records[job_id]
                record.update(status="in_progress", progress=0)
                self.store.save(record)
                self.running[model], cancel = job_id, threading.Event()
                self.cancels[job_id] = cancel
            try:
                self._run(record, cancel)
            finally:
                with self.lock:
                    self.running.pop(model, None)
                    self.cancels.pop(job_id, None)
                    self.lock.notify_all()

    def _sweep(self) -> None:
        """Remove finished jobs past their expiry time."""
        if self.ttl is None:
            return
        while True:
            with self.lock:
                self.lock.wait(timeout=min(30.0, max(0.2, self.ttl / 4)))
                if self._stop:
                    return
                t = now()
                gone = [i for i, r in self.records.items() if r.get("expires_at") is not None and r["expires_at"] <= t]
            for job_id in gone:
                self.delete(job_id)

    def _run(self, record: dict, cancel: threading.Event) -> None:
        job_id = record["id"]
        folder = self.store.folder(job_id)
        try:
            data = dict(record["request"], output=str(folder / "video.mp4"))
            data["inputs"] = [str(folder / name) for name in data["inputs"]]
            request = Request.from_dict(data)
            pipe = self.pipes[record["model"]]
            job = run.prepare(pipe, request)
            run.run(pipe, job, on_event=lambda p: self._progress(record, p), cancel=cancel)
            _pictures(folder)
        except Cancelled:
            if self._stop:  # the server is stopping: the job runs again on the next start
                return
            self._finish(record, "failed", error={"code": "cancelled", "message": "the job was cancelled"})
        except InputError as e:
            self._finish(record, "failed", error={"code": "invalid_request", "message": str(e)})
        except KinemaError as e:
            self._finish(record, "failed", error={"code": "generation_failed", "message": str(e)})
        except Exception as e:  # a server keeps serving: the job fails with what happened
            traceback.print_exc()
            self._finish(record, "failed", error={"code": "internal_error", "message": f"{type(e).__name__}: {e}"})
        else:
            self._finish(record, "completed", progress=100, completed_at=now())

    def _finish(self, record: dict, status: str, **values) -> None:
        with self.lock:
            record.update(status=status, **values)
            if self.ttl is not None:
                record["expires_at"] = int(now() + self.ttl)
            if record["id"] in self.records:  # deleted while it ran: nothing is written back
                self.store.save(record)
            listeners = list(self.listeners.get(record["id"], []))
        for fn in listeners:
            fn({"type": "status", "id": record["id"], "status": status, "progress": record["progress"], "error": record.get("error")})

    def _progress(self, record: dict, p) -> None:
        done = (p.window + (p.step + 1) / p.total) / p.windows
        with self.lock:
            record["progress"] = min(99, int(100 * done))
            listeners = list(self.listeners.get(record["id"], []))
            want_preview = self.previews.get(record["id"], 0) > 0
        if not listeners:
            return
        event = {"type": "progress", "id": record["id"], "progress": record["progress"], "step": p.step + 1,
                 "total": p.total, "window": p.window + 1, "windows": p.windows, "sigma": float(p.sigma)}
        if want_preview and p.preview is not None:
            event["preview"] = _png_data_url(p.preview())
        for fn in listeners:
            fn(event)


def _png_data_url(frames: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frames[len(frames) // 2]).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pictures(folder) -> None:
    """The thumbnail (middle frame, WebP) and spritesheet (up to 8 frames in a row, JPEG) of a finished video."""
    from PIL import Image

    frames, _ = read_video(folder / "video.mp4")
    Image.fromarray(frames[len(frames) // 2]).save(folder / ".thumbnail.webp.part", format="WEBP")
    picks = np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int)
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(folder / ".spritesheet.jpg.part", format="JPEG", quality=90)
    (folder / ".thumbnail.webp.part").replace(folder / "thumbnail.webp")
    (folder / ".spritesheet.jpg.part").replace(folder / "spritesheet.jpg")
