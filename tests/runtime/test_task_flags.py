"""Every `generate` flag that applies is taken by animate, extend, connect and edit, with the same meaning,
and arrives in the Request the run path gets."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from kinema.runtime import run
from kinema.runtime.cli.main import main
from kinema.runtime.errors import KinemaError

# flag -> (value on the command line, the Request field it sets, the value there)
FLAGS = {
    "--negative-prompt": ("blurry", "negative_prompt", "blurry"),
    "--fps": ("12", "fps", 12.0),
    "--width": ("48", "width", 48),
    "--height": ("32", "height", 32),
    "--steps": ("7", "steps", 7),
    "--cfg": ("3.5", "guidance", 3.5),
    "--seed": ("9", "seed", 9),
    "--sampler": ("heun", "sampler", "heun"),
    "--shift": ("2", "shift", 2.0),
    "--cfg-mode": ("sequential", "cfg_mode", "sequential"),
    "--teacache": ("0.2", "teacache", 0.2),
    "--cfg-cache": ("3", "cfg_cache", 3),
    "--leap": ("0.99", "leap", 0.99),
    "--policy": ("my_policy.json", "policy", "my_policy.json"),
    "--native-size": (None, "native_size", True),
    "--no-memory-check": (None, "memory_check", False),
}
MARKS = {  # flag -> (value, Marks field, value there)
    "--visible-watermark": (None, "visible", True),
    "--sign-cert": ("cert.pem", "sign_cert", "cert.pem"),
    "--sign-key": ("key.pem", "sign_key", "key.pem"),
    "--c2pa-include-prompt": (None, "include_prompt", True),
}
ENGINE = {"--provider": "cuda", "--threads": "3", "--low-memory": None, "--bundle": "somewhere"}  # how, not what: not in the Request

COMMANDS = {
    "generate": ["generate", "a red ball"],
    "animate": ["animate", "in.png", "--prompt", "a red ball"],
    "extend": ["extend", "in.mp4", "--seconds", "2", "--prompt", "a red ball"],
    "extend --backward": ["extend", "in.mp4", "--seconds", "2", "--backward", "--prompt", "a red ball"],
    "connect": ["connect", "a.mp4", "b.mp4", "--prompt", "a red ball"],
    "edit": ["edit", "in.mp4", "--strength", "0.5", "--prompt", "a red ball"],
}


def _argv(flags: dict) -> list[str]:
    out = []
    for flag, spec in flags.items():
        value = spec[0] if isinstance(spec, tuple) else spec
        out += [flag] if value is None else [flag, value]
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_generation_flag_reaches_the_run_path(command, monkeypatch):
    seen = {}

    def captured(request, policy=None):  # the run path's first step: stop there, before any file is read
        seen["request"] = request
        raise KinemaError("captured")

    monkeypatch.setattr(run, "precheck", captured)
    assert main([*COMMANDS[command], *_argv(FLAGS), *_argv(MARKS), *_argv(ENGINE), "-o", "out.mp4"]) == 2
    req = seen["request"]
    assert req.task == command.split()[0]
    for flag, (_, name, value) in FLAGS.items():
        assert getattr(req, name) == value, flag
    for flag, (_, name, value) in MARKS.items():
        assert getattr(req.marks, name) == value, flag
    assert req.output == "out.mp4"


def test_the_same_flags_make_the_same_request_apart_from_the_task(monkeypatch):
    got = {}

    def captured(request, policy=None):
        got[request.task] = asdict(request)
        raise KinemaError("captured")

    monkeypatch.setattr(run, "precheck", captured)
    for command in ("generate", "edit"):
        main([*COMMANDS[command], *_argv(FLAGS), *_argv(MARKS), "-o", "out.mp4"])
    task_fields = {"task", "inputs", "strength"}
    assert {k: v for k, v in got["generate"].items() if k not in task_fields} == {k: v for k, v in got["edit"].items() if k not in task_fields}


def test_a_request_round_trips_through_json():
    from kinema.runtime.request import Marks, Request

    req = Request("extend", "a ball", ("clip.mp4",), add_seconds=2.0, backward=True, steps=4, marks=Marks(visible=True), output="o.mp4")
    assert Request.from_dict(req.to_dict()) == req
    with pytest.raises(KinemaError, match="request.stepz is not a request field"):
        Request.from_dict({**req.to_dict(), "stepz": 4})
    with pytest.raises(KinemaError, match="request.steps = '4' is not a int"):
        Request.from_dict({**req.to_dict(), "steps": "4"})
