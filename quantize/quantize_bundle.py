"""Bundle in, quantized bundle out: apply a recipe per component with ONNX Runtime's tools, record and measure.

    from kinema.quantize.quantize_bundle import quantize_bundle
    quantize_bundle("kinema-tiny", "kinema-tiny-int8", "int8")

Every recipe is checked against the source graphs (components exist, every node or
module scope it keeps in float is there) before anything is written. The result is
staged beside the output, its manifest records the recipe, the source bundle's sha256
and the SQNR of each changed graph against its source on fixed inputs, and it is checked
with the runtime's `load_bundle` before it is moved into place (export/bundle_writer.py).
"""

from __future__ import annotations

import ast
import logging
import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.writer import check_output, file_entry, write_bundle
from kinema.runtime.bundle.load import Bundle, load_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.bundle.scan import external_data_locations
from kinema.runtime.pipeline import Pipeline
from kinema.runtime.engine.sessions import open_session

from kinema.quantize.calibration import calibration_prompts, data_reader, record_inputs
from kinema.quantize.recipes import BundleRecipe, DynamicInt8, Float16, KeepFloat, Mixed, Recipe, StaticInt8, WeightOnly, float_nodes, preset

# Fixed probe inputs for the SQNR measurements: captions in the style of the tiny
# family's procedural world, and the empty negative prompt the sampler pairs them with.
PROBE_PROMPTS = (
    "a red ball bouncing",
    "two blue squares sliding left on a white background",
    "a small green triangle spinning slowly",
    "",
)
PROBE_SEED = 0
# Where on the noise range the denoiser is probed: flow sigma, or the fraction of the VP training steps.
PROBE_TIMES = (1.0, 0.75, 0.5, 0.25)
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # module path the torch.onnx dynamo exporter records per node


@dataclass(frozen=True)
class ComponentPlan:
    """One component's recipe and the node names it keeps in float, resolved against its graph."""

    recipe: Recipe
    float_nodes: tuple[str, ...]
    weight_only_nodes: tuple[str, ...] = ()  # Mixed: the nodes its weight-only groups select
    dynamic_nodes: tuple[str, ...] = ()  # Mixed: the nodes its dynamic int8 groups select


# ---------------------------------------------------------------------- node groups


def _scopes(node) -> list[str]:
    for p in node.metadata_props:
        if p.key == SCOPES_KEY:
            try:
                value = ast.literal_eval(p.value)  # "['', 'dit', 'dit.blocks.0', 'dit.blocks.0.ada', ...]"
            except (ValueError, SyntaxError):
                return []
            return [s for s in value if isinstance(s, str) and s] if isinstance(value, list) else []
    return []


def resolve_nodes(graph, entries: tuple[str, ...], graph_file: str) -> tuple[str, ...]:
    """Node names selected by a recipe's entries; raises InputError for an entry that selects nothing.

    An entry selects a node by its name, or by a run of whole dotted components of the
    node's module scopes or weight names: "ada" selects dit.blocks.3.ada.1, not dit.adapter.
    """
    inits = {i.name for i in graph.initializer}
    keys = {}
    for node in graph.node:
        if node.name:  # ORT's quantizers exclude by name; the exporter names every node
            keys[node.name] = [f".{s}." for s in _scopes(node) + [i for i in node.input if i in inits]]
    selected: dict[str, None] = {}
    for entry in entries:
        hits = [name for name, ks in keys.items() if name == entry or any(f".{entry}." in k for k in ks)]
        if not hits:
            raise InputError(f"recipe names node {entry!r} which is not in {graph_file} (give a node name or a module scope such as 'ada')")
        selected.update(dict.fromkeys(hits))
    return tuple(selected)


