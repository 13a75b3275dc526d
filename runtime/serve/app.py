"""The HTTP routes: OpenAI's /v1/videos, kinema's events stream and cancel, models, health, the page.

Every route that makes a video builds a `Request` from the client's fields, checks it with
the run path's own `run.prepare` (a bad value is a 400 naming the field, before the job is
queued) and hands it to the job queue, whose worker runs it through the run path. Errors
have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from .. import run
from ..errors import InputError, KinemaError
from ..request import Marks, Request
from . import fields
from .jobs import Jobs, QueueFull, public, used_settings
from .store import VARIANTS, Store, new_id, valid_id

POLL_MS = 500
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
VIDEO_TYPES = (".mp4", ".webm", ".gif", ".mov", ".mkv")
REMIX_STRENGTH = 0.7  # remix and edits without a strength: how much of the source is redone


class TooLarge(Exception):
    pass


def error(status: int, message: str, *, param: str | None = None, code: str | None = None, kind: str | None = None, headers=None):
    kind = kind or {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                    413: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _param(message: str, names: tuple[str, ...]) -> str | None:
    """The client field an error message starts with, if any."""
    head = message.split("=", 1)[0].split(":", 1)[0].split(" ", 1)[0]
    return head if head in names else None


# kinema's setting names back to the client's, for error messages
_CLIENT = {v[0]: k for k, v in fields.SETTINGS.items()} | {"seconds": "seconds"}


def _client_message(message: str) -> str:
    head = message.split("=", 1)[0]
    if head in _CLIENT and head != _CLIENT[head] and "=" in message:
        return _CLIENT[head] + message[len(head):]
    return message


class Server:
    """The served bundles, the job store and queue, and the limits."""

    def __init__(self, data: Path, pipes: dict, *, api_key: str | None, max_queue: int, max_body: int, ttl: float | None = None):
        self.store = Store(data)
        self.pipes = pipes
        self.default_model = next(iter(pipes))
        self.api_key = api_key
        self.max_body = max_body
        self.jobs = Jobs(self.store, pipes, max_queue=max_queue, ttl=ttl)

    # -- building a job from the client's fields ------------------------------------------

    def build(self, form: dict, task: str, *, source: str | None = None) -> dict:
        """A checked job record (not yet queued); InputError naming the field otherwise. Runs in a thread."""
        allowed = ("prompt", "model", "seconds", "size") + (("input_reference",) if task == "generate" else ("video",) if source is None and task != "remix" else ())
        openai, settings, marks = fields.parse_fields(form, allowed=allowed)
        prompt = openai.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt is required: describe the video")
        model = openai.get("model", self.default_model)
        if model not in self.pipes:
            raise InputError(f"model={model!r} is not served here; served: {', '.join(self.pipes)}")
        pipe = self.pipes[model]
        if "size" in openai:
            w, h = fields.parse_size(openai["size"])
            settings["width"] = fields.round_side("width", w, pipe.bundle.video)
            settings["height"] = fields.round_side("height", h, pipe.bundle.video)
        job_id = new_id()
        folder = self.store.folder(job_id)
        folder.mkdir()
        try:
            inputs, kind = self._inputs(openai, task, source, folder)
            if kind == "remix":
                kind = "edit"
            if kind in ("edit",):
                settings.setdefault("strength", REMIX_STRENGTH)
            if "seconds" in openai:
                key = "add_seconds" if kind == "extend" else "seconds"
                if kind in ("edit",):
                    raise InputError(f"seconds does not apply to {task}: an edit keeps the source's length")
                settings[key] = fields.parse_seconds(openai["seconds"])
            elif kind == "extend":
                raise InputError("seconds is required: how many seconds to add")
            request = Request(task=kind, prompt=prompt, inputs=tuple(str(folder / n) for n in inputs), marks=Marks(**marks), **settings)
            checked = run.prepare(pipe, request)  # the run path's own checks; output None: nothing opened
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        stored = request.to_dict() | {"inputs": list(inputs)}
        record = {"id": job_id, "model": model, "prompt": prompt, "task": kind, "request": stored,
                  "remixed_from_video_id": source if task == "remix" else None} | used_settings(checked.settings)
        if kind == "extend":  # the stitched total, as OpenAI reports an extension
            record["seconds"] = f"{(len(checked.media[0]) + checked.new_frames) / checked.settings.fps:g}"
        elif kind == "edit":
            record["seconds"] = f"{len(checked.media[0]) / checked.settings.fps:g}"
        return record

    def _inputs(self, openai: dict, task: str, source: str | None, folder: Path) -> tuple[list[str], str]:
        """The job's input files, saved in its folder, and the task they make."""
        if task == "generate":
            ref = openai.get("input_reference")
            if ref is None:
                return [], "generate"
            return [self._save_upload("input_reference", ref, IMAGE_TYPES, folder)], "animate"
        video = openai.get("video") if source is None else {"id": source}
        if video is None:
            raise InputError("video is required: an uploaded clip or {\"id\": ...} of a completed video")
        if isinstance(video, dict):
            src = video.get("id")
            record = self.jobs.get(src) if valid_id(src) else None
            if record is None or record["status"] != "completed":
                raise InputError(f"video id {src!r} is not a completed video on this server")
            shutil.copyfile(self.store.file(src, "video.mp4"), folder / "input.mp4")
            return ["input.mp4"], task
        return [self._save_upload("video", video, VIDEO_TYPES, folder)], task

    @staticmethod
    def _save_upload(name: str, upload, suffixes: tuple[str, ...], folder: Path) -> str:
        if not isinstance(upload, UploadFile):
            raise InputError(f"{name} must be an uploaded file")
        suffix = Path(upload.filename or "").suffix.lower()
        if suffix not in suffixes:
            raise InputError(f"{name}: file type {suffix or '(none)'!r} is not one of {', '.join(suffixes)}")
        target = f"input{suffix}"
        upload.file.seek(0)
        with open(folder / target, "wb") as out:
            shutil.copyfileobj(upload.file, out)
        return target


