"""The report's pictures: plots of error against size and speed, a contact sheet, a side-by-side video grid.

They need matplotlib and Pillow (kinema[export]); `pictures_available` says whether they are there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHEET_PROMPTS = 3  # prompts shown in the contact sheet
SHEET_EVERY = 4  # every 4th frame in the contact sheet


def pictures_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    others = [e for e in report["bundles"] if not e["reference"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in ((axes[0], "teacher_forced_psnr_db", "teacher-forced (reference trajectory)"), (axes[1], "free_running_psnr_db", "free-running (own trajectory)")):
        for e in others:
            ys = [99.0 if y is None else y for y in e["steps"][key]]
            ax.plot(range(len(ys)), ys, marker="o", ms=3, label=e["label"])
        ax.set_title(f"denoised latent PSNR per step, {title}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR vs reference (dB)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "error_per_step.png", dpi=100)
    plt.close(fig)
    written.append("error_per_step.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for e in others:
        y = 99.0 if e["video"]["psnr_db"] is None else e["video"]["psnr_db"]
        axes[0].scatter(e["bytes"] / 2**20, y)
        axes[0].annotate(e["label"], (e["bytes"] / 2**20, y), fontsize=7)
        if e.get("cost", {}).get("step_s"):
            axes[1].scatter(e["cost"]["step_s"] * 1000, y)
            axes[1].annotate(e["label"], (e["cost"]["step_s"] * 1000, y), fontsize=7)
    ref = report["bundles"][0]
    axes[0].axvline(ref["bytes"] / 2**20, color="gray", ls="--", lw=1, label=f"{ref['label']} (reference)")
    if ref.get("cost", {}).get("step_s"):
        axes[1].axvline(ref["cost"]["step_s"] * 1000, color="gray", ls="--", lw=1, label=f"{ref['label']} (reference)")
    axes[0].set_xlabel("bundle size (MiB)")
    axes[1].set_xlabel("time per denoiser step (ms)")
    axes[0].set_ylabel("video PSNR vs reference (dB)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # --no-cost leaves the time axis without a reference line
            ax.legend(fontsize=7)
    fig.suptitle("what each bundle buys (x) for what it costs in accuracy (y)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "size_latency_vs_psnr.png", dpi=100)
    plt.close(fig)
    written.append("size_latency_vs_psnr.png")
    return written + sensitivity_charts(report, out)


def sensitivity_charts(report: dict, out: Path) -> list[str]:
    """One bar chart per quantized bundle and graph: each group's SQNR with only it quantized, and with only it kept float."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for k, e in enumerate(report["bundles"]):
        for comp, sens in e.get("sensitivity", {}).items():
            rows = sens["groups"]
            if not rows:
                continue
            names = [r["group"] for r in rows]
            y = np.arange(len(rows))
            fig, ax = plt.subplots(figsize=(10, 1.4 + 0.28 * len(rows)))
            oq = [np.nan if r["only_quantized_sqnr_db"] is None else r["only_quantized_sqnr_db"] for r in rows]
            of = [np.nan if r["only_float_sqnr_db"] is None else r["only_float_sqnr_db"] for r in rows]
            ax.barh(y - 0.2, oq, height=0.4, color="tab:red", label="only this group quantized")
            ax.barh(y + 0.2, of, height=0.4, color="tab:blue", label="only this group kept float")
            whole = [v for v in e["components"].get(comp, {}).get("sqnr_db", {}).values() if v is not None]
            if whole:
                ax.axvline(min(whole), color="black", ls="--", lw=1, label=f"whole recipe ({min(whole):.1f} dB)")
            ax.set_yticks(y, names, fontsize=7)
            ax.invert_yaxis()  # most sensitive (lowest SQNR quantized alone) on top
            ax.set_xlabel(f"{comp} output SQNR vs reference (dB, worst output; higher is better)")
            ax.set_title(f"{e['label']}: {comp} ({sens['precision']}), per-group sensitivity", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()
            name = f"sensitivity_{k}_{comp}.png"
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            written.append(name)
    return written


def _text_strip(text: str, width: int, height: int = 14) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).text((2, 1), text, fill="black")
    return np.asarray(img)


def _even(a: np.ndarray) -> np.ndarray:
    """Pad (.., H, W, 3) with white to even H and W (H.264/VP9 4:2:0 needs them)."""
    h, w = a.shape[-3:-1]
    pad = [(0, 0)] * (a.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
    return np.pad(a, pad, constant_values=255)


def video_grid(videos: dict[str, list[np.ndarray]], prompts: Sequence[str], scale: int = 2, gap: int = 4) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: one column per bundle (labelled), one row per prompt (labelled)."""
    labels = list(videos)
    n = min(len(v) for v in videos.values())
    first = videos[labels[0]][0]
    t, h, w = first.shape[0], first.shape[1] * scale, first.shape[2] * scale
    col_w = w + gap
    width = col_w * len(labels)
    header = np.concatenate([_text_strip(lab[: col_w // 6], col_w) for lab in labels], axis=1)  # (14, width, 3)
    blocks = [np.broadcast_to(header, (t, *header.shape))]
    for i in range(n):
        strip = _text_strip(prompts[i][: width // 6], width)
        blocks.append(np.broadcast_to(strip, (t, *strip.shape)))
        cells = []
        for lab in labels:
            v = np.kron(videos[lab][i], np.ones((1, scale, scale, 1), np.uint8))  # (T, h, w, 3)
            cells.append(np.pad(v, ((0, 0), (0, gap), (0, gap), (0, 0)), constant_values=255))
        blocks.append(np.concatenate(cells, axis=2))
    return _even(np.ascontiguousarray(np.concatenate(blocks, axis=1)))


def contact_sheet(videos: dict[str, list[np.ndarray]], prompts: Sequence[str], scale: int = 2, gap: int = 4) -> np.ndarray:
    """One image (H, W, 3): per prompt, a row of every 4th frame for each bundle, labelled."""
    labels = list(videos)
    n = min(SHEET_PROMPTS, min(len(v) for v in videos.values()))
    label_w = 150
    parts = []
    for i in range(n):
        rows = []
        for lab in labels:
            picks = videos[lab][i][::SHEET_EVERY]
            cells = [np.pad(np.kron(f, np.ones((scale, scale, 1), np.uint8)), ((0, gap), (0, gap), (0, 0)), constant_values=255) for f in picks]
            strip = np.concatenate(cells, axis=1)
            name = _text_strip(lab[:24], label_w, strip.shape[0])
            rows.append(np.concatenate([name, strip], axis=1))
        width = rows[0].shape[1]
        parts.append(_text_strip(f"{prompts[i]}  (every {SHEET_EVERY}th frame)"[: width // 6], width, 16))
        parts.extend(rows)
        parts.append(np.full((gap * 2, width, 3), 255, np.uint8))
    return np.concatenate(parts, axis=0)


__all__ = ["contact_sheet", "pictures_available", "plots", "sensitivity_charts", "video_grid"]
