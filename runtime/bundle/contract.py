"""The runtime's contract with a bundle's graphs, checked at load against the graphs themselves.

A manifest declares each graph's inputs and outputs; `scan.scan_model` reads the real ones
from the ONNX file. `check_graphs` refuses a bundle, in one line naming the component and
the value, when

- a graph's real signature differs from the one its manifest declares (a valid graph of
  the wrong kind with a correct hash);
- a graph lacks what the runtime feeds or reads (`CONTRACT`), or wants an input the
  runtime never feeds;
- the graphs disagree with the manifest or with each other: latent channels, text width,
  token length, decoder caches, the latent frames the decoder graphs take and the frames
  they return for them.

`check_rules` holds the rules between the manifest's own numbers (the frame rule against
the temporal compression, the default size against the size rules). Both run before any
ONNX Runtime session opens, so a bad bundle never gets as far as sampling.
"""

from __future__ import annotations

from ..errors import BundleError

# name -> (dtype, rank) the runtime feeds (inputs) or reads (outputs), per component
CONTRACT: dict[str, tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]] = {
    "text_encoder": ({"input_ids": ("int64", 2), "attention_mask": ("int64", 2)}, {"text_embeds": ("float32", 3)}),
    "denoiser": (
        {"latents": ("float32", 5), "timestep": ("float32", 1), "text_embeds": ("float32", 3), "text_mask": ("int64", 2),
         "cond_latents": ("float32", 5), "cond_mask": ("float32", 5)},
        {"prediction": ("float32", 5)},
    ),
    "decoder_prefix": ({"latents": ("float32", 5)}, {"frames": ("float32", 5)}),
    "decoder_step": ({"latents": ("float32", 5)}, {"frames": ("float32", 5)}),
    "encoder": ({"frames": ("float32", 5)}, {"latents": ("float32", 5)}),
}


def _fail(msg: str):
    raise BundleError(f"manifest: {msg}")


def _declared(sigs) -> dict[str, dict]:
    return {s.name: {"dtype": s.dtype, "shape": list(s.shape)} for s in sigs}


def _same(where: str, kind: str, declared: dict[str, dict], real: list[dict]) -> None:
    """The graph's real inputs or outputs are the declared ones: names, dtypes, ranks and fixed sizes."""
    names = [r["name"] for r in real]
    if sorted(names) != sorted(declared):
        missing = sorted(set(declared) - set(names))
        extra = sorted(set(names) - set(declared))
        what = "; ".join(x for x in (f"declared but not in the graph: {', '.join(missing)}" if missing else "",
                                     f"in the graph but not declared: {', '.join(extra)}" if extra else "") if x)
        _fail(f"{where} {kind}s do not match its graph ({what or 'a name is repeated'})")
    for r in real:
        d = declared[r["name"]]
        if r["dtype"] != d["dtype"]:
            _fail(f"{where} {kind} {r['name']!r} is {r['dtype']} in the graph, the manifest declares {d['dtype']}")
        if r["shape"] is None:
            continue
        if len(r["shape"]) != len(d["shape"]):
            _fail(f"{where} {kind} {r['name']!r} has rank {len(r['shape'])} in the graph, the manifest declares {d['shape']}")
        for axis, (g, m) in enumerate(zip(r["shape"], d["shape"])):
            if isinstance(g, int) and g > 0 and g != m:
                _fail(f"{where} {kind} {r['name']!r} axis {axis} is fixed to {g} in the graph, the manifest declares {m!r}")


def _contract(name: str, inputs: dict[str, dict], outputs: dict[str, dict], caches: set[str]) -> None:
    want_in, want_out = CONTRACT[name]
    for kind, want, have in (("input", want_in, inputs), ("output", want_out, outputs)):
        for key, (dtype, rank) in want.items():
            sig = have.get(key)
            if sig is None:
                _fail(f"component {name} has no {kind} {key!r}, which the runtime {'feeds' if kind == 'input' else 'reads'}")
            if sig["dtype"] != dtype or len(sig["shape"]) != rank:
                _fail(f"component {name} {kind} {key!r} must be {dtype} of rank {rank}; it is {sig['dtype']} {sig['shape']}")
    fed = set(want_in) | (caches if name == "decoder_step" else set())
    extra = sorted(set(inputs) - fed)
    if extra:
        _fail(f"component {name} wants input(s) {', '.join(map(repr, extra))} that the runtime never feeds")


def _axis(sigs: dict[str, dict], name: str, axis: int):
    shape = sigs[name]["shape"] if name in sigs else None
    return shape[axis] if shape is not None and len(shape) > axis else None


def _agree(what: str, rule, *places) -> None:
    """Every fixed value among places ((where, value)) equals `rule` when it is an int."""
    for where, value in places:
        if isinstance(value, int) and isinstance(rule, int) and value != rule:
            _fail(f"{where} is {value}, but {what} is {rule}")


