"""Decode bombs: a tiny file whose header declares huge frames is refused from the header, in bounded memory."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys

import pytest

LIMIT = 3 << 29  # the child's address space, 1.5 GiB: the commands run in it; one decoded 16000x16000 frame does not fit


def _gif_bomb(path, side=16000):
    """A valid GIF of a 1x1 image on a `side` x `side` logical screen (35 bytes)."""
    data = b"GIF89a" + struct.pack("<HH", side, side) + bytes([0x80, 0, 0]) + b"\x00\x00\x00\xff\xff\xff"
    data += b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00" + b";"
    path.write_bytes(data)
    return path


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.mark.parametrize("args", [
    ["verify", "{bomb}"],
    ["extend", "{bomb}", "--prompt", "a red circle", "--seconds", "1", "-o", "{out}"],
    ["edit", "{bomb}", "--prompt", "a red circle", "--strength", "0.5", "-o", "{out}"],
])
def test_a_gif_declaring_16000x16000_is_refused_from_its_header(tmp_path, args):
    bomb = _gif_bomb(tmp_path / "bomb.gif")
    assert bomb.stat().st_size == 35
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "kinema.runtime.cli", *[a.format(bomb=bomb, out=out) for a in args]]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limited, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and "16000x16000" in lines[0] and "megapixels" in lines[0] and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.gif"]
