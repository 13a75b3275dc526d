"""The `kinema` argument parser: every command, its flags and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..media.rules import MAX_SECONDS

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _run(name: str, func: str):
    """A command's handler, imported only when the command runs (the parser stays light)."""

    def handler(args):
        import importlib

        return getattr(importlib.import_module(f"kinema.runtime.{name}"), func)(args)

    return handler


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """The flags every task command takes, with the same names and meanings as `kinema generate`."""
    p.add_argument("-o", "--output", default="output.mp4", help="output file: .mp4, .webm, .gif, .png (frames), or a folder/ (default: output.mp4)")
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (default: the bundle's, usually empty)")
    p.add_argument("--fps", type=float, default=None, help="frames per second of the file (default: bundle's)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    p.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale; 1 turns it off (default: bundle's)")
    p.add_argument("--seed", type=int, default=42, help="noise seed; negative for a random one (default: 42)")
    p.add_argument("--sampler", default=None, help="euler, heun, dpmpp_2m or unipc (default: bundle's)")
    p.add_argument("--shift", type=float, default=None, help="flow-matching time shift (default: bundle's)")
    p.add_argument("--cfg-mode", default="batched", help="batched (faster) or sequential (half the peak memory)")
    p.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    p.add_argument("--low-memory", action="store_true", help="load one graph at a time, releasing each before the next (lower peak memory)")
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="run even when the estimated peak memory is over what the system has available")
    p.add_argument("--teacache", type=float, default=0.0, help="TeaCache: reuse the last prediction until the input's relative L1 change adds up to this (e.g. 0.2; default 0 = off)")
    p.add_argument("--cfg-cache", type=int, default=0, help="run both guidance branches only every N-th step, reusing their difference in between (e.g. 3; default 0 = off)")
    p.add_argument("--leap", type=float, default=0.0, help="linear proportional leap: once predictions agree to this cosine similarity after half the steps, jump to the end (e.g. 0.99; default 0 = off)")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    p.add_argument("--native-size", action="store_true", help="keep the model's size instead of scaling up for viewing")
    p.add_argument("--policy", default=None, metavar="FILE", help="prompt policy JSON replacing the built-in one (sexual content involving minors is always refused)")
    p.add_argument("--sign-cert", default=None, metavar="PEM", help="C2PA signer certificate chain (default: this machine's local kinema key, made on first use)")
    p.add_argument("--sign-key", default=None, metavar="PEM", help="private key of --sign-cert (unencrypted PEM)")
    p.add_argument("--c2pa-include-prompt", action="store_true", help="record the prompt in the mp4's C2PA manifest (left out by default)")
    p.add_argument("--visible-watermark", action="store_true", help='draw a small "AI" label in the corner of every frame')
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_generate(sub) -> None:
    g = sub.add_parser("generate", help="turn a prompt into a video", description="Turn a prompt into a video file (mp4, webm, gif, or PNG frames).")
    g.add_argument("prompt", help="what the video shows")
    _length(g, "number of frames; the tiny bundle needs 4k+1 (default: bundle's)", "length in seconds, rounded to a valid frame count")
    g.add_argument("--loop", action="store_true", help="close the clip into a seamless loop (4k+1 frames asked, 4k written)")
    add_generation_flags(g)
    g.set_defaults(func=_run("cli.tasks", "cmd_task"))


def _length(p, frames_help: str, seconds_help: str) -> None:
    length = p.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, default=None, help=frames_help)
    length.add_argument("--seconds", type=float, default=None, help=seconds_help)


def _media_common(p) -> None:
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--fit", default="crop", help="fit inputs to the model's size: crop (scale, cut the centre; default) or pad (scale, pad with black)")
    add_generation_flags(p)
    p.set_defaults(func=_run("cli.tasks", "cmd_task"))