def _decoder(spec, ins: dict, outs: dict) -> None:
    dec, tc = spec.decoder, spec.latent.temporal_compression
    seen_in, seen_out = set(), set()
    for c in dec.caches:
        if c.input in seen_in or c.output in seen_out:
            _fail(f"decoder.caches names {c.input!r} / {c.output!r} twice")
        seen_in.add(c.input)
        seen_out.add(c.output)
        if c.input not in ins["decoder_step"]:
            _fail(f"decoder.caches input {c.input!r} is not an input of decoder_step")
        for comp in ("decoder_prefix", "decoder_step"):
            if c.output not in outs[comp]:
                _fail(f"decoder.caches output {c.output!r} is not an output of {comp}")
            if outs[comp][c.output]["shape"] != ins["decoder_step"][c.input]["shape"]:
                _fail(f"decoder cache {c.output!r} of {comp} has shape {outs[comp][c.output]['shape']}, "
                      f"but decoder_step takes {c.input!r} as {ins['decoder_step'][c.input]['shape']}")
    for comp, n, frames in (("decoder_prefix", dec.prefix_latent_frames, (dec.prefix_latent_frames - 1) * tc + 1),
                            ("decoder_step", dec.step_latent_frames, dec.step_latent_frames * tc)):
        _agree(f"decoder.{comp.split('_')[1]}_latent_frames", n, (f"component {comp} input 'latents' axis 2", _axis(ins[comp], "latents", 2)))
        _agree(f"what {n} latent frame(s) decode to at temporal_compression {tc}", frames,
               (f"component {comp} output 'frames' axis 1", _axis(outs[comp], "frames", 1)))


def check_graphs(spec, signatures: dict[str, tuple[list[dict], list[dict]]]) -> None:
    """BundleError naming the first disagreement between the manifest, the graphs and the runtime's contract."""
    ins, outs = {}, {}
    caches = {c.input for c in spec.decoder.caches}
    for name, comp in spec.components.items():
        where = f"component {name}"
        ins[name], outs[name] = _declared(comp.inputs), _declared(comp.outputs)
        real_in, real_out = signatures[name]
        _same(where, "input", ins[name], real_in)
        _same(where, "output", outs[name], real_out)
    _decoder(spec, ins, outs)
    for name in spec.components:
        _contract(name, ins[name], outs[name], caches)
    c = spec.latent.channels
    _agree("latent.channels", c,
           ("component denoiser input 'latents' axis 1", _axis(ins["denoiser"], "latents", 1)),
           ("component denoiser input 'cond_latents' axis 1", _axis(ins["denoiser"], "cond_latents", 1)),
           ("component denoiser output 'prediction' axis 1", _axis(outs["denoiser"], "prediction", 1)),
           ("component decoder_prefix input 'latents' axis 1", _axis(ins["decoder_prefix"], "latents", 1)),
           ("component decoder_step input 'latents' axis 1", _axis(ins["decoder_step"], "latents", 1)),
           *((("component encoder output 'latents' axis 1", _axis(outs["encoder"], "latents", 1)),) if "encoder" in outs else ()))
    width = _axis(outs["text_encoder"], "text_embeds", 2)
    _agree("the text encoder's output width (text_embeds axis 2)", width,
           ("component denoiser input 'text_embeds' axis 2", _axis(ins["denoiser"], "text_embeds", 2)))
    _agree("tokenizer.max_length", spec.tokenizer.max_length,
           ("component text_encoder input 'input_ids' axis 1", _axis(ins["text_encoder"], "input_ids", 1)),
           ("component text_encoder input 'attention_mask' axis 1", _axis(ins["text_encoder"], "attention_mask", 1)))


def check_rules(spec) -> None:
    """Rules between the manifest's numbers: the frame rule of a causal latent, and the default size."""
    v, lat = spec.video, spec.latent
    tc, sc = lat.temporal_compression, lat.spatial_compression
    if v.frame_multiple % tc or v.frame_offset % tc != 1 % tc:
        _fail(f"video frame rule {v.frame_multiple}k+{v.frame_offset} does not fit latent.temporal_compression {tc} "
              f"(a causal latent holds 1 + {tc}j frames: frame_multiple a multiple of {tc}, frame_offset 1 more than one)")
    if v.size_multiple % sc:
        _fail(f"video.size_multiple = {v.size_multiple} is not a multiple of latent.spatial_compression = {sc}")
    for key in ("frames", "max_frames"):
        n = getattr(v, key)
        if n < v.frame_offset or (n - v.frame_offset) % v.frame_multiple:
            _fail(f"video.{key} = {n} does not follow the frame rule {v.frame_multiple}k+{v.frame_offset}")
    if v.frames > v.max_frames:
        _fail(f"video.frames = {v.frames} is more than video.max_frames = {v.max_frames}")
    for key in ("height", "width"):
        n = getattr(v, key)
        if n % v.size_multiple or not v.min_side <= n <= v.max_side:
            _fail(f"video.{key} = {n} must be a multiple of {v.size_multiple} within [{v.min_side}, {v.max_side}]")
