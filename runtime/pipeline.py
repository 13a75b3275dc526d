"""Text to video from a bundle: tokenizer, ONNX sessions, NumPy sampler, streaming decoder.

    from kinema.runtime import Pipeline
    pipe = Pipeline.from_bundle()              # the built-in bundle
    video = pipe.generate("a red ball bouncing", seed=1)
    video.save("ball.mp4")

Settings are checked (`Pipeline.check_inputs`) before any graph is opened. The graphs
open on first use and stay open; `Pipeline` holds no other state between calls.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .sampling import accel as accel_mod
from .media import conditioning
from .sampling import prediction, samplers, schedules
from .bundle.load import Bundle, default_bundle_path, load_bundle
from .engine.decode import StreamingDecoder
from .errors import BundleError, Cancelled, InputError
from .engine.memory import estimate_memory
from .safety.policy import Policy, check_prompt
from .bundle.preview import latent_preview
from .engine.sessions import check_provider, check_threads, open_session
from .video.core import Video

CFG_MODES = ("batched", "sequential")
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_PROMPT_CHARS = 2000
# Graphs that run together and count as one component in low-memory mode: the decoder's
# prefix and step graphs alternate chunk by chunk. Every other graph is its own component.
SESSION_GROUPS = {"decoder_prefix": "decoder", "decoder_step": "decoder"}


@dataclass(frozen=True)
class GenerationSettings:
    """Every value that decides a generated video, resolved against the bundle's defaults."""

    prompt: str
    negative_prompt: str
    frames: int
    height: int
    width: int
    fps: float
    steps: int
    guidance: float
    shift: float
    seed: int
    sampler: str
    cfg_mode: str = "batched"
    loop: bool = False  # close the clip into a seamless loop (runtime/conditioning.py)

    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class Pipeline(conditioning.MediaMixin):
    """A bundle's graphs on one execution provider; `generate` turns a prompt into a `Video`.

    Thread-safe: several threads may call `generate` on one Pipeline at once. Graphs open
    once, under a lock; ONNX Runtime's `InferenceSession.run` is thread-safe; every run
    keeps its state in local variables. Logs go to the "kinema" logger; nothing is printed.
    """

    policy: Policy | None = None  # the prompt policy check_inputs applies; None = the built-in one

    def __init__(self, bundle: Bundle, *, provider: str = "cpu", threads: int | None = None, low_memory: bool = False):
        check_provider(provider)
        if not isinstance(low_memory, bool):
            raise InputError(f"low_memory={low_memory!r} must be True or False")
        # low_memory: one graph open at a time; opening one releases the others, so the
        # text encoder is freed before the denoiser loads and the denoiser before the decoder.
        self.low_memory = low_memory
        self.bundle = bundle
        self.provider = provider
        self.threads = check_threads(threads)
        self._sessions: dict = {}
        self._tokenizer = None
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, path: str | Path | None = None, *, provider: str = "cpu", threads: int | None = None, verify: bool = True, low_memory: bool = False) -> "Pipeline":
        """Check a bundle folder (the built-in one when path is None) and prepare to run it."""
        check_provider(provider)
        check_threads(threads)
        if path is None:
            path = default_bundle_path()
            if not (path / "manifest.json").is_file():
                raise BundleError(f"the built-in bundle is missing from this installation ({path}); reinstall kinema or pass a bundle folder")
        return cls(load_bundle(path, verify_hashes=verify), provider=provider, threads=threads, low_memory=low_memory)

    # ------------------------------------------------------------------ graphs

    def session(self, name: str):
        """The ONNX Runtime session of one component, opened on first use."""
        with self._lock:
            if name not in self._sessions:
                if not self.bundle.has(name):
                    raise BundleError(f"bundle {self.bundle.path}: has no {name} graph")
                if self.low_memory:  # one component open at a time (SESSION_GROUPS)
                    group = SESSION_GROUPS.get(name, name)
                    for other in [k for k in self._sessions if SESSION_GROUPS.get(k, k) != group]:
                        del self._sessions[other]  # a caller still running it keeps it alive until it returns
                t0 = time.perf_counter()
                self.bundle.check_unchanged(name)  # still the file load_bundle hashed
                self._sessions[name] = open_session(self.bundle.component_path(name), self.provider, self.threads)
                log.info("opened %s graph of %s on %s in %.2f s", name, self.bundle.name, self.provider, time.perf_counter() - t0)
            return self._sessions[name]

    def estimate_memory(self, frames: int | None = None, height: int | None = None, width: int | None = None, *, guidance: bool = True) -> dict[str, int]:
        """Bytes per stage and `peak` for one generation at this size (bundle defaults when None); see runtime/memory.py for the method."""
        _, frames, height, width = self._check_size(fps=None, frames=frames, seconds=None, height=height, width=width, loop=False)
        return estimate_memory(self.bundle, frames, height, width, guidance=guidance)

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                tok = self.bundle.tokenizer
                self.bundle.check_unchanged("tokenizer")
                try:
                    t = Tokenizer.from_file(str(self.bundle.path / tok["file"]))
                except Exception as e:  # tokenizers raises its own Exception type for a malformed file
                    raise BundleError(f"bundle {self.bundle.path}: tokenizer.json cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
                t.enable_truncation(tok["max_length"])
                t.enable_padding(length=tok["max_length"], pad_id=tok["pad_id"])
                self._tokenizer = t
            return self._tokenizer

    # ------------------------------------------------------------------ settings

    def check_inputs(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        frames: int | None = None,
        seconds: float | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        shift: float | None = None,
        seed: int = 0,
        sampler: str | None = None,
        cfg_mode: str = "batched",
        loop: bool = False,
    ) -> GenerationSettings:
        """Resolve settings against the bundle's defaults; raises InputError naming the first bad value."""
        s = self.bundle.sampler
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt is empty; describe the video to generate")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        check_prompt(prompt, self.policy)
        negative_prompt = s.get("negative_prompt", "") if negative_prompt is None else negative_prompt
        if not isinstance(negative_prompt, str) or len(negative_prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"negative prompt must be text of at most {MAX_PROMPT_CHARS} characters")

        fps, frames, height, width = self._check_size(fps, frames, seconds, height, width, loop)

        steps = s["steps"] if steps is None else steps
        if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps={steps!r} must be a whole number from 1 to {MAX_STEPS}")
        guidance = s["guidance"] if guidance is None else guidance
        if not _is_real(guidance) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
            raise InputError(f"guidance={guidance!r} must be a finite number from 0 to {MAX_GUIDANCE:g} (1 turns guidance off)")
        shift = s["shift"] if shift is None else shift
        if not _is_real(shift) or not math.isfinite(shift) or shift <= 0:
            raise InputError(f"shift={shift!r} must be a finite number > 0")
        if not _is_int(seed) or not 0 <= seed < 2**64:
            raise InputError(f"seed={seed!r} must be a whole number from 0 to 2**64-1")
        sampler = s["sampler"] if sampler is None else sampler
        if sampler not in samplers.SAMPLERS:
            raise InputError(f"sampler {sampler!r} is unknown; choose one of {', '.join(samplers.SAMPLERS)}")
        if cfg_mode not in CFG_MODES:
            raise InputError(f"cfg mode {cfg_mode!r} is unknown; choose one of {', '.join(CFG_MODES)}")
        return GenerationSettings(
            prompt=prompt,
            negative_prompt=negative_prompt,
            frames=int(frames),
            height=int(height),
            width=int(width),
            fps=float(fps),
            steps=int(steps),
            guidance=float(guidance),
            shift=float(shift),
            seed=int(seed),
            sampler=sampler,
            cfg_mode=cfg_mode,
            loop=bool(loop),
        )

    def _check_size(self, fps, frames, seconds, height, width, loop) -> tuple[float, int, int, int]:
        """fps, frames, height and width resolved against the bundle's video rules."""
        v = self.bundle.video
        fps = v.fps if fps is None else fps
        if not _is_real(fps) or not math.isfinite(fps) or not 0 < fps <= 240:
            raise InputError(f"fps={fps!r} must be a number in (0, 240]")
        rule = f"{v.frame_multiple}k+{v.frame_offset}"
        if frames is not None and seconds is not None:
            raise InputError("give --frames or --seconds, not both")
        if seconds is not None:
            if not _is_real(seconds) or not math.isfinite(seconds) or seconds <= 0:
                raise InputError(f"seconds={seconds!r} must be a number > 0")
            k = max(0, round((seconds * fps - v.frame_offset) / v.frame_multiple))
            frames = v.frame_multiple * k + v.frame_offset
        frames = v.frames if frames is None else frames
        if not _is_int(frames) or frames < 1 or (frames - v.frame_offset) % v.frame_multiple:
            ok = ", ".join(str(v.frame_multiple * k + v.frame_offset) for k in range(1, 5))
            raise InputError(f"frames={frames!r} must be {rule} (e.g. {ok}, ...) for this bundle's video decoder")
        conditioning.check_length(self.bundle, frames, fps, seconds, bool(loop))  # past one window: window by window

        height = v.height if height is None else height
        width = v.width if width is None else width
        for name, side in (("height", height), ("width", width)):
            if not _is_int(side) or side % v.size_multiple:
                raise InputError(f"{name}={side!r} must be a multiple of {v.size_multiple} for this bundle")
            if not v.min_side <= side <= v.max_side:
                raise InputError(f"{name}={side} is outside this bundle's range [{v.min_side}, {v.max_side}]")
        return float(fps), int(frames), int(height), int(width)

    # ------------------------------------------------------------------ stages

    def encode_text(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token states (N, L, D) float32 and mask (N, L) int64 for a list of prompts."""
        enc = self.tokenizer().encode_batch(prompts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        (embeds,) = self.session("text_encoder").run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})
        return embeds.astype(np.float32), mask

    def latent_shape(self, st: GenerationSettings) -> tuple[int, int, int, int, int]:
        lat, v = self.bundle.latent, self.bundle.video
        t = (st.frames - v.frame_offset) // lat["temporal_compression"] + 1
        return (1, lat["channels"], t, st.height // lat["spatial_compression"], st.width // lat["spatial_compression"])

    def initial_noise(self, st: GenerationSettings) -> np.ndarray:
        """Seeded PCG64 standard normal noise in the latent shape: the same on every machine."""
        rng = np.random.Generator(np.random.PCG64(st.seed))
        return rng.standard_normal(self.latent_shape(st), dtype=np.float32)

    def sigmas(self, st: GenerationSettings) -> np.ndarray:
        kind = self.bundle.sampler["prediction"]
        if kind == "flow":
            # The multistep solvers run on the grids diffusers gives them (stopping short of sigma=1).
            fn = schedules.SCHEDULES[samplers.FLOW_SCHEDULE.get(st.sampler, "flow")]
            return fn(st.steps, st.shift)
        return schedules.vp_sigmas(st.steps, self._alphas_cumprod(), spacing=self.bundle.sampler.get("spacing", "leading"))

    def _alphas_cumprod(self) -> np.ndarray:
        cfg = self.bundle.sampler.get("vp", {})
        return schedules.vp_alphas_cumprod(
            num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
            beta_start=float(cfg.get("beta_start", 0.00085)),
            beta_end=float(cfg.get("beta_end", 0.012)),
            beta_schedule=str(cfg.get("beta_schedule", "scaled_linear")),
        )

    def denoiser(
        self,
        st: GenerationSettings,
        text: tuple[np.ndarray, np.ndarray],
        cond_latents: np.ndarray | None = None,
        cond_mask: np.ndarray | None = None,
        guide_cache: accel_mod.GuidanceCache | None = None,
    ) -> Callable[[np.ndarray, float], np.ndarray]:
        """`model(x, sigma) -> denoised` for the samplers: guidance, conditioning and prediction type inside."""
        kind = self.bundle.sampler["prediction"]
        train_sigmas = None if kind == "flow" else schedules.vp_train_sigmas(self._alphas_cumprod())
        embeds, mask = text  # (2, L, D): [prompt, negative prompt]
        session = self.session("denoiser")
        guided = st.guidance != 1.0

        def network(x_in: np.ndarray, t: float) -> np.ndarray:
            b, c, tt, h, w = x_in.shape
            cl = np.zeros_like(x_in) if cond_latents is None else cond_latents
            cm = np.zeros((b, 1, tt, 1, 1), np.float32) if cond_mask is None else cond_mask

            def run(xs, e, m, n):
                feeds = {
                    "latents": xs.astype(np.float32),
                    "timestep": np.full((n,), t, np.float32),
                    "text_embeds": e,
                    "text_mask": m,
                    "cond_latents": np.repeat(cl, n // b, axis=0).astype(np.float32),
                    "cond_mask": np.repeat(cm, n // b, axis=0).astype(np.float32),
                }
                return session.run(["prediction"], feeds)[0]

            if not guided:
                return run(x_in, embeds[:1], mask[:1], b)
            if guide_cache is not None and not guide_cache.full():  # cond only, cached difference
                return guide_cache.apply(run(x_in, embeds[:1], mask[:1], b), st.guidance)
            if st.cfg_mode == "batched":
                both = run(np.concatenate([x_in, x_in]), embeds, mask, 2 * b)
                cond, uncond = both[:b], both[b:]
            else:  # one branch at a time: half the activation memory
                cond = run(x_in, embeds[:1], mask[:1], b)
                uncond = run(x_in, embeds[1:], mask[1:], b)
            if guide_cache is not None:
                guide_cache.store(cond, uncond)
            return uncond + st.guidance * (cond - uncond)

        return prediction.make_denoiser(network, kind, train_sigmas)

    def decode_stream(self, latents: np.ndarray) -> Iterator[np.ndarray]:
        """Yield float frames (B, t', H, W, 3) in [0, 1], one latent frame at a time: memory stays flat."""
        dec = StreamingDecoder(self)
        for i in range(latents.shape[2]):
            frames = dec.push(latents[:, :, i : i + 1])
            if frames is not None:
                yield frames

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Whole clip: float frames (B, T, H, W, 3) in [0, 1]."""
        return np.concatenate(list(self.decode_stream(latents)), axis=1)

    # ------------------------------------------------------------------ generate

    def generate(
        self,
        prompt: str,
        *,
        callback: Callable[[dict], None] | None = None,
        cancel: threading.Event | None = None,
        accel: accel_mod.Accel | None = None,
        **settings,
    ) -> Video:
        """Generate a video. `callback(payload)` runs after every step; setting `cancel` stops within one step.

        Settings are those of `check_inputs` (frames or seconds, height, width, fps, steps,
        guidance, shift, seed, sampler, negative_prompt, cfg_mode). A cancelled run raises
        `Cancelled` and returns nothing. The cancellation token is a `threading.Event` (any
        object with `is_set()` works), checked before and after every step's callback and
        between decoder chunks; set it from any thread. The payload's `preview` is a callable
        returning a uint8 RGB image per latent frame of `denoised` (None: the bundle has no map). `accel` (runtime.accel.Accel) turns on step skipping.
        """
        st = self.check_inputs(prompt, **settings)
        return self.run(st, callback=callback, cancel=cancel, accel=accel)

    def run(self, st: GenerationSettings, *, callback=None, cancel=None, accel: accel_mod.Accel | None = None) -> Video:
        """Generate from already checked settings."""
        if accel is not None and not isinstance(accel, accel_mod.Accel):
            raise InputError(f"accel={accel!r} must be a kinema.runtime.accel.Accel or None")

        def check_cancel():
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")

        check_cancel()
        meta = st.metadata() | ({"accel": accel.metadata()} if accel is not None and accel.active else {}) | {"bundle": self.bundle.name, "bundle_sha256": self.bundle.digest, "generator": _generator()}
        if conditioning.windowed(self.bundle, st):  # longer than one window, or a loop
            chunks = conditioning.long_stream(self, st, callback=callback, cancel=cancel, accel=accel)
            return Video(np.concatenate(list(chunks)), st.fps, meta)
        sigmas = self.sigmas(st)
        x = self.initial_noise(st) * np.float32(prediction.initial_noise_scale(sigmas, self.bundle.sampler["prediction"]))
        latents = self.sample(st, x, sigmas, callback=callback, cancel=cancel, accel=accel)
        frames = []
        for chunk in self.decode_stream(latents):
            check_cancel()
            frames.append(chunk[0])
        frames = np.concatenate(frames, axis=0)  # (T, H, W, 3)
        return Video.from_float(frames, st.fps, meta)

    def sample(self, st: GenerationSettings, x: np.ndarray, sigmas: np.ndarray, *, text=None, cond_latents=None,
               cond_mask=None, callback=None, cancel=None, accel: accel_mod.Accel | None = None) -> np.ndarray:
        """Latents sampled from state x at sigmas[0] to 0; frames where cond_mask is 1 are held at cond_latents."""

        def check_cancel():
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")

        text = self.encode_text([st.prompt, st.negative_prompt]) if text is None else text
        kind = self.bundle.sampler["prediction"]
        den = self.denoiser(st, text, cond_latents, cond_mask, guide_cache=accel_mod.guidance_cache(accel))
        if cond_mask is not None:
            den = conditioning.hold_known(den, cond_latents, cond_mask)
        model = accel_mod.accelerate(den, sigmas, accel)

        pmap = self.bundle.preview_map

        def on_step(payload):
            check_cancel()
            if callback is not None:
                # preview(scale=1) -> uint8 (t, h, w, 3) of `denoised`, computed only when called; None without a map
                callback({**payload, "preview": None if pmap is None else partial(latent_preview, payload["denoised"], pmap)})
            check_cancel()

        sample = samplers.SAMPLERS[st.sampler]
        return sample(model, x, sigmas, callback=on_step, **samplers.sampler_kwargs(st.sampler, flow=kind == "flow"))


def _generator() -> str:
    from kinema import __version__

    return f"kinema {__version__}"


log = logging.getLogger("kinema")

__all__ = ["Pipeline", "GenerationSettings"]