def add_media(sub) -> None:
    """animate, extend, connect and edit: every generation flag of `generate`, plus their inputs."""
    a = sub.add_parser("animate", help="turn an image into a video that starts from it",
                       description="Make a video whose first frame is the image (through the VAE), following the prompt.")
    a.add_argument("image", help="image file (PNG, JPEG, WebP, ...; 8-bit)")
    _length(a, "number of frames, 4k+1 (default: bundle's)", "length in seconds; past one window, made window by window")
    _media_common(a)

    e = sub.add_parser("extend", help="continue a video forward, or lead into it (--backward)",
                       description="Output the video with SECONDS of new frames after it (or before it, --backward).")
    e.add_argument("video", help="video file (anything FFmpeg reads) or PNG frames")
    e.add_argument("--seconds", type=float, required=True, help=f"how much to add, up to {MAX_SECONDS:g} s")
    e.add_argument("--backward", action="store_true", help="add the new frames before the video")
    _media_common(e)

    c = sub.add_parser("connect", help="join two videos with a generated transition",
                       description="Output video A, a transition from A's end into B's start, then video B.")
    c.add_argument("a", help="first video")
    c.add_argument("b", help="second video")
    c.add_argument("--seconds", type=float, default=None, help="transition length (default: one native window's new frames)")
    _media_common(c)

    d = sub.add_parser("edit", help="redo a video under a new prompt (SDEdit)",
                       description="Noise the video's latents to sigma = STRENGTH and sample back under the prompt.")
    d.add_argument("video", help="video file (anything FFmpeg reads) or PNG frames; one window long at most")
    d.add_argument("--strength", type=float, required=True, help="in (0, 1]: how much to redo (1 = ignore the video)")
    _media_common(d)