async def _form(request: HttpRequest) -> dict:
    """The body's fields: multipart or url-encoded form, or a JSON object; nested `video[id]` as OpenAI's SDK writes it."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise InputError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object")
        return body
    form = await request.form(max_files=4, max_fields=64)
    out: dict = {}
    for key, value in form.multi_items():
        if key.endswith("[id]"):
            out.setdefault(key[:-4], {})["id"] = value
        elif key in out:
            raise InputError(f"{key} is given twice")
        else:
            out[key] = value
    return out


def _json(record: dict, status: int = 200) -> JSONResponse:
    headers = {"openai-poll-after-ms": str(POLL_MS)} if record.get("status") in ("queued", "in_progress") else None
    return JSONResponse(public(record), status_code=status, headers=headers)


class Api:
    """The route handlers over one `Server`."""

    def __init__(self, server: Server):
        self.server, self.jobs = server, server.jobs
        self.refused = 0  # 429s since the server started

    async def submit(self, request: HttpRequest, task: str, source: str | None = None):
        try:
            form = await _form(request)
            record = await run_in_threadpool(self.server.build, form, task, source=source)
        except TooLarge:
            return error(413, f"the request body is over the server's limit of {self.server.max_body} bytes")
        except InputError as e:
            message = _client_message(str(e))
            return error(400, message, param=_param(message, (*fields.OPENAI, *fields.SETTINGS)))
        except KinemaError as e:
            return error(400, str(e))
        finally:
            if "form" in locals() and hasattr(form, "values"):
                for value in form.values():
                    if isinstance(value, UploadFile):
                        await value.close()
        try:
            return _json(self.jobs.submit(record))
        except QueueFull:
            self.server.store.remove(record["id"])
            self.refused += 1
            wait = max(1, POLL_MS * 2)
            return error(429, f"the queue is full ({self.jobs.max_queue} jobs); retry later", code="queue_full",
                         headers={"retry-after-ms": str(wait), "retry-after": str(max(1, wait // 1000))})

    def found(self, job_id: str):
        record = self.jobs.get(job_id) if valid_id(job_id) else None
        if record is None:
            return None, error(404, f"no video with id {job_id!r}", param="video_id", code="not_found")
        return record, None

    async def create(self, request):
        return await self.submit(request, "generate")

    async def extend(self, request):
        return await self.submit(request, "extend")

    async def edit(self, request):
        return await self.submit(request, "edit")

    async def remix(self, request):
        record, missing = self.found(request.path_params["video_id"])
        return missing or await self.submit(request, "remix", source=record["id"])

    async def retrieve(self, request):
        record, missing = self.found(request.path_params["video_id"])
        return missing or _json(record)

    async def listing(self, request):
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            return error(400, f"order={order!r} must be asc or desc", param="order")
        try:
            limit = int(q.get("limit", "20"))
            if not 1 <= limit <= 100:
                raise ValueError
        except ValueError:
            return error(400, f"limit={q.get('limit')!r} must be an integer in [1, 100]", param="limit")
        try:
            data, more = self.jobs.page(after=q.get("after"), limit=limit, order=order)
        except KeyError:
            return error(400, f"after={q.get('after')!r} is not a video id on this server", param="after")
        data = [public(r) for r in data]
        return JSONResponse({"object": "list", "data": data, "has_more": more,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def delete(self, request):
        job_id = request.path_params["video_id"]
        if not valid_id(job_id) or not self.jobs.delete(job_id):
            return error(404, f"no video with id {job_id!r}", param="video_id", code="not_found")
        return JSONResponse({"id": job_id, "deleted": True, "object": "video.deleted"})

    async def cancel(self, request):
        record, missing = self.found(request.path_params["video_id"])
        return missing or _json(self.jobs.cancel(record["id"]))

    async def content(self, request):
        record, missing = self.found(request.path_params["video_id"])
        if missing:
            return missing
        variant = request.query_params.get("variant", "video")
        if variant not in VARIANTS:
            return error(400, f"variant={variant!r} must be one of {', '.join(VARIANTS)}", param="variant")
        name, media = VARIANTS[variant]
        path = self.server.store.file(record["id"], name)
        if record["status"] != "completed" or not path.is_file():
            return error(404, f"video {record['id']} has no {variant} (status {record['status']})", code="not_ready")
        return FileResponse(path, media_type=media)

    async def events(self, request):
        record, missing = self.found(request.path_params["video_id"])
        if missing:
            return missing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = self.jobs.listen(record["id"], lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
                           preview=request.query_params.get("preview") in ("1", "true"))

        async def stream():
            try:
                current = self.jobs.get(record["id"]) or record
                yield _sse({"type": "status", "id": current["id"], "status": current["status"], "progress": current["progress"], "error": current.get("error")})
                if current["status"] in ("completed", "failed"):
                    return
                while True:
                    try:
                        ev = await asyncio.wait_for(queue.get(), timeout=15)
                    except asyncio.TimeoutError:
                        if self.jobs.get(record["id"]) is None:
                            return
                        yield ": keep-alive\n\n"
                        continue
                    yield _sse(ev)
                    if ev["type"] == "status" and ev["status"] in ("completed", "failed"):
                        return
            finally:
                stop()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def models(self, request):
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "kinema"} for name in self.server.pipes]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request):
        return JSONResponse({"status": "ok", "waiting": self.jobs.waiting(), "running": sorted(self.jobs.running.values()), "refused": self.refused})

    async def page(self, request):
        return HTMLResponse((Path(__file__).with_name("page.html")).read_text())

    def routes(self):
        vid = "/v1/videos/{video_id}"
        return [
            Route("/", self.page), Route("/health", self.health), Route("/v1/models", self.models),
            Route("/v1/videos", self.create, methods=["POST"]), Route("/v1/videos", self.listing, methods=["GET"]),
            Route("/v1/videos/extensions", self.extend, methods=["POST"]), Route("/v1/videos/edits", self.edit, methods=["POST"]),
            Route(vid, self.retrieve, methods=["GET"]), Route(vid, self.delete, methods=["DELETE"]),
            Route(vid + "/content", self.content, methods=["GET"]), Route(vid + "/events", self.events, methods=["GET"]),
            Route(vid + "/remix", self.remix, methods=["POST"]), Route(vid + "/cancel", self.cancel, methods=["POST"]),
        ]


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


class Guard:
    """ASGI middleware: the shared key on /v1 routes, and the body size limit (413) however the body is sent."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.server.api_key is not None and scope["path"].startswith("/v1/"):
            given = headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.server.api_key}".encode()):
                return await error(401, "incorrect API key provided", code="invalid_api_key")(scope, receive, send)
        length = headers.get("content-length")
        limit = self.server.max_body
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await error(413, f"the request body is over the server's limit of {limit} bytes")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge
            return message

        return await self.app(scope, limited, send)


def create_app(data: str | Path, pipes: dict, *, api_key: str | None = None, max_queue: int = 16, max_body: int = 64 << 20,
               ttl: float | None = None, cors: tuple[str, ...] = ()) -> Starlette:
    """The server's ASGI app; its workers start and stop with the app. CORS is off unless origins are given."""
    server = Server(Path(data), pipes, api_key=api_key, max_queue=max_queue, max_body=max_body, ttl=ttl)

    async def lifespan(app):
        server.jobs.start()
        yield
        await run_in_threadpool(server.jobs.stop)
        server.store.close()

    app = Starlette(routes=Api(server).routes(), lifespan=asynccontextmanager(lifespan))
    app.state.server = server
    app.add_middleware(Guard, server=server)
    if cors:  # outermost, so a refused key still carries the CORS headers the browser needs to read it
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type"])
    return app
