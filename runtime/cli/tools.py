"""`kinema info`, `export`, `quantize` and `compare`: the commands over bundles.

The torch side (export/, quantize/) is imported inside the commands that need it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..bundle.load import load_bundle
from ..errors import KinemaError


def cmd_info(args) -> int:
    b = load_bundle(args.bundle)
    m = b.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    v, s, lat = b.video, b.sampler, b.latent
    print(f"{b.name}  (family {b.family}, format {m['format']} v{m['format_version']}, {m.get('created_by', '?')})")
    print(f"  folder     {b.path}")
    print("  components")
    total = 0
    for name, c in b.components.items():
        size = c["bytes"] + sum(e["bytes"] for e in c.get("external_data", []))
        total += size
        print(f"    {name:<15} {c['file']:<22} {size / 2**20:8.1f} MiB  {c.get('precision', '?')}")
    print(f"    {'total':<15} {'':<22} {total / 2**20:8.1f} MiB")
    print(f"  latent     {lat['channels']} channels, {lat['temporal_compression']}x time, {lat['spatial_compression']}x space")
    print(f"  video      {v.frames} frames ({v.frame_multiple}k+{v.frame_offset}, max {v.max_frames}) {v.width}x{v.height} "
          f"(multiple of {v.size_multiple}, {v.min_side}-{v.max_side}) @ {v.fps:g} fps")
    print(f"  sampler    {s['sampler']}, {s['steps']} steps, guidance {s['guidance']:g}, shift {s['shift']:g}, {s['prediction']} prediction")
    if b.spec.sampler.timesteps is not None:
        print(f"  distilled  timesteps {', '.join(f'{t:g}' for t in b.spec.sampler.timesteps)} (before the shift)")
    for lora in m.get("loras", []):
        print(f"  lora       {lora['file']} at scale {lora['scale']:g} (sha256 {lora['sha256'][:12]}...)")
    q = m.get("quantization")
    if q:
        print(f"  quantized  {json.dumps(q)}")
    dynamic = [n for n, c in b.components.items() if c.get("precision") == "int8-dynamic"]
    if dynamic:  # dynamic int8 takes its activation ranges over the whole batch
        print(f"  note       {', '.join(dynamic)}: dynamic int8, so --cfg-mode batched and sequential give slightly different videos "
              "for one seed, and tasks that run the fp32 encoder can differ between --threads counts (docs/performance.md)")
    return 0


def cmd_export(args) -> int:
    """`kinema export FAMILY`: each family's exporter is its own function (EXPORTERS)."""
    return EXPORTERS[args.family](args)


WAN_ONLY = ("recipe", "lora", "lora_ignore_unmatched", "distilled", "timesteps", "shift", "guidance")


def _export_tiny(args) -> int:
    if args.recipe is not None:
        raise KinemaError("--recipe is an option of `export wan`; quantize a tiny bundle with `kinema quantize`")
    given = [f"--{k.replace('_', '-')}" for k in WAN_ONLY[1:] if getattr(args, k) not in (None, False, [])]
    if given:
        raise KinemaError(f"{', '.join(given)}: options of `export wan`, not of `export tiny`")
    try:
        from kinema.export.tiny import export_tiny
    except ImportError as e:
        raise KinemaError(f"export needs the torch side: pip install 'kinema[export]' ({e})") from None
    out = export_tiny(
        Path(args.out),
        checkpoint_dir=args.checkpoint,
        random_init=args.random_init,
        overwrite=args.overwrite,
        with_encoder=not args.no_encoder,
    )
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def _export_wan(args) -> int:
    if args.checkpoint is None:
        raise KinemaError("export wan needs --checkpoint DIR: a local Wan diffusers folder such as Wan2.1-T2V-1.3B-Diffusers")
    if args.random_init or args.no_encoder:
        raise KinemaError("--random-init and --no-encoder are options of `export tiny`")
    if args.recipe is not None:
        from kinema.quantize.recipes import preset

        preset(args.recipe)  # an unknown name fails before any weight is loaded
    try:
        from functools import partial

        from kinema.export.distilled import distilled_from_options
        from kinema.export.lora import parse_lora_spec
        from kinema.export.wan import export_wan
    except ImportError as e:
        raise KinemaError(f"export needs the torch side: pip install 'kinema[export]' ({e})") from None
    loras = tuple(parse_lora_spec(v) for v in args.lora)  # a bad spec fails before anything loads
    distilled = distilled_from_options(args.distilled, args.timesteps, args.shift, args.guidance)
    export = partial(export_wan, loras=loras, ignore_unmatched=args.lora_ignore_unmatched, distilled=distilled)
    if args.recipe in (None, "fp32"):
        out = export(args.checkpoint, Path(args.out), overwrite=args.overwrite)
    else:
        out = _export_then_quantize(args, export)
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def _export_then_quantize(args, export) -> Path:
    """export/ and quantize/ do not import each other: the command composes them, exporting to a
    scratch folder beside the output and quantizing from it."""
    import shutil
    import tempfile

    from kinema.quantize.quantize_bundle import quantize_bundle

    from ..bundle.writer import check_output

    out = check_output(Path(args.out), overwrite=args.overwrite)  # before the weights load
    parent = out.parent if out.parent.exists() else None
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.fp32.", dir=parent))
    try:
        src = export(args.checkpoint, scratch / "bundle")
        return quantize_bundle(src, out, args.recipe, overwrite=args.overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


EXPORTERS = {"tiny": _export_tiny, "wan": _export_wan}


def cmd_quantize(args) -> int:
    from kinema.quantize import commands

    if (args.recipe is None) == (args.target_psnr is None):
        raise KinemaError("give one of --recipe NAME|FILE.json and --target-psnr DB")
    if args.recipe is not None:
        commands.recipe_arg(args.recipe)  # an unknown name or a bad file fails before the bundle is read
    else:
        commands.check_target_psnr(args.target_psnr)
    src = load_bundle(args.bundle, verify_hashes=False)  # a missing or malformed bundle fails here, in one line
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401

        from kinema.quantize.quantize_bundle import quantize_bundle
    except ImportError as e:
        raise KinemaError(f"quantize needs the torch side: pip install 'kinema[export]' ({e})") from None
    if args.target_psnr is not None:
        return commands.run_search(args)
    recipe = commands.recipe_arg(args.recipe)
    out = quantize_bundle(args.bundle, args.output, recipe, overwrite=args.overwrite)
    q = load_bundle(out, verify_hashes=False)
    measured = q.manifest["quantization"]["measured"]
    print(f"{q.name}  (recipe {recipe.name}, from {src.name})")
    for name, c in q.components.items():
        size = c["bytes"] + sum(e["bytes"] for e in c.get("external_data", []))
        line = f"  {name:<15} {c.get('precision', '?'):<18} {size / 2**20:8.1f} MiB"
        if name in measured:
            sqnr = ", ".join(f"{o} {'identical' if v is None else f'{v:.1f} dB'}" for o, v in measured[name]["sqnr_db"].items())
            line += f"  x{measured[name]['size_ratio']:.2f} of fp32  SQNR {sqnr}"
        print(line)
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from kinema.quantize.commands import run_compare

    return run_compare(args)