def plan(src: Bundle, recipe: BundleRecipe) -> dict[str, ComponentPlan]:
    """Each component's recipe with its float nodes resolved; all checks, no writing."""
    import onnx

    missing = [c for c in recipe.components if not src.has(c)]
    if missing:
        raise InputError(f"recipe {recipe.name!r} names component(s) {', '.join(missing)} that bundle {src.path} does not have")
    plans = {}
    for name, entry in src.components.items():
        r = recipe.for_component(name)
        keep: tuple[str, ...] = ()
        groups: dict[str, tuple[str, ...]] = {}
        if float_nodes(r) or isinstance(r, Mixed):
            graph = onnx.load(str(src.component_path(name)), load_external_data=False).graph
            keep = resolve_nodes(graph, float_nodes(r), entry["file"])
            if isinstance(r, Mixed):
                groups = {
                    "weight_only_nodes": resolve_nodes(graph, r.weight_only_groups, entry["file"]),
                    "dynamic_nodes": resolve_nodes(graph, r.dynamic_groups, entry["file"]),
                }
        plans[name] = ComponentPlan(r, keep, **groups)
    return plans


# ---------------------------------------------------------------------- applying a recipe


def _copy_graph(src_root: Path, rel: str, stage: Path) -> None:
    """Copy a graph and the external-data files it names, at the same relative paths."""
    src = src_root / rel
    dst = stage / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    for loc in external_data_locations(src):
        (dst.parent / loc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / loc, dst.parent / loc)


def _dynamic_exclusions(graph, r: DynamicInt8, keep: tuple[str, ...]) -> list[str]:
    """Node names for quantize_dynamic's nodes_to_exclude that give the recipe its meaning.

    ORT's dynamic mode first rewrites every Gemm into MatMul (+ Add), renamed
    `<name>_MatMul`, and only then applies nodes_to_exclude and op_types: an excluded Gemm
    would be quantized, and "MatMul" alone would take the Gemms too. Each Gemm to keep is
    therefore named in both spellings, and a MatMul/Gemm whose op type the recipe leaves
    out is excluded by name.
    """
    names = set(keep) | {n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.op_type not in r.op_types}
    return _with_matmul_names(names, graph)


def gemms_as_matmuls(model) -> int:
    """Rewrite each Gemm with a constant weight as MatMul (+ Add for a bias), in place; returns how many.

    MatMulNBits only replaces MatMul, so Linears the exporter wrote as Gemm (2-D inputs:
    adaLN modulation, the timestep MLP) would stay fp32 under a weight-only recipe. The
    new nodes are named `<gemm>_MatMul` / `<gemm>_Add`, as ORT's own rewrite names them,
    and keep the Gemm's module-scope metadata so recipe groups still select them. A Gemm
    with alpha/beta != 1, transA, or a computed weight is left as it is.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    out, n_done = [], 0
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            out.append(node)
            continue
        w = node.input[1]
        if attrs.get("transB", 0):
            t = numpy_helper.to_array(inits[w]).T.copy()  # (in, out) for MatMul
            w = f"{w}_transposed"
            if w not in inits:
                inits[w] = numpy_helper.from_array(t, w)
                g.initializer.append(inits[w])
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], w], [mm_out], name=f"{node.name}_MatMul")]
        if has_bias:
            new.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        for n in new:
            n.metadata_props.extend(node.metadata_props)
        out.extend(new)
        n_done += 1
    del g.node[:]
    g.node.extend(out)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used or i.name in {o.name for o in g.output}]
    del g.initializer[:]
    g.initializer.extend(keep)
    return n_done


def _with_matmul_names(names, graph) -> list[str]:
    """Node names to exclude, each Gemm also under the `<name>_MatMul` a Gemm -> MatMul rewrite gives it."""
    gemms = {n.name for n in graph.node if n.op_type == "Gemm"}
    names = set(names)
    return sorted(names | {f"{n}_MatMul" for n in names & gemms})


@contextmanager
def _quiet_ort_tools():
    """Keep ONNX Runtime's quantization tools from flooding stderr or reconfiguring logging.

    matmul_nbits_quantizer calls logging.basicConfig(level=INFO) at import (one INFO line
    per MatMul it skips, and a root handler for the whole process), and quantize_dynamic
    warns on the root logger that it was not given ORT's shape-inference pre-pass on every
    call. Their warnings and infos are dropped while they run; errors still show.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or "onnxruntime" not in record.pathname.replace("\\", "/")

    root.addFilter(drop)
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer

        root.setLevel(level)
        root.handlers[:] = handlers  # undo the import's basicConfig
        logger = logging.getLogger(matmul_nbits_quantizer.__name__)
        logger_level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            logger.setLevel(logger_level)
    finally:
        root.removeFilter(drop)


