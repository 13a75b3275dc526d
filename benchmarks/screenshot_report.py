"""Screenshot a compare report's HTML page in headless Chromium: proof that its plots and contact sheet render.

    python benchmarks/screenshot_report.py [REPORT_DIR] [-o docs/quantize_report.png]

REPORT_DIR defaults to benchmarks/results/quantize_table/report, the compare report
benchmarks/quantize_table.py writes.

Needs a Chromium (or Chrome) binary on PATH: `apt-get install chromium` on Debian/Ubuntu.
The page is opened from disk with a tall window so the summary table, both plots and
the contact sheet are in one picture; the script then checks the PNG is not blank.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"no headless browser found (looked for {', '.join(BROWSERS)}); install one, e.g. apt-get install chromium")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path} is not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def distinct_rows(path: Path) -> int:
    """How many different scanlines the PNG holds (a blank page has 1): decoded with zlib, no imaging library."""
    data = path.read_bytes()
    w, h = png_size(path)
    pos, idat = 8, b""
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = len(raw) // h
    return len({raw[i * stride + 1 : (i + 1) * stride] for i in range(h)})


def screenshot(report_dir: Path, out: Path, width: int = 1300, height: int = 2600) -> Path:
    page = (report_dir / "index.html").resolve()
    if not page.is_file():
        raise SystemExit(f"{page} does not exist; run `kinema compare ... -o {report_dir}` first")
    browser = find_browser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kinema-shot-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",  # let the images load before the shot
            f"--screenshot={out.resolve()}",
            page.as_uri(),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0 or not out.is_file():
        raise SystemExit(f"{Path(browser).name} failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:] or 'no output'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", nargs="?", type=Path, default=ROOT / "benchmarks" / "results" / "quantize_table" / "report",
                    help="compare report folder (default: benchmarks/results/quantize_table/report)")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "quantize_report.png")
    ap.add_argument("--height", type=int, default=2600)
    args = ap.parse_args(argv)
    out = screenshot(args.report, args.out, height=args.height)
    w, h = png_size(out)
    rows = distinct_rows(out)
    print(f"wrote {out} ({w}x{h}, {rows} distinct pixel rows)")
    if rows < 50:
        raise SystemExit(f"{out} looks blank ({rows} distinct rows); the page did not render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
