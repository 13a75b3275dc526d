"""The job store: one folder per job under the server's data folder, so a restart loses nothing.

    DATA/jobs/video_<24 hex>/job.json        the record (status, settings, error), replaced atomically
    DATA/jobs/video_<24 hex>/input.<ext>     the uploaded image or clip, when the task has one
    DATA/jobs/video_<24 hex>/video.mp4       written by the run path's atomic writer
    DATA/jobs/video_<24 hex>/thumbnail.webp, spritesheet.jpg

An id is only ever used after it matches the id pattern, so a client's id can name nothing
outside the data folder. Temporary files a killed process left behind (`.*.part`) are
removed when the store opens; the video file exists only once it is complete.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

ID = re.compile(r"^video_[0-9a-f]{24}$")
VARIANTS = {"video": ("video.mp4", "video/mp4"), "thumbnail": ("thumbnail.webp", "image/webp"), "spritesheet": ("spritesheet.jpg", "image/jpeg")}


def new_id() -> str:
    return f"video_{secrets.token_hex(12)}"


def valid_id(job_id: str) -> bool:
    return isinstance(job_id, str) and ID.match(job_id) is not None


class Store:
    """Job records and files on disk; every method takes a checked id."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve() / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def file(self, job_id: str, name: str) -> Path:
        return self.folder(job_id) / name

    def save(self, record: dict) -> None:
        """Write a record atomically: a crash leaves the old record or the new one, never half of one."""
        folder = self.folder(record["id"])
        folder.mkdir(exist_ok=True)
        tmp = folder / f".job.json.{secrets.token_hex(4)}.part"
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, folder / "job.json")

    def load_all(self) -> list[dict]:
        """Every stored record, oldest first; leftovers of a killed process removed."""
        records = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not valid_id(folder.name):
                continue
            for part in folder.glob(".*.part"):
                shutil.rmtree(part) if part.is_dir() else part.unlink(missing_ok=True)
            try:
                record = json.loads((folder / "job.json").read_text())
            except (OSError, ValueError):
                shutil.rmtree(folder, ignore_errors=True)  # created but never recorded: nothing was accepted
                continue
            if record.get("id") == folder.name:
                records.append(record)
        return sorted(records, key=lambda r: (r["created_at"], r.get("seq", 0)))

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


def now() -> int:
    return int(time.time())