def apply_recipe(p: ComponentPlan, src: Path, dst: Path, *, external_data: bool, calibration: list[dict] | None = None) -> None:
    """Write `src` quantized by the plan's recipe to `dst` (ONNX Runtime's tools do the work).

    A StaticInt8 recipe needs `calibration`: the graph's feeds recorded from sampling runs.
    """
    with _quiet_ort_tools():
        _apply(p, src, dst, external_data, calibration)


@contextmanager
def _private_copy(src: Path, near: Path):
    """`src` (and its external data files) linked into a private temporary folder in `near`.

    ORT's quantize_dynamic writes a scratch `<name>-inferred.onnx` (as large as the graph)
    next to the graph it reads: beside a bundle in a read-only install that fails, and two
    runs on one bundle would share the file. `near` is the output's staging folder, which
    is writable and has room for the output anyway. Links are made where the system allows
    them, copies elsewhere.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=near) as d:
        for rel in [src.name, *external_data_locations(src)]:
            target = Path(d) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to((src.parent / rel).resolve())
            except OSError:
                shutil.copyfile(src.parent / rel, target)
        yield Path(d) / src.name


def _apply(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
    r = p.recipe
    dst.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(r, StaticInt8):
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if not calibration:
            raise ValueError("apply_recipe: StaticInt8 needs recorded calibration feeds")
        model = onnx.load(str(src))
        graph = model.graph
        names = [i.name for i in graph.input]
        inits = {i.name for i in graph.initializer}
        # ORT's QDQ quantizer does not honour MatMulConstBOnly: activation x activation MatMuls
        # (attention scores and values) are excluded by name, so only weighted nodes get Q/DQ
        excluded = (
            set(p.float_nodes)
            | {n.name for n in graph.node if n.op_type in StaticInt8.OP_TYPES and n.op_type not in r.op_types}
            | {n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] not in inits}
        )
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[r.method]
        quantize_static(
            model,
            dst,
            data_reader(calibration, names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(r.op_types),
            per_channel=r.per_channel,
            activation_type=QuantType.QUInt8,  # uint8 x int8: the VNNI path (see DynamicInt8)
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(excluded),
            use_external_data_format=external_data,
            calibrate_method=method,
            extra_options={"MatMulConstBOnly": True},  # honoured by the QOperator path; see `excluded`
        )
        return
    if isinstance(r, DynamicInt8):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _private_copy(src, dst.parent) as private:
            quantize_dynamic(
                private,
                dst,
                # Gemms reach ORT's op-type filter as MatMuls (see _dynamic_exclusions)
                op_types_to_quantize=["MatMul"] * bool({"MatMul", "Gemm"} & set(r.op_types)) + [o for o in r.op_types if o in ("Conv", "Gather")],
                per_channel=r.per_channel,
                reduce_range=r.reduce_range,
                weight_type=QuantType.QInt8,  # activations are always uint8 in ORT's dynamic mode (DynamicQuantizeLinear)
                nodes_to_exclude=_dynamic_exclusions(onnx.load(str(src), load_external_data=False).graph, r, p.float_nodes),
                use_external_data_format=external_data,
            )
    elif isinstance(r, WeightOnly):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(src))
        keep = list(p.float_nodes)
        if r.gemm_as_matmul:
            keep = _with_matmul_names(keep, model.graph)
            gemms_as_matmuls(model)
        q = MatMulNBitsQuantizer(
            model,
            bits=r.bits,
            block_size=r.block_size,
            is_symmetric=r.symmetric,
            accuracy_level=r.accuracy_level,
            nodes_to_exclude=keep,
        )
        q.process()
        q.model.save_model_to_file(str(dst), use_external_data_format=external_data)
    elif isinstance(r, Mixed):
        _apply_mixed(p, src, dst, external_data)
    elif isinstance(r, Float16):
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = convert_float_to_float16(
            onnx.load(str(src)),
            keep_io_types=True,
            op_block_list=list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *r.op_block_list])),  # a given list replaces ORT's default
            node_block_list=list(p.float_nodes),
        )
        onnx.save(model, str(dst), save_as_external_data=external_data, location=f"{dst.name}.data")
    else:
        raise TypeError(f"apply_recipe: {type(r).__name__} writes no graph")


def _apply_mixed(p: ComponentPlan, src: Path, dst: Path, external_data: bool) -> None:
    """Weight-only groups through MatMulNBits, then dynamic groups through quantize_dynamic; the rest stays fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    r: Mixed = p.recipe
    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name for i in g.initializer}
    weighted = {n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits}
    gemms = {n.name for n in g.node if n.op_type == "Gemm"}
    keep = set(p.float_nodes)

    def selected(names) -> set[str]:  # weighted nodes of a group, under their names after the Gemm rewrite
        return {f"{n}_MatMul" if n in gemms else n for n in (set(names) & weighted) - keep}

    w4, w8 = selected(p.weight_only_nodes), selected(p.dynamic_nodes)
    gemms_as_matmuls(model)
    matmuls = {n.name for n in g.node if n.op_type == "MatMul"}
    if w4:
        wo = r.weight_only
        q = MatMulNBitsQuantizer(
            model, bits=wo.bits, block_size=wo.block_size, is_symmetric=wo.symmetric, accuracy_level=wo.accuracy_level, nodes_to_exclude=sorted(matmuls - w4)
        )
        q.process()
        model = q.model.model
    if w8:
        quantize_dynamic(
            model,
            dst,
            op_types_to_quantize=["MatMul"],
            per_channel=r.dynamic.per_channel,
            reduce_range=r.dynamic.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(matmuls - w8),
            use_external_data_format=external_data,
        )
    else:
        onnx.save(model, str(dst), save_as_external_data=external_data, location=f"{dst.name}.data")


