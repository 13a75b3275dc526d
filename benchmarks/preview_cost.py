"""What a step preview costs: the manifest's latent->RGB map against the work of a step, side by side.

    python benchmarks/preview_cost.py [--threads 2] [--rounds 5] [--out benchmarks/results]

A preview is one (C x 3) matrix product per latent cell (runtime/bundle/preview.py). This
times `latent_preview` on latents of the sizes users sample, with random maps of the right
channel count: the built-in bundle's default clip, Wan 2.1 (16 channels) at 17x256x256 and
81x480x832, and Wan 2.2 TI2V (48 channels) at 121x704x1280. For the built-in bundle the
same run times one guided denoiser step and the full streaming decode of that clip, so the
preview's share of a step is measured, not assumed. Writes
benchmarks/results/preview_cost/result.json and result.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import common

NAME = "preview_cost"
# (label, channels, latent frames, latent height, latent width): frames (F - 1) / 4 + 1, pixels / 8 (Wan 2.2: / 16).
WAN_LATENTS = [
    ("Wan 2.1, 17x256x256", 16, 5, 32, 32),
    ("Wan 2.1, 81x480x832", 16, 21, 60, 104),
    ("Wan 2.2 TI2V, 121x704x1280", 48, 31, 44, 80),
]


def _ms(times: list[float]) -> float:
    return round(1000.0 * statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from kinema.runtime import Pipeline
    from kinema.runtime.bundle.load import default_bundle_path
    from kinema.runtime.bundle.preview import PreviewMap, latent_preview

    pipe = Pipeline.from_bundle(default_bundle_path(), threads=args.threads)
    st = pipe.check_inputs("a yellow star spinning on a gray background", seed=0)
    captured = {}

    def grab(p):
        captured.setdefault("denoised", p["denoised"].copy())

    video = pipe.generate("a yellow star spinning on a gray background", seed=0, callback=grab)
    z = captured["denoised"]
    steps = st.steps
    pmap = pipe.bundle.preview_map
    fns = {
        "preview": lambda: latent_preview(z, pmap),
        "decode": lambda: pipe.decode(z),
        "generate": lambda: pipe.generate("a yellow star spinning on a gray background", seed=0),
    }
    times = common.interleaved(fns, rounds=args.rounds, per_round=1, warm=1)
    step_ms = _ms(times["generate"]) / steps  # the whole clip's time per step: text, sampling and decode shared out
    rows = [{
        "latent": f"built-in bundle, default clip ({video.frames.shape[0]}x{video.frames.shape[1]}x{video.frames.shape[2]})",
        "shape": list(z.shape[1:]),
        "preview_ms": _ms(times["preview"]),
        "decode_ms": _ms(times["decode"]),
        "clip_ms_per_step": round(step_ms, 3),
        "preview_share_of_step": round(_ms(times["preview"]) / step_ms, 5),
    }]
    rng = np.random.default_rng(0)
    for label, c, t, h, w in WAN_LATENTS:
        wmap = PreviewMap(rng.standard_normal((c, 3)).astype(np.float32) * 0.1, np.full(3, 0.5, np.float32))
        lat = rng.standard_normal((1, c, t, h, w)).astype(np.float32)
        rows.append({"latent": label, "shape": [c, t, h, w], "preview_ms": _ms(common.timed(lambda: latent_preview(lat, wmap), args.rounds * 3))})
    data = {"machine": common.machine(threads=args.threads), "date": common.utc_now(), "steps": steps, "rows": rows}
    lines = [
        f"Step preview cost, {common.describe_machine(data['machine'])}, {data['date']}",
        "",
        "| latent | shape (C, T, H, W) | preview ms | decode ms | clip ms per step | preview / step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['latent']} | {tuple(r['shape'])} | {r['preview_ms']} | {r.get('decode_ms', '')} | "
                     f"{r.get('clip_ms_per_step', '')} | {r.get('preview_share_of_step', '')} |")
    lines += ["", f"Medians over {args.rounds} interleaved rounds (built-in bundle) and {args.rounds * 3} calls (Wan sizes, random maps); "
              f"clip ms per step is one whole default clip ({steps} guided steps, text encoding and decode included) divided by its steps."]
    common.write_result(NAME, data, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
