"""`kinema verify VIDEO`: what a video's C2PA manifest says, whether it validates, and the invisible watermark.

Both checks run offline. The manifest is read with c2pa-python (runtime/safety/provenance.py); the
watermark is looked for in the decoded frames (runtime/safety/watermark.py), so it is found even
after re-encoding has stripped the manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av

from . import provenance, watermark
from ..errors import InputError
from ..video.codecs import check_stream

EXIT_INVALID = 1  # a manifest is present and fails validation (the file was changed after signing)


def _detect(path: Path) -> tuple[watermark.Detection, int, int, int]:
    """The watermark check over the decoded first video stream, with its frame count and size."""
    seen = {"n": 0, "size": (0, 0)}

    def frames():
        for f in container.decode(container.streams.video[0]):
            seen["n"] += 1
            seen["size"] = (f.width, f.height)
            yield f.to_ndarray(format="rgb24")

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: not a video (no video stream)")
            check_stream(container.streams.video[0], path)
            found = watermark.detect(frames())
    except InputError:
        raise
    except av.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({provenance.one_line(e)})") from None
    except ValueError:  # watermark.detect: no frame decoded
        raise InputError(f"{path}: not a readable video (no frame decodes)") from None
    return found, seen["n"], *seen["size"]


def verify_file(path: str | os.PathLike) -> dict:
    """{"file", "frames", "size", "c2pa": ManifestReport.to_dict(), "watermark": {...}}; InputError if not a video."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{os.fspath(path)!r}: {'is a folder, not a video file' if p.is_dir() else 'no such file'}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{os.fspath(path)!r}: not readable (permission denied)")
    found, n, w, h = _detect(p)
    report = provenance.read_manifest(p)
    return {
        "file": str(p), "frames": n, "size": [w, h],
        "c2pa": report.to_dict(),
        "watermark": {"name": watermark.NAME, "score": found.score, "threshold": found.threshold, "present": found.present},
    }


def format_report(r: dict) -> str:
    c, m = r["c2pa"], r["watermark"]
    lines = [f"file       {r['file']}  ({r['frames']} frames, {r['size'][0]}x{r['size'][1]})"]
    if not c["present"]:
        lines.append(f"C2PA       {'INVALID: ' if c['state'] == 'Invalid' else ''}{c['note']}")
    else:
        if not c["valid"]:
            verdict = "INVALID: " + "; ".join(f"{f['code']} ({f['explanation']})" for f in c["failures"]
                                              if f["code"] != "signingCredential.untrusted")
        elif c["state"] == "Trusted":
            verdict = "valid, signed by this machine's kinema key" if c["trusted_locally"] else "valid, trusted signer"
        else:
            verdict = "valid (signature and hashes check out; the signer is not on a trust list)"
        lines.append(f"C2PA       {verdict}")
        signer = c["signer"] or {}
        lines.append(f"  signer     {signer.get('common_name', '?')} (issuer {signer.get('issuer', '?')}, {signer.get('alg', '?')})")
        lines.append(f"  generator  {c['generator']}")
        for a in c["actions"]:
            src = str(a.get("digitalSourceType", "")).rsplit("/", 1)[-1]
            lines.append(f"  action     {a.get('action')}" + (f" ({src})" if src else ""))
        g = c["generation"] or {}
        if g:
            lines.append(f"  bundle     {g.get('bundle')}  sha256 {g.get('bundle_sha256')}")
            settings = g.get("settings") or {}
            if settings:
                lines.append("  settings   " + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("prompt", "negative_prompt")))
            if g.get("prompt_included"):
                lines.append(f"  prompt     {settings.get('prompt', '')!r}")
    lines.append(f"watermark  {'detected' if m['present'] else 'not detected'} ({m['name']}: score {m['score']:.1f}, threshold {m['threshold']:g})")
    return "\n".join(lines)


def cmd_verify(args) -> int:
    r = verify_file(args.video)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return EXIT_INVALID if r["c2pa"]["present"] and not r["c2pa"]["valid"] or r["c2pa"]["state"] == "Invalid" else 0