def _entry(stage: Path, src_entry: dict, recipe: Recipe) -> dict:
    """Manifest entry for a staged graph: the source's signature, the new file's size, hash and precision."""
    rel = src_entry["file"]
    entry = {k: v for k, v in src_entry.items() if k not in ("external_data", "export_check", "precision")}
    entry.update(file_entry(stage, rel))
    folder = Path(rel).parent
    ext = [file_entry(stage, (folder / loc).as_posix()) for loc in external_data_locations(stage / rel)]
    if ext:
        entry["external_data"] = ext
    if isinstance(recipe, KeepFloat) and "export_check" in src_entry:
        entry["export_check"] = src_entry["export_check"]  # still the exported graph: its parity check holds
    entry["precision"] = recipe.precision
    return entry


# ---------------------------------------------------------------------- measuring


def _sqnr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise) rounded to 0.01 dB; None when the outputs are identical (infinite)."""
    if noise == 0.0:
        return None
    if signal == 0.0:
        return -math.inf if noise else None
    return round(10.0 * math.log10(signal / noise), 2)


# Probes run at the bundle's default video size, capped: a real-size model's default (Wan:
# 81 frames at 480x832, 32760 tokens) would make each probe a run of minutes and tens of GB.
PROBE_MAX_FRAMES = 17
PROBE_MAX_SIDE = 256


def _probe_size(b: Bundle) -> dict:
    """frames, height, width for the probes: the defaults, capped at PROBE_MAX_FRAMES and PROBE_MAX_SIDE, kept valid."""
    v = b.video
    frames = v.frames
    if frames > PROBE_MAX_FRAMES:
        frames = max(1, (PROBE_MAX_FRAMES - v.frame_offset) // v.frame_multiple) * v.frame_multiple + v.frame_offset

    def side(default: int) -> int:
        if default <= PROBE_MAX_SIDE:
            return default
        return max(v.min_side, PROBE_MAX_SIDE // v.size_multiple * v.size_multiple)

    return {"frames": frames, "height": side(v.height), "width": side(v.width)}


def _probes(pipe: Pipeline, names) -> dict[str, tuple[str, list[tuple[dict, dict]]]]:
    """Per component: (description, [(feeds, {output: row selector or None})]) from the source bundle."""
    b = pipe.bundle
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    st = pipe.check_inputs(PROBE_PROMPTS[0], **_probe_size(b))
    shape = pipe.latent_shape(st)  # (1, C, T, H, W)
    out: dict = {}
    if "text_encoder" in names:
        enc = pipe.tokenizer().encode_batch(list(PROBE_PROMPTS))
        ids = np.array([e.ids for e in enc], dtype=np.int64)  # (N, L)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        out["text_encoder"] = (
            f"{len(PROBE_PROMPTS)} tokenized prompts (one empty); real tokens only, padding left out",
            [({"input_ids": ids, "attention_mask": mask}, {"text_embeds": mask.astype(bool)})],
        )
    if "denoiser" in names:
        embeds, tmask = pipe.encode_text([PROBE_PROMPTS[0], ""])  # (2, L, D) from the source text encoder
        flow = b.sampler["prediction"] == "flow"
        n_train = int(b.sampler.get("vp", {}).get("num_train_timesteps", 1000))
        runs = []
        for frac in PROBE_TIMES:
            x = rng.standard_normal(shape, dtype=np.float32)
            x2 = np.concatenate([x, x])  # (2, C, T, H, W): prompt and negative prompt, as batched guidance runs
            t = frac if flow else frac * (n_train - 1)
            feeds = {
                "latents": x2,
                "timestep": np.full((2,), t, np.float32),
                "text_embeds": embeds,
                "text_mask": tmask,
                "cond_latents": np.zeros_like(x2),
                "cond_mask": np.zeros((2, 1, shape[2], 1, 1), np.float32),
            }
            runs.append((feeds, {}))
        out["denoiser"] = (
            f"random N(0,1) latents {list(shape[1:])} x (prompt, empty prompt) real text embeddings, "
            f"timesteps at {', '.join(f'{f:g}' for f in PROBE_TIMES)} of the range",
            runs,
        )
    dec = b.decoder
    n0 = dec.get("prefix_latent_frames", 1)
    if "decoder_prefix" in names or "decoder_step" in names:
        prefix_runs, step_runs = [], []
        for _ in range(2):
            lat = rng.standard_normal(shape, dtype=np.float32)
            first = np.ascontiguousarray(lat[:, :, :n0])
            prefix_runs.append(({"latents": first}, {}))
            # The step graph is fed the source prefix's caches, so it is measured on its own.
            ref = pipe.session("decoder_prefix")
            state = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {"latents": first})))
            feeds = {"latents": np.ascontiguousarray(lat[:, :, n0 : n0 + 1])}
            feeds.update({c["input"]: state[c["output"]] for c in dec["caches"]})
            step_runs.append((feeds, {}))
        desc = f"random N(0,1) latents {list(shape[1:])}, 2 draws"
        out["decoder_prefix"] = (desc + f", first {n0} latent frame(s)", prefix_runs)
        out["decoder_step"] = (desc + ", the next latent frame with the source prefix's caches", step_runs)
    if "encoder" in names:
        frames = rng.random((1, st.frames, st.height, st.width, 3), dtype=np.float32)
        name = b.components["encoder"]["inputs"][0]["name"]
        out["encoder"] = (f"uniform random frames {list(frames.shape[1:])} in [0, 1]", [({name: frames}, {})])
    return out


def measure(src: Bundle, stage: Path, names: list[str], threads: int | None = None) -> dict:
    """Per changed component: SQNR (dB) of each output of the staged graph against the source graph."""
    if not names:
        return {}
    pipe = Pipeline(src, threads=threads)
    probes = _probes(pipe, names)
    result = {}
    for name in names:
        desc, runs = probes[name]
        ref = pipe.session(name)
        qs = open_session(stage / src.components[name]["file"], "cpu", threads)
        outs = [o.name for o in ref.get_outputs()]
        signal = dict.fromkeys(outs, 0.0)
        noise = dict.fromkeys(outs, 0.0)
        for feeds, rows in runs:
            for o, r, q in zip(outs, ref.run(outs, feeds), qs.run(outs, feeds)):
                r, q = np.asarray(r, np.float64), np.asarray(q, np.float64)
                if rows.get(o) is not None:
                    r, q = r[rows[o]], q[rows[o]]
                signal[o] += float(np.sum(r * r))
                noise[o] += float(np.sum((r - q) ** 2))
        result[name] = {"sqnr_db": {o: _sqnr_db(signal[o], noise[o]) for o in outs}, "inputs": desc}
    return result


def _graph_bytes(entry: dict) -> int:
    return entry["bytes"] + sum(e["bytes"] for e in entry.get("external_data", []))


# ---------------------------------------------------------------------- the bundle


def derived_spec(src: Bundle, name: str, components: dict) -> dict:
    """write_bundle's spec for a bundle made from `src`: its manifest fields, tokenizer and files, a new name and components."""
    m = src.manifest
    tok = m["tokenizer"]
    rest = {k: v for k, v in m.items() if k not in ("format", "format_version", "created_by", "name", "components", "tokenizer", "files")}
    return {
        **rest,
        "name": name,
        "components": components,
        "tokenizer": {"source": src.path / tok["file"], **{k: v for k, v in tok.items() if k not in ("file", "bytes", "sha256")}},
        "copy_files": {f["file"]: src.path / f["file"] for f in m["files"]},
    }


