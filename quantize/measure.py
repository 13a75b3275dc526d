"""How far a quantized graph is from its source: SQNR of every output on fixed probe inputs.

The probes are inputs of the kind each graph sees while sampling, made from the source
bundle (its tokenizer, text encoder and decoder prefix), at a capped video size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.load import Bundle
from kinema.runtime.engine.sessions import open_session
from kinema.runtime.pipeline import Pipeline

from kinema.quantize.bundle_tools import tools_of

PROBE_SEED = 0
# Where on the noise range the denoiser is probed: flow sigma, or the fraction of the VP training steps.
PROBE_TIMES = (1.0, 0.75, 0.5, 0.25)


def probe_prompts(src: Bundle) -> tuple[str, ...]:
    """The bundle's probe prompts and the empty negative prompt the sampler pairs them with."""
    return (*tools_of(src).probe_prompts, "")


def _sqnr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise) rounded to 0.01 dB; None when the outputs are identical (infinite)."""
    if noise == 0.0:
        return None
    if signal == 0.0:
        return -math.inf if noise else None
    return round(10.0 * math.log10(signal / noise), 2)


# Probes run at the bundle's default video size, capped: a real-size model's default (Wan:
# 81 frames at 480x832, 32760 tokens) would make each probe a run of minutes and tens of GB.
PROBE_MAX_FRAMES = 17
PROBE_MAX_SIDE = 256


def _probe_size(b: Bundle) -> dict:
    """frames, height, width for the probes: the defaults, capped at PROBE_MAX_FRAMES and PROBE_MAX_SIDE, kept valid."""
    v = b.video
    frames = v.frames
    if frames > PROBE_MAX_FRAMES:
        frames = max(1, (PROBE_MAX_FRAMES - v.frame_offset) // v.frame_multiple) * v.frame_multiple + v.frame_offset

    def side(default: int) -> int:
        if default <= PROBE_MAX_SIDE:
            return default
        return max(v.min_side, PROBE_MAX_SIDE // v.size_multiple * v.size_multiple)

    return {"frames": frames, "height": side(v.height), "width": side(v.width)}


def _probes(pipe: Pipeline, names, prompts: tuple[str, ...]) -> dict[str, tuple[str, list[tuple[dict, dict]]]]:
    """Per component: (description, [(feeds, {output: row selector or None})]) from the source bundle.

    `prompts`: the bundle's probe prompts, then the empty negative prompt the sampler pairs them with.
    """
    b = pipe.bundle
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    st = pipe.check_inputs(prompts[0], **_probe_size(b))
    shape = pipe.latent_shape(st)  # (1, C, T, H, W)
    out: dict = {}
    if "text_encoder" in names:
        enc = pipe.tokenizer().encode_batch(list(prompts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)  # (N, L)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        out["text_encoder"] = (
            f"{len(prompts)} tokenized prompts (one empty); real tokens only, padding left out",
            [({"input_ids": ids, "attention_mask": mask}, {"text_embeds": mask.astype(bool)})],
        )
    if "denoiser" in names:
        embeds, tmask = pipe.encode_text([prompts[0], ""])  # (2, L, D) from the source text encoder
        flow = b.sampler["prediction"] == "flow"
        n_train = int(b.sampler.get("vp", {}).get("num_train_timesteps", 1000))
        runs = []
        for frac in PROBE_TIMES:
            x = rng.standard_normal(shape, dtype=np.float32)
            x2 = np.concatenate([x, x])  # (2, C, T, H, W): prompt and negative prompt, as batched guidance runs
            t = frac if flow else frac * (n_train - 1)
            feeds = {
                "latents": x2,
                "timestep": np.full((2,), t, np.float32),
                "text_embeds": embeds,
                "text_mask": tmask,
                "cond_latents": np.zeros_like(x2),
                "cond_mask": np.zeros((2, 1, shape[2], 1, 1), np.float32),
            }
            runs.append((feeds, {}))
        out["denoiser"] = (
            f"random N(0,1) latents {list(shape[1:])} x (prompt, empty prompt) real text embeddings, "
            f"timesteps at {', '.join(f'{f:g}' for f in PROBE_TIMES)} of the range",
            runs,
        )
    dec = b.decoder
    n0 = dec.get("prefix_latent_frames", 1)
    if "decoder_prefix" in names or "decoder_step" in names:
        prefix_runs, step_runs = [], []
        for _ in range(2):
            lat = rng.standard_normal(shape, dtype=np.float32)
            first = np.ascontiguousarray(lat[:, :, :n0])
            prefix_runs.append(({"latents": first}, {}))
            # The step graph is fed the source prefix's caches, so it is measured on its own.
            ref = pipe.session("decoder_prefix")
            state = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {"latents": first})))
            feeds = {"latents": np.ascontiguousarray(lat[:, :, n0 : n0 + 1])}
            feeds.update({c["input"]: state[c["output"]] for c in dec["caches"]})
            step_runs.append((feeds, {}))
        desc = f"random N(0,1) latents {list(shape[1:])}, 2 draws"
        out["decoder_prefix"] = (desc + f", first {n0} latent frame(s)", prefix_runs)
        out["decoder_step"] = (desc + ", the next latent frame with the source prefix's caches", step_runs)
    if "encoder" in names:
        frames = rng.random((1, st.frames, st.height, st.width, 3), dtype=np.float32)
        name = b.components["encoder"]["inputs"][0]["name"]
        out["encoder"] = (f"uniform random frames {list(frames.shape[1:])} in [0, 1]", [({name: frames}, {})])
    return out


def measure(src: Bundle, stage: Path, names: list[str], threads: int | None = None) -> dict:
    """Per changed component: SQNR (dB) of each output of the staged graph against the source graph.

    The probes are built from the source manifest's tools.probe_prompts (generic ones when
    it has none) and the empty negative prompt.
    """
    if not names:
        return {}
    pipe = Pipeline(src, threads=threads)
    probes = _probes(pipe, names, probe_prompts(src))
    result = {}
    for name in names:
        desc, runs = probes[name]
        ref = pipe.session(name)
        qs = open_session(stage / src.components[name]["file"], "cpu", threads)
        outs = [o.name for o in ref.get_outputs()]
        signal = dict.fromkeys(outs, 0.0)
        noise = dict.fromkeys(outs, 0.0)
        for feeds, rows in runs:
            for o, r, q in zip(outs, ref.run(outs, feeds), qs.run(outs, feeds)):
                r, q = np.asarray(r, np.float64), np.asarray(q, np.float64)
                if rows.get(o) is not None:
                    r, q = r[rows[o]], q[rows[o]]
                signal[o] += float(np.sum(r * r))
                noise[o] += float(np.sum((r - q) ** 2))
        result[name] = {"sqnr_db": {o: _sqnr_db(signal[o], noise[o]) for o in outs}, "inputs": desc}
    return result


__all__ = ["PROBE_SEED", "PROBE_TIMES", "measure", "probe_prompts"]
