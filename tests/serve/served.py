"""A `kinema serve` process started by a test, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY = "sk-kinema-test"
FAST = {"num_inference_steps": 3, "seed": 4}  # a short run; the same settings through `kinema generate`
PROMPT = "a red circle moving right on a black background"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One server process on `data`; `start` waits for /health, `kill` sends SIGKILL."""

    def __init__(self, data: Path, *extra: str, key: str | None = KEY):
        self.data, self.extra, self.key = data, extra, key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> Served:
        import httpx2 as httpx

        cmd = [sys.executable, "-m", "kinema.runtime.cli", "serve", "--port", str(self.port), "--data", str(self.data), "--threads", "1", *self.extra]
        if self.key:
            cmd += ["--api-key", self.key]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log = open(self.data.parent / f"serve-{self.port}.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not answer /health within 60 s")

    def client(self, key: str | None = None, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.key or "any", **kw)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
