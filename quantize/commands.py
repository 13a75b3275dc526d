"""The bodies of `kinema compare` and of `kinema quantize`'s recipe-file and --target-psnr forms.

runtime/cli/tools.py parses the arguments and calls in here, so the CLI module stays small and
imports nothing of the quantize side at its top. Every value is checked before a graph
is opened; errors are KinemaError (one line, exit code 2).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from kinema.runtime.errors import InputError


def _say(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            print(f"kinema: {msg}", file=sys.stderr)

    return say


def generate_settings(args) -> dict:
    """The generate settings given on the command line (only those given)."""
    keys = ("steps", "frames", "height", "width", "guidance")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def fan_out(args) -> dict | None:
    """How `--workers`/`--ray` spread the videos over the batch runner's workers; None to run them here."""
    if not args.workers and not args.ray:
        return None
    from kinema.runtime.batch.main import cores

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers} must be at least 1")
    if args.ray:
        from kinema.runtime.batch.ray_runner import connect

        connect(args.ray)  # an unreachable address is one line, before any work
    workers = args.workers or cores()
    return {"workers": workers, "threads": max(1, cores() // workers), "ray": args.ray}


def run_compare(args) -> int:
    from kinema.runtime.bundle.load import load_bundle

    from kinema.quantize.compare import CompareSettings, check_comparable, check_report_dir, compare_bundles, load_prompt_file, markdown_table, write_report

    check_report_dir(args.output, args.overwrite)
    if args.seeds < 1:
        raise InputError(f"--seeds {args.seeds} must be at least 1 (seeds 0..N-1 are run)")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit} must be at least 1")
    if args.detail_prompts < 1:
        raise InputError(f"--detail-prompts {args.detail_prompts} must be at least 1")
    ref = load_bundle(args.reference, verify_hashes=False)  # a missing or malformed bundle fails here, in one line
    others = [load_bundle(o, verify_hashes=False) for o in args.others]
    seeds = tuple(range(args.seeds))
    common = dict(seeds=seeds, detail_prompts=args.detail_prompts, generate=generate_settings(args))
    if args.prompts:
        prompts, rows = load_prompt_file(args.prompts, args.limit)
        settings = CompareSettings(prompts, rows, **common)
    else:
        settings = CompareSettings.default(ref, args.limit or 8, **common)  # prompts from its manifest
    check_comparable(ref, others, settings)  # family, latent geometry and shape, settings: before any graph runs
    report, videos = compare_bundles(args.reference, args.others, settings, threads=args.threads, cost=not args.no_cost,
                                     progress=_say(args.quiet), fan_out=fan_out(args), sensitivity=False if args.sensitivity is None else (args.sensitivity or True))
    out = write_report(report, videos, args.output, overwrite=args.overwrite)
    print(markdown_table(report), end="")
    _say(args.quiet)(f"wrote {out / 'index.html'}")
    return 0


def recipe_arg(text: str):
    """A preset name, or a JSON file holding a recipe (the form a manifest records).

    A preset keeps the float groups of the bundle it is applied to ("@float_groups.<group>"
    entries, bound by quantize_bundle from the source manifest).
    """
    from kinema.quantize.recipes import PRESETS, preset, recipe_from_dict

    if text in PRESETS:
        return preset(text)
    p = Path(text)
    if text.endswith(".json") or p.is_file():
        if not p.is_file():
            raise InputError(f"--recipe {text}: no such file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"--recipe {text}: not a JSON recipe ({e})") from None
        return recipe_from_dict(data, f"--recipe {text}")
    raise InputError(f"recipe {text!r} is unknown; choose one of {', '.join(PRESETS)}, or give a recipe .json file")


def run_search(args) -> int:
    from kinema.runtime.bundle.load import load_bundle

    from kinema.quantize.compare import CompareSettings
    from kinema.quantize.search import search_recipe

    target = check_target_psnr(args.target_psnr)
    if not 1 <= args.search_prompts <= 256:
        raise InputError(f"--search-prompts {args.search_prompts} must be from 1 to 256")
    if not 0 <= args.heldout_prompts <= 256:
        raise InputError(f"--heldout-prompts {args.heldout_prompts} must be from 0 to 256")
    src = load_bundle(args.bundle, verify_hashes=False)
    out = search_recipe(args.bundle, args.output, target, settings=CompareSettings.default(src, args.search_prompts),
                        heldout_prompts=args.heldout_prompts, overwrite=args.overwrite, progress=_say(args.quiet))
    q = load_bundle(out, verify_hashes=False).manifest["quantization"]["search"]
    chosen = ", ".join(f"{u} {lvl}" for u, lvl in q["chosen"].items() if lvl != "fp32")
    dev, held = q["development"], q["held_out"]
    print(f"{out}: {chosen}")
    print(f"  development ({dev['videos']} videos): mean video PSNR vs fp32 {dev['mean_psnr_db']:.2f} dB, lower bound {dev['lower_bound_psnr_db']} dB (target {q['target_psnr_db']:g})")
    if held:
        print(f"  held out ({held['videos']} videos): mean {held['mean_psnr_db']:.2f} dB, lower bound {held['lower_bound_psnr_db']} dB")
    print(f"  graphs {q['graph_bytes'] / 2**20:.1f} MiB of {q['fp32_graph_bytes'] / 2**20:.1f} MiB fp32; {q['evaluations']} evaluations in {q['seconds']:.0f} s")
    return 0


def check_target_psnr(value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 10.0 <= value <= 99.0:
        raise InputError(f"--target-psnr {value!r} must be a number of dB from 10 to 99")
    return float(value)


__all__ = ["check_target_psnr", "generate_settings", "recipe_arg", "run_compare", "run_search"]
