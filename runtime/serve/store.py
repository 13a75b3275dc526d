"""The job store: records in SQLite, one folder of files per job, so a restart loses nothing.

    DATA/jobs.sqlite3                        the records (status, settings, error), WAL journal
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
import sqlite3
import threading
import time
from pathlib import Path

ID = re.compile(r"^video_[0-9a-f]{24}$")
VARIANTS = {"video": ("video.mp4", "video/mp4"), "thumbnail": ("thumbnail.webp", "image/webp"), "spritesheet": ("spritesheet.jpg", "image/jpeg")}


def new_id() -> str:
    return f"video_{secrets.token_hex(12)}"


def valid_id(job_id: str) -> bool:
    return isinstance(job_id, str) and ID.match(job_id) is not None


class Store:
    """Job records and files on disk; every method takes a checked id and is safe from any thread."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root).resolve()
        self.root = root / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL)")

    def folder(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def file(self, job_id: str, name: str) -> Path:
        return self.folder(job_id) / name

    def save(self, record: dict) -> None:
        """Write a record in one transaction: a crash leaves the old record or the new one."""
        self.folder(record["id"])
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs (id, seq, record) VALUES (?, ?, ?)",
                             (record["id"], record.get("seq", 0), json.dumps(record, sort_keys=True)))

    def load_all(self) -> list[dict]:
        """Every stored record in submission order; leftovers of a killed process removed."""
        with self._lock:
            rows = self._db.execute("SELECT id, record FROM jobs ORDER BY seq").fetchall()
        records = [json.loads(r) for i, r in rows if valid_id(i)]
        known = {r["id"] for r in records}
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)  # made for a job that was never accepted
                continue
            for part in folder.glob(".*.part"):
                shutil.rmtree(part) if part.is_dir() else part.unlink(missing_ok=True)
        return records

    def remove(self, job_id: str) -> None:
        folder = self.folder(job_id)
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def now() -> int:
    return int(time.time())
