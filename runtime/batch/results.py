"""`DIR/results.jsonl`: one row per request, appended as each finishes, so a rerun picks up where a run stopped.

A row: the key (`line:seed`), the line and seed, the request, the settings used, the output
path, its sha256, the seconds it took, the worker, and `error` (null when it worked). A rerun
skips a request whose row has no error and whose file is still there with that hash. When a
run ends the file is rewritten atomically with one row per request, in the batch's order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .worker import sha256_file


class Results:
    def __init__(self, out: Path):
        self.path = Path(out) / "results.jsonl"
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            for raw in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue  # a line cut short by a killed run
                if isinstance(row, dict) and isinstance(row.get("key"), str):
                    self.rows[row["key"]] = row
        self._file = None

    def done(self, key: str, output: str) -> bool:
        """Whether an earlier run made this request's file, and the file is still what it wrote."""
        row = self.rows.get(key)
        if row is None or row.get("error") is not None or row.get("output") != output or not Path(output).is_file():
            return False
        return sha256_file(output) == row.get("sha256")

    def add(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[row["key"]] = row

    def finish(self, keys: list[str]) -> None:
        """Rewrite the file with one row per key that has one, in this order."""
        if self._file is not None:
            self._file.close()
            self._file = None
        tmp = self.path.with_name(f".{self.path.name}.part")
        tmp.write_text("".join(json.dumps(self.rows[k], sort_keys=True) + "\n" for k in keys if k in self.rows), encoding="utf-8")
        os.replace(tmp, self.path)