def quantize_bundle(src_dir, out_dir, recipe: BundleRecipe | str, overwrite: bool = False, record: dict | None = None) -> Path:
    """Write a quantized copy of the bundle at `src_dir` to `out_dir`; returns the new bundle's path.

    `recipe` is a BundleRecipe or a preset name (see recipes.PRESETS); `record` adds keys to
    the manifest's "quantization" (the search's measurements). Raises InputError
    for a bad recipe or output path, BundleError for a bad source, before writing anything.
    """
    out = check_output(Path(out_dir), overwrite=overwrite)
    src = load_bundle(src_dir)  # hashes checked
    if out.resolve() == src.path:
        raise InputError(f"output {out} is the source bundle; write the quantized bundle to another folder")
    already = {n: c.get("precision") for n, c in src.components.items() if c.get("precision", "fp32") != "fp32"}
    if already or "quantization" in src.manifest:
        raise InputError(f"bundle {src.path} is already quantized ({already or 'quantization recorded'}); quantize from its fp32 source" + (" (`kinema export tiny -o DIR` writes kinema-tiny's)" if src.family == "tiny" else ""))
    if isinstance(recipe, str):
        recipe = preset(recipe, src.family)
    plans = plan(src, recipe)

    def build(stage: Path) -> dict:
        comps, changed = {}, []
        calibration = _calibration(src, plans)
        for name, p in plans.items():
            entry = src.components[name]
            if isinstance(p.recipe, KeepFloat):
                _copy_graph(src.path, entry["file"], stage)
            else:
                apply_recipe(
                    p, src.component_path(name), stage / entry["file"], external_data=bool(entry.get("external_data")), calibration=calibration.get(name)
                )
                changed.append(name)
            comps[name] = _entry(stage, entry, p.recipe)
        measured = measure(src, stage, changed)
        for name in changed:
            measured[name]["size_ratio"] = round(_graph_bytes(comps[name]) / _graph_bytes(src.components[name]), 4)
        return {
            **derived_spec(src, f"{src.name}-{recipe.name}", comps),
            "quantization": {
                "recipe": recipe.describe(list(plans)),
                # how many graph nodes the recipe's float groups resolved to (the groups are in the recipe)
                "float_nodes": {n: len(p.float_nodes) for n, p in plans.items() if p.float_nodes},
                "source_bundle": src.name,
                "source_bundle_sha256": src.digest,
                "tool": _tool_versions(),
                "measured": measured,
                **(record or {}),
            },
        }

    return write_bundle(out, build, overwrite=overwrite)


def _calibration(src: Bundle, plans: dict[str, ComponentPlan]) -> dict[str, list[dict]]:
    """Feeds recorded while the source bundle generates, for each component with a StaticInt8 recipe."""
    static = {n: p.recipe for n, p in plans.items() if isinstance(p.recipe, StaticInt8)}
    if not static:
        return {}
    n = max(r.calibration_prompts for r in static.values())
    return record_inputs(Pipeline(src), calibration_prompts(src.family, n), components=list(static))


def _tool_versions() -> str:
    import onnx
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"


__all__ = ["PROBE_PROMPTS", "ComponentPlan", "apply_recipe", "gemms_as_matmuls", "measure", "plan", "quantize_bundle", "resolve_nodes"]
