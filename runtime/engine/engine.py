"""A bundle's graphs at work: sessions opened on first use, the tokenizer, text encoding,
the guided denoiser the samplers call, sampling and streaming decode.

`Engine` holds the open sessions and the tokenizer and nothing else between calls; every
run keeps its state in local variables, so several threads may run on one engine at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from ..bundle.load import Bundle
from ..bundle.preview import latent_preview
from ..errors import BundleError, Cancelled, InputError
from ..sampling import accel as accel_mod
from ..sampling import prediction, samplers, schedules
from ..sampling.guidance import hold_known
from .decode import StreamingDecoder
from .prompt_text import clean_prompt
from .progress import Progress
from .sessions import check_provider, check_threads, open_session

log = logging.getLogger("kinema")

# Graphs that run together and count as one component in low-memory mode: the decoder's
# prefix and step graphs alternate chunk by chunk. Every other graph is its own component.
SESSION_GROUPS = {"decoder_prefix": "decoder", "decoder_step": "decoder"}


class Engine:
    """A bundle's graphs on one execution provider (see the module doc)."""

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

    # ------------------------------------------------------------------ stages

    def encode_text(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token states (N, L, D) float32 and mask (N, L) int64 for a list of prompts."""
        cleaning = self.bundle.spec.tokenizer.clean
        enc = self.tokenizer().encode_batch([clean_prompt(p, cleaning) for p in prompts])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        (embeds,) = self.session("text_encoder").run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})
        return embeds.astype(np.float32), mask

    def latent_shape(self, st) -> tuple[int, int, int, int, int]:
        lat, v = self.bundle.latent, self.bundle.video
        t = (st.frames - v.frame_offset) // lat["temporal_compression"] + 1
        return (1, lat["channels"], t, st.height // lat["spatial_compression"], st.width // lat["spatial_compression"])

    def initial_noise(self, st) -> np.ndarray:
        """Seeded PCG64 standard normal noise in the latent shape: the same on every machine."""
        rng = np.random.Generator(np.random.PCG64(st.seed))
        return rng.standard_normal(self.latent_shape(st), dtype=np.float32)

    def sigmas(self, st) -> np.ndarray:
        kind = self.bundle.sampler["prediction"]
        if kind == "flow":
            listed = self.bundle.spec.sampler.timesteps  # a distilled model's own steps, when run with that many
            if listed is not None and st.steps == len(listed):
                return schedules.flow_sigmas_listed(listed, st.shift)
            # The multistep solvers run on the grids diffusers gives them (stopping short of sigma=1).
            fn = schedules.SCHEDULES[samplers.FLOW_SCHEDULE.get(st.sampler, "flow")]
            return fn(st.steps, st.shift)
        return schedules.vp_sigmas(st.steps, self._alphas_cumprod(), spacing=self.bundle.spec.sampler.spacing)

    def _alphas_cumprod(self) -> np.ndarray:
        vp = self.bundle.spec.sampler.vp  # the manifest parser requires it for every non-flow model
        return schedules.vp_alphas_cumprod(
            num_train_timesteps=vp.num_train_timesteps, beta_start=vp.beta_start, beta_end=vp.beta_end, beta_schedule=vp.beta_schedule,
        )

    def denoiser(
        self,
        st,
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

    def sample(self, st, x: np.ndarray, sigmas: np.ndarray, *, text=None, cond_latents=None,
               cond_mask=None, callback=None, cancel=None, accel: accel_mod.Accel | None = None) -> np.ndarray:
        """Latents sampled from state x at sigmas[0] to 0; frames where cond_mask is 1 are held at cond_latents."""

        def check_cancel():
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")

        text = self.encode_text([st.prompt, st.negative_prompt]) if text is None else text
        kind = self.bundle.sampler["prediction"]
        den = self.denoiser(st, text, cond_latents, cond_mask, guide_cache=accel_mod.guidance_cache(accel))
        if cond_mask is not None:
            den = hold_known(den, cond_latents, cond_mask)
        model = accel_mod.accelerate(den, sigmas, accel)

        pmap = self.bundle.preview_map

        def on_step(payload):
            check_cancel()
            if callback is not None:
                # preview(scale=1) -> uint8 (t, h, w, 3) of `denoised`, computed only when called; None without a map
                callback(Progress(
                    step=payload["step"], total=payload["total"], sigma=payload["sigma"], sigma_next=payload["sigma_next"],
                    x=payload["x"], denoised=payload["denoised"],
                    preview=None if pmap is None else partial(latent_preview, payload["denoised"], pmap),
                ))
            check_cancel()

        sample = samplers.SAMPLERS[st.sampler]
        return sample(model, x, sigmas, callback=on_step, **samplers.sampler_kwargs(st.sampler, flow=kind == "flow"))
