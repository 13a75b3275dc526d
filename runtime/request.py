"""The request: one frozen, JSON-serialisable value describing any video kinema makes.

Every front end (the `kinema` commands, `Pipeline`'s methods, the desktop example, the
server and batch runners) builds a `Request` and hands it to the run path
(runtime/run.py); nothing about generation is decided anywhere else.

    Request(task="extend", prompt="the ball keeps rolling", inputs=("clip.mp4",), add_seconds=2.0,
            output="longer.mp4", marks=Marks(visible=True))

`inputs` are file paths (an image for animate, a clip for extend and edit, two clips for
connect); from Python they may also be uint8 arrays or `Video` values, which a request
sent as JSON cannot carry. `None` in a setting means the bundle's default.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields

from .errors import InputError
from .video.inputs import check_fit

TASKS = ("generate", "animate", "extend", "connect", "edit")
INPUTS = {"generate": 0, "animate": 1, "extend": 1, "connect": 2, "edit": 1}


@dataclass(frozen=True)
class Marks:
    """What marks the output carries besides the invisible watermark, which every kinema video has."""

    visible: bool = False  # a small "AI" label in the corner of every frame
    sign: bool = True  # a C2PA manifest in .mp4 output
    sign_cert: str | None = None  # PEM certificate chain; None = this machine's local kinema key
    sign_key: str | None = None
    include_prompt: bool = False  # record the prompt in the C2PA manifest


@dataclass(frozen=True)
class Request:
    """One video to make; see the module doc. Checked against a bundle by `run.prepare`."""

    task: str = "generate"
    prompt: str = ""
    inputs: tuple = ()
    negative_prompt: str | None = None
    frames: int | None = None
    seconds: float | None = None  # clip length (generate, animate); frames or seconds, not both
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    steps: int | None = None
    guidance: float | None = None
    shift: float | None = None
    seed: int = 0
    sampler: str | None = None
    cfg_mode: str = "batched"
    loop: bool = False  # generate: close the clip into a seamless loop
    add_seconds: float | None = None  # extend: new seconds (required); connect: transition length (None = one window)
    backward: bool = False  # extend: new frames before the clip
    strength: float | None = None  # edit: in (0, 1]
    fit: str = "crop"  # how inputs are fitted to the size: crop or pad
    teacache: float = 0.0  # step skipping (runtime/sampling/accel.py); every default is off
    cfg_cache: int = 0
    cfg_warmup: int = 3
    leap: float = 0.0
    leap_after: float = 0.5
    policy: str | None = None  # prompt policy JSON file; None = the built-in one
    output: str | None = None  # file or folder to write; None = return the video in memory
    native_size: bool = False  # write the model's size instead of scaling small clips up
    memory_check: bool = True  # refuse a run whose estimated peak exceeds the memory available
    marks: Marks = field(default_factory=Marks)

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputError(f"task {self.task!r} is unknown; choose one of {', '.join(TASKS)}")
        if not isinstance(self.inputs, tuple):
            object.__setattr__(self, "inputs", tuple(self.inputs) if isinstance(self.inputs, list) else (self.inputs,))
        want = INPUTS[self.task]
        if len(self.inputs) != want:
            raise InputError(f"task {self.task} takes {want} input file(s), got {len(self.inputs)}")
        check_fit(self.fit)
        if not isinstance(self.marks, Marks):
            raise InputError(f"marks must be a Marks value, got {type(self.marks).__name__}")
        if self.task == "extend" and self.add_seconds is None:
            raise InputError("extend needs add_seconds: how many seconds to add")
        if self.task == "edit" and self.strength is None:
            raise InputError("edit needs strength in (0, 1]")
        if self.loop and self.task != "generate":
            raise InputError(f"loop applies to generate only, not {self.task}")

    @property
    def mode(self) -> str:
        """The name stored in the file's metadata: the task, or "loop"."""
        return "loop" if self.loop else self.task

    def to_dict(self) -> dict:
        """The request as plain JSON values; in-memory inputs cannot be sent and raise InputError."""
        for i, x in enumerate(self.inputs):
            if not isinstance(x, str):
                raise InputError(f"inputs[{i}] is a {type(x).__name__}; a request sent as JSON names input files by path")
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, data) -> Request:
        """A request from JSON values; an unknown key or a value of the wrong type is an InputError naming it."""
        if not isinstance(data, dict):
            raise InputError(f"a request must be a JSON object, got {type(data).__name__}")
        kw = _typed(cls, data, "request")
        if "marks" in kw:
            kw["marks"] = Marks(**_typed(Marks, kw["marks"], "request.marks"))
        if "inputs" in kw:
            kw["inputs"] = tuple(kw["inputs"])
        return cls(**kw)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _typed(cls, data, where: str) -> dict:
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object")
    names = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise InputError(f"{where}.{key} is not a request field; known: {', '.join(names)}")
        kind = str(names[key].type)
        if value is None and "None" in kind:
            continue
        if key in ("marks",):
            continue
        if key == "inputs":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}.inputs must be a list of file paths")
            continue
        base = kind.split("|")[0].strip()
        ok = isinstance(value, _TYPES[base]) and (base == "bool" or not isinstance(value, bool))
        if base == "float" and ok and not math.isfinite(value):
            ok = False
        if not ok:
            raise InputError(f"{where}.{key} = {value!r} is not a {base}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in data]
    if missing:
        raise InputError(f"{where}.{missing[0]} is missing")
    return dict(data)