def add_tools(sub) -> None:
    """verify, info, export, quantize and compare."""
    vf = sub.add_parser("verify", help="check a video's C2PA content credentials and kinema's invisible watermark",
                        description="Print what a video's C2PA manifest says and whether it validates, and whether kinema's "
                        "invisible watermark is in its frames (found even when re-encoding stripped the manifest). "
                        "Exit 0 when checked, 1 when a manifest is present but invalid, 2 for a file that is not a video.")
    vf.add_argument("video", help="video file (mp4, webm, gif, ...)")
    vf.add_argument("--json", action="store_true", help="print the full report as JSON")
    vf.set_defaults(func=_run("safety.verify", "cmd_verify"))

    i = sub.add_parser("info", help="show a bundle's components, sizes, precisions and defaults")
    i.add_argument("bundle", help="bundle folder")
    i.add_argument("--json", action="store_true", help="print the whole manifest")
    i.set_defaults(func=_run("cli.tools", "cmd_info"))

    e = sub.add_parser("export", help="trace a model family to a bundle (needs kinema[export])")
    e.add_argument("family", choices=["tiny", "wan"], help="model family (each has its exporter in runtime/cli/tools.py)")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--checkpoint", type=Path, default=None, help="tiny: folder with tiny_dit.safetensors and tiny_vae.safetensors (default: the trained weights shipped with kinema); "
                   "wan: a local Wan diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)")
    e.add_argument("--recipe", default=None, help="wan: quantize the exported bundle with this recipe (int8, int4, fp16, fp32)")
    e.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="wan: merge a LoRA .safetensors (diffusers/PEFT, Wan/ComfyUI or musubi keys) into the transformer at SCALE "
                   "(default 1) before tracing; repeat to apply several in order")
    e.add_argument("--lora-ignore-unmatched", action="store_true", help="wan: merge what matches and warn about LoRA keys that name no module")
    e.add_argument("--distilled", default=None, metavar="PRESET", help="wan: sampler defaults of a step-distilled model (lightx2v-4step: "
                   "timesteps 1000,750,500,250, shift 5, guidance 1)")
    e.add_argument("--timesteps", default=None, metavar="LIST", help="wan: the bundle's distilled timestep list, e.g. 1000,750,500,250 (0-1000, before the shift)")
    e.add_argument("--shift", type=float, default=None, help="wan: the bundle's default flow shift (default: the scheduler's)")
    e.add_argument("--guidance", type=float, default=None, help="wan: the bundle's default guidance (default: 5)")
    e.add_argument("--random-init", action="store_true", help="random weights instead of trained ones (for tests)")
    e.add_argument("--no-encoder", action="store_true", help="leave out the video encoder graph (no image/video prompting)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    e.set_defaults(func=_run("cli.tools", "cmd_export"))

    q = sub.add_parser(
        "quantize",
        help="write a quantized copy of a bundle (needs kinema[export])",
        description="Apply a quantization recipe to each graph of a bundle with ONNX Runtime's tools, "
        "measure each changed graph's SQNR against the source, and write a new bundle.",
    )
    q.add_argument("bundle", help="source bundle folder (fp32)")
    q.add_argument("--recipe", default=None, help="int8 (dynamic, uint8 activations), int8-static (calibrated), int4 (weight-only), fp16, fp32 (a copy), or a recipe .json file")
    q.add_argument("--target-psnr", type=float, default=None, metavar="DB", help="search the smallest mixed recipe whose video PSNR vs this bundle stays >= DB")
    q.add_argument("--search-prompts", type=int, default=8, metavar="N", help="with --target-psnr: development prompts the search measures on (default: 8)")
    q.add_argument("--heldout-prompts", type=int, default=16, metavar="N", help="with --target-psnr: other prompts the chosen recipe is measured on once, at the end (default: 16; 0: none)")
    q.add_argument("-o", "--output", required=True, help="bundle folder to write")
    q.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --output")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    q.set_defaults(func=_run("cli.tools", "cmd_quantize"))

    c = sub.add_parser(
        "compare",
        help="compare bundles: accuracy per graph, per step and end to end; size, memory, speed; pictures",
        description="Run every bundle on the same prompts, seeds and initial noise and write a report (JSON, Markdown, "
        "PNG plots, contact sheet, side-by-side video, HTML) against the first bundle.",
    )
    c.add_argument("reference", help="reference bundle folder (usually fp32)")
    c.add_argument("others", nargs="+", metavar="OTHER", help="bundle folders to compare with it")
    c.add_argument("-o", "--output", required=True, help="report folder to write")
    c.add_argument("--prompts", default=None, help="JSONL rows with a \"prompt\" (ShapesBench rows are scored) or one prompt per line (default: 8 ShapesBench rows for tiny)")
    c.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    c.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 per prompt (default: 1)")
    c.add_argument("--detail-prompts", type=int, default=2, help="prompts whose every step and graph input is compared (default: 2)")
    c.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    c.add_argument("--frames", type=int, default=None, help="frames per video (default: bundle's)")
    c.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's)")
    c.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's)")
    c.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale (default: bundle's)")
    c.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    c.add_argument("--no-cost", action="store_true", help="skip the per-bundle load/memory/speed runs in fresh processes")
    c.add_argument("--sensitivity", nargs="*", default=None, metavar="GRAPH", help="per quantized bundle and graph: each layer group's error with only it quantized and with only it kept float (table and chart); "
                   "give graph names (e.g. denoiser) to measure only those")
    c.add_argument("--workers", type=int, default=None, help="make the videos not compared step by step on N worker processes")
    c.add_argument("--ray", default=None, metavar="ADDRESS", help="make them on a Ray cluster: auto or HOST:PORT (needs kinema[ray])")
    c.add_argument("--overwrite", action="store_true", help="replace an earlier report at --output")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=_run("cli.tools", "cmd_compare"))


def add_bench(sub) -> None:
    b = sub.add_parser("bench", help="score a bundle on a benchmark", description="Score a bundle (or the ground truth) on a benchmark.")
    bsub = b.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True, parser_class=_Parser)
    bs = bsub.add_parser(
        "shapes",
        help="ShapesBench: does the video show the prompt's shapes, colours and motions",
        description="Generate a video per prompt row and seed, and score colour, shape, size, motion, count and background "
        "with classical image analysis, plus flicker and smoothness. Needs numpy only.",
    )
    src = bs.add_mutually_exclusive_group()
    src.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    src.add_argument("--ground-truth", action="store_true", help="score ShapesWorld's own renders instead of a bundle (checks the scorer)")
    bs.add_argument("--prompts", default=None, help="JSONL prompt rows (default: the shipped shapes_prompts.jsonl)")
    bs.add_argument("--seeds", type=int, default=2, help="run seeds 0..N-1 per prompt (default: 2)")
    bs.add_argument("--limit", type=int, default=None, help="only the first N prompt rows")
    bs.add_argument("--json", default=None, metavar="OUT", help="write the full result (per-video rows included) to this file")
    bs.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    bs.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale (default: bundle's)")
    bs.add_argument("--frames", type=int, default=None, help="frames per video (default: bundle's; 17 for --ground-truth)")
    bs.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's; 64 for --ground-truth)")
    bs.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's; 64 for --ground-truth)")
    bs.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    bs.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    bs.add_argument("--workers", type=int, default=None, help="make the videos on N worker processes (the batch runner's pool)")
    bs.add_argument("--ray", default=None, metavar="ADDRESS", help="make the videos on a Ray cluster: auto or HOST:PORT (needs kinema[ray])")
    bs.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    bs.set_defaults(func=_run("cli.bench", "cmd_bench_shapes"))


def add_serve(sub) -> None:
    s = sub.add_parser("serve", help="serve OpenAI's /v1/videos API and a web page on this machine (needs kinema[serve])",
                       description="A local video server: OpenAI-style /v1/videos, a progress stream, a job queue kept on disk, and a page at /.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; any other needs --api-key)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--bundle", action="append", default=None, help="bundle folder to serve; repeat for several (default: the built-in kinema-tiny)")
    s.add_argument("--data", type=Path, default=None, help="folder for jobs and videos (default: ~/.local/share/kinema/serve)")
    s.add_argument("--api-key", default=None, help="the one key clients must send as 'Authorization: Bearer KEY' (or KINEMA_API_KEY)")
    s.add_argument("--queue", type=int, default=16, help="jobs waiting or running at most; more get 429 (default: 16)")
    s.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body in MiB; larger get 413 (default: 64)")
    s.add_argument("--expire-hours", type=float, default=None, help="remove finished jobs and their files this long after they end (default: keep)")
    s.add_argument("--cors-origin", action="append", default=None, help="an origin allowed to call the API from a browser; repeat for several (default: none)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    s.set_defaults(func=_run("serve.main", "cmd_serve"))


def add_batch(sub) -> None:
    b = sub.add_parser("batch", help="make every video a JSONL file asks for, on a process pool or a Ray cluster",
                       description="One request per JSONL line (the fields of a Request, plus seed/seeds and name). Every line is "
                       "checked before any worker starts; each video is written atomically; DIR/results.jsonl records each one, and a "
                       "rerun skips what is done.")
    b.add_argument("file", type=Path, help="the JSONL batch file")
    b.add_argument("--out", type=Path, required=True, help="folder for the videos and results.jsonl")
    b.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    b.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for each line that names none")
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: from the cores and the memory one video needs)")
    b.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per worker (default: cores / workers)")
    b.add_argument("--keep-going", action="store_true", help="skip bad lines (each reported) instead of stopping before any work")
    b.add_argument("--retries", type=int, default=2, help="times a request whose worker died is given again (default: 2)")
    b.add_argument("--policy", default=None, help="prompt policy JSON file for every line (default: the built-in one)")
    b.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    b.add_argument("--ray", default=None, metavar="ADDRESS", help="run on a Ray cluster: auto, or an address such as 10.0.0.5:6379 (needs kinema[ray])")
    b.add_argument("--ray-bytes", action="store_true", help="with --ray: workers send each file back instead of writing --out (no shared file system)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=_run("batch.main", "cmd_batch"))


def build_parser() -> argparse.ArgumentParser:
    from kinema import __version__

    p = _Parser(prog="kinema", description="Offline text-to-video with ONNX Runtime.")
    p.add_argument("--version", action="version", version=f"kinema {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_generate(sub)
    add_media(sub)
    add_tools(sub)
    add_bench(sub)
    add_serve(sub)
    add_batch(sub)
    return p
