"""The comparison written out: report.json, report.md, the pictures and index.html, in one folder, atomically."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.writer import write_folder
from kinema.runtime.errors import InputError

from kinema.quantize.compare.pictures import contact_sheet, pictures_available, video_grid
from kinema.quantize.compare.pictures import plots as draw_plots


def _fmt(v, spec: str = ".2f", none: str = "identical") -> str:
    if v is None:
        return none
    return format(v, spec)


def markdown_table(report: dict) -> str:
    """The report's main table: one row per bundle."""
    ref_bytes = report["bundles"][0]["bytes"]
    cols = ["bundle", "size MiB", "size vs ref", "load s", "peak RSS MiB", "step ms", "e2e s", "video PSNR dB", "SSIM", "temporal PSNR dB", "adherence", "denoiser SQNR dB", "worst teacher-forced step PSNR dB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in report["bundles"]:
        c = e.get("cost", {})
        den = e["components"].get("denoiser", {}).get("sqnr_db", {})
        tf = [v for v in e["steps"]["teacher_forced_psnr_db"] if v is not None]
        v = e["video"]
        lines.append(
            "| "
            + " | ".join(
                [
                    e["label"] + (" (ref)" if e["reference"] else ""),
                    f"{e['bytes'] / 2**20:.1f}",
                    f"{e['bytes'] / ref_bytes:.2f}",
                    _fmt(c.get("load_s"), ".2f", "-"),
                    _fmt(c.get("peak_rss_mib"), ".0f", "-"),
                    _fmt(None if c.get("step_s") is None else c["step_s"] * 1000, ".1f", "-"),
                    _fmt(c.get("e2e_s"), ".2f", "-"),
                    "ref" if e["reference"] else _fmt(v["psnr_db"]),
                    "ref" if e["reference"] else f"{v['ssim']:.4f}",
                    "ref" if e["reference"] else _fmt(v["temporal_psnr_db"]),
                    _fmt(e["adherence"], ".3f", "-"),
                    "ref" if e["reference"] else ", ".join(_fmt(x, ".1f") for x in den.values()) or "-",
                    "ref" if e["reference"] else (f"{min(tf):.1f}" if tf else "identical"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def sensitivity_markdown(report: dict) -> str:
    """Per quantized bundle and graph, its groups sorted most sensitive first; empty when none was measured."""
    parts = []
    for e in report["bundles"]:
        for comp, sens in e.get("sensitivity", {}).items():
            parts.append(f"### {e['label']}: {comp} ({sens['precision']}, {sens['inputs']} recorded graph inputs)\n\n")
            parts.append("| group | nodes | SQNR dB, only this group quantized | SQNR dB, only this group kept float |\n|---|---|---|---|\n")
            for r in sens["groups"]:
                parts.append(f"| {r['group']} | {r['nodes']} | {_fmt(r['only_quantized_sqnr_db'], '.1f', '-')} | {_fmt(r['only_float_sqnr_db'], '.1f', '-')} |\n")
            parts.append("\n")
    return "".join(parts)


def _md_to_html(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.strip().splitlines() if not r.startswith("|---")]
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sensitivity_html(report: dict, plots: list[str]) -> str:
    parts = []
    for k, e in enumerate(report["bundles"]):
        for comp, sens in e.get("sensitivity", {}).items():
            md = sensitivity_markdown({"bundles": [{**e, "sensitivity": {comp: sens}}]})
            title, _, table = md.partition("\n\n")
            chart = f"sensitivity_{k}_{comp}.png"
            img = f'<img src="{chart}" alt="{html.escape(e["label"])} {comp} sensitivity">' if chart in plots else ""
            parts.append(f'<section class="sensitivity" data-bundle="{html.escape(e["label"])}" data-graph="{comp}"><h3>{html.escape(title.lstrip("# "))}</h3>{img}{_md_to_html(table)}</section>')
    return "".join(parts)


def _html(report: dict, table_md: str, plots: list[str], sheet: str | None, grid: list[str], note: str | None) -> str:
    s = report["settings"]
    comp_rows = []
    for e in report["bundles"][1:]:  # the reference against itself is identical everywhere
        for c, v in e["components"].items():
            sq = ", ".join(f"{k} {_fmt(x, '.1f')}" for k, x in v["sqnr_db"].items())
            comp_rows.append(f"<tr><td>{html.escape(e['label'])}</td><td>{c}</td><td>{v['precision']}</td><td>{v['inputs']}</td><td>{html.escape(sq)}</td></tr>")
    figs = "".join(f'<figure><img src="{p}" alt="{p}"><figcaption>{p}</figcaption></figure>' for p in plots if not p.startswith("sensitivity_"))
    sens = _sensitivity_html(report, plots)
    vids = "".join(f'<source src="{g}" type="video/{g.rsplit(".", 1)[1]}">' for g in grid)
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report["definitions"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kinema compare: {html.escape(report['reference'])}</title>
<style>body{{font-family:sans-serif;margin:16px;max-width:1300px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:3px 6px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:6px}}img{{max-width:100%}}</style></head><body>
<h1>kinema compare</h1>
<p>Reference <b>{html.escape(report['reference'])}</b>; {len(s['prompts'])} prompt(s) x {len(s['seeds'])} seed(s),
{s['frames']} frames {s['width']}x{s['height']}, {s['steps']} {s['sampler']} steps, guidance {s['guidance']:g};
per-step and per-graph figures over the first {s['detail_prompts']} prompt(s). Same prompts, seeds and initial noise for every bundle.</p>
{f'<p><b>{html.escape(note)}</b></p>' if note else ''}
<h2>Summary</h2>{_md_to_html(table_md)}
<h2>Plots</h2>{figs or '<p>(no plots)</p>'}
{f'<h2>Per-group sensitivity</h2>{sens}' if sens else ''}
<h2>Contact sheet</h2>{f'<img src="{sheet}" alt="contact sheet">' if sheet else '<p>(none)</p>'}
<h2>Side-by-side videos</h2>{f'<video controls loop autoplay muted>{vids}</video>' if grid else '<p>(none)</p>'}
<h2>Per graph SQNR on recorded inputs</h2><table><tr><th>bundle</th><th>graph</th><th>precision</th><th>inputs</th><th>SQNR dB</th></tr>{''.join(comp_rows)}</table>
<h2>Definitions</h2><ul>{defs}</ul>
<p><a href="report.json">report.json</a> · <a href="report.md">report.md</a></p>
</body></html>
"""


def check_report_dir(out: str | Path, overwrite: bool = False) -> Path:
    """The report folder, checked before any work: new, empty, or (with overwrite) an earlier report."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; give a folder for the report")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"-o {out}: folder exists and is not empty; choose another or pass --overwrite")
        if not (out / "report.json").is_file():
            raise InputError(f"-o {out}: not an earlier compare report (no report.json); refusing to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"-o {out}: folder {parent} does not exist")
    return out


def write_report(report: dict, videos: dict[str, list[np.ndarray]], out: str | Path, *, overwrite: bool = False) -> Path:
    """Write report.json, report.md, PNG plots, contact_sheet.png, video_grid.{webm,mp4} and index.html into `out`, atomically."""
    out = check_report_dir(out, overwrite)
    table = markdown_table(report)

    def fill(stage: Path) -> None:
        note = None
        plots, sheet, grid = [], None, []
        if pictures_available():
            plots = draw_plots(report, stage)
            prompts = report["settings"]["prompts"]
            from PIL import Image

            sheet = "contact_sheet.png"
            Image.fromarray(contact_sheet(videos, prompts)).save(stage / sheet)
            from kinema.runtime.video.core import Video

            frames = video_grid(videos, prompts)
            fps = float(report["settings"]["fps"])
            for name in ("video_grid.webm", "video_grid.mp4"):
                Video(frames, fps).save(stage / name, scale=1)
                grid.append(name)
        else:
            note = "pictures skipped: matplotlib and Pillow are not installed (pip install 'kinema[export]')"
        full = {**report, "files": {"plots": plots, "contact_sheet": sheet, "videos": grid}, "note": note}
        (stage / "report.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        sens = sensitivity_markdown(report)
        md = f"# kinema compare\n\nReference: {report['reference']}\n\n{table}\n" + (f"## Per-group sensitivity\n\n{sens}" if sens else "") + "".join(f"- {k}: {v}\n" for k, v in report["definitions"].items())
        (stage / "report.md").write_text(md, encoding="utf-8")
        (stage / "index.html").write_text(_html(full, table, plots, sheet, grid, note), encoding="utf-8")

    return write_folder(out, fill)


__all__ = ["check_report_dir", "markdown_table", "sensitivity_markdown", "write_report"]
