"""Memory a generation will need, per stage, before any graph is opened.

Method (an estimate from sizes, not a measurement; benchmarks/desktop_memory.py checks it
against the peak resident set of real runs):

- `runtime`: the Python process with numpy, onnxruntime, tokenizers and av imported
  (RUNTIME_BYTES: 71 MiB measured after the imports on Linux x86-64, CPython 3.11, plus
  thread pools and the Python objects of a run).
- `weights`: the bytes of every graph file (and external data) the pipeline opens,
  times WEIGHT_FACTOR (measured: the built-in bundle's 157 MB of graphs raised the
  resident set by 184 MB once open; ONNX Runtime pre-packs some weights in a second layout).
- `text_encoder`, `denoiser`, `decoder`: the largest working set of that stage's graph
  (activations only), computed from the tensor sizes the manifest implies.
  The denoiser counts the batch of two (classifier-free guidance, batched mode), its
  tokens from the manifest's patch size, ACTIVATIONS_PER_TOKEN widths of hidden state per
  token (MLP included) and SCORE_COPIES tokens x tokens attention maps per head (measured:
  ONNX Runtime holds about ten at once in the exported attention). Without `model.dit` in
  the manifest it counts DENOISER_FALLBACK_FACTOR latents instead.
  The decoder runs one latent frame at a time; its working set is DECODER_EXPANSION
  times the float frames of one step (full-resolution 3-D convolutions dominate).
- `video`: the decoded float frames, their concatenation, and the uint8 `Video`.
- `peak`: the sum of all of the above. The stages run one after another, but each ONNX
  Runtime session keeps its own memory arena at its high-water mark, so their working
  sets add up.

Each concurrent generation on the same `Pipeline` adds its own stage working sets and video;
the weights are shared.
"""

from __future__ import annotations

import math

from ..bundle.load import Bundle

RUNTIME_BYTES = 85 << 20
WEIGHT_FACTOR = 1.2
TEXT_WIDTH_UNKNOWN = 1024  # stand-in for an estimate when neither the graph nor the manifest states the width
FLOAT = 4
ACTIVATIONS_PER_TOKEN = 12  # residual, norm, q, k, v, attention output, 4x MLP hidden, 2 spare
DENOISER_FALLBACK_FACTOR = 64
# Measured: the decoder's arena grew by ~65 MB for 4 frames of 128x128 (0.79 MB of float RGB):
# full-resolution 3-D convolutions over ~16 channels, with their im2col buffers.
DECODER_EXPANSION = 80
SCORE_COPIES = 10
TEXT_ACTIVATIONS = 16  # hidden states per token across a layer (attention + 4x MLP), with headroom


def _graph_bytes(bundle: Bundle, names) -> int:
    total = 0
    for name in names:
        if bundle.has(name):
            c = bundle.components[name]
            total += int(c["bytes"]) + sum(int(e["bytes"]) for e in c.get("external_data", []))
    return total


def estimate_memory(bundle: Bundle, frames: int, height: int, width: int, *, guidance: bool = True) -> dict[str, int]:
    """Bytes per stage (runtime, weights, text_encoder, denoiser, decoder, video) and `peak`, for one generation."""
    lat, v = bundle.latent, bundle.video
    batch = 2 if guidance else 1
    t = (frames - v.frame_offset) // lat["temporal_compression"] + 1
    h, w = height // lat["spatial_compression"], width // lat["spatial_compression"]
    latent_bytes = lat["channels"] * t * h * w * FLOAT

    tok = bundle.tokenizer["max_length"]
    dim = text_width(bundle)
    text = batch * tok * dim * FLOAT * TEXT_ACTIVATIONS

    dit = bundle.manifest.get("model", {}).get("dit")
    # sampler state: x, denoised, noise and the guidance batch's inputs and outputs
    sampler_state = latent_bytes * (4 + 4 * batch)
    if isinstance(dit, dict) and all(isinstance(dit.get(k), (int, list)) for k in ("width", "heads", "patch")):
        patch = dit["patch"] if isinstance(dit["patch"], list) else [1, dit["patch"], dit["patch"]]
        tokens = math.ceil(t / patch[0]) * math.ceil(h / patch[1]) * math.ceil(w / patch[2])
        per_item = tokens * dit["width"] * ACTIVATIONS_PER_TOKEN + dit["heads"] * tokens * tokens * SCORE_COPIES
        denoiser = batch * per_item * FLOAT + sampler_state
    else:
        denoiser = latent_bytes * DENOISER_FALLBACK_FACTOR * batch + sampler_state

    step_frames = lat["temporal_compression"] * height * width * 3 * FLOAT
    decoder = step_frames * DECODER_EXPANSION
    out_frames = frames * height * width * 3
    video = out_frames * (2 * FLOAT + 1)

    stages = {
        "runtime": RUNTIME_BYTES,
        "weights": int(_graph_bytes(bundle, ("text_encoder", "denoiser", "decoder_prefix", "decoder_step")) * WEIGHT_FACTOR),
        "text_encoder": int(text),
        "denoiser": int(denoiser),
        "decoder": int(decoder),
        "video": int(video),
    }
    stages["peak"] = sum(stages.values())
    return stages


def available_bytes() -> int | None:
    """Memory the system can give a new run without swapping (Linux MemAvailable); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


__all__ = ["available_bytes", "estimate_memory"]


def text_width(bundle) -> int:
    """The text encoder's output width, from its graph signature (the manifest's text_encoder.dim
    when that axis is symbolic; TEXT_WIDTH_UNKNOWN when neither says, an estimate only)."""
    shape = bundle.spec.components["text_encoder"].outputs[0].shape
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    dim = (bundle.spec.text_encoder or {}).get("dim")
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else TEXT_WIDTH_UNKNOWN
