"""Applying one component's recipe: ONNX Runtime's quantization tools write the new graph.

One function per recipe kind, chosen from the `APPLY` table by the recipe's type; each
reads the source graph, writes `dst`, and leaves the source untouched.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from kinema.runtime.bundle.scan import external_data_locations
from kinema.runtime.errors import InputError

from kinema.quantize.calibration import data_reader
from kinema.quantize.graph_rewrite import dynamic_exclusions, gemms_as_matmuls, with_matmul_names
from kinema.quantize.plan import ComponentPlan
from kinema.quantize.recipes import DynamicInt8, Float16, Mixed, StaticInt8, WeightOnly
from kinema.quantize.stream_int8 import quantize_dynamic_streaming


def copy_graph(src_root: Path, rel: str, stage: Path) -> None:
    """Copy a graph and the external-data files it names, at the same relative paths."""
    src = src_root / rel
    dst = stage / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    for loc in external_data_locations(src):
        (dst.parent / loc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / loc, dst.parent / loc)


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
        dst.parent.mkdir(parents=True, exist_ok=True)
        write = APPLY.get(type(p.recipe))
        if write is None:
            raise TypeError(f"apply_recipe: {type(p.recipe).__name__} writes no graph")
        write(p, src, dst, external_data, calibration)


@contextmanager
def _private_copy(src: Path, near: Path):
    """`src` (and its external data files) copied into a private temporary folder in `near`.

    ORT's quantize_dynamic writes a scratch `<name>-inferred.onnx` (as large as the graph)
    next to the graph it reads: beside a bundle in a read-only install that fails, and two
    runs on one bundle would share the file. `near` is the output's staging folder, which
    is writable and has room for the output anyway. The files are copied, not linked: onnx
    refuses external data behind a symbolic link or a hard link.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=near) as d:
        for rel in [src.name, *external_data_locations(src)]:
            target = Path(d) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.parent / rel, target)
        yield Path(d) / src.name


def _apply_static(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
    """Static int8 QDQ, activation ranges calibrated on the recorded feeds."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    r = p.recipe
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


def _apply_dynamic(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
    """Dynamic int8: int8 weights, uint8 activations quantized per call (MatMulInteger).

    A graph with external data (the large ones) goes through quantize/stream_int8.py, which
    holds one weight at a time; the others through ORT's quantize_dynamic.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    r = p.recipe
    exclude = dynamic_exclusions(onnx.load(str(src), load_external_data=False).graph, r, p.float_nodes)
    if external_data and set(r.op_types) <= {"MatMul", "Gemm"} and external_data_locations(src):
        # weights in a sidecar: a large graph, quantized one weight at a time (the same graph as ORT's tool writes)
        quantize_dynamic_streaming(src, dst, nodes_to_exclude=exclude, per_channel=r.per_channel, reduce_range=r.reduce_range)
        return
    with _private_copy(src, dst.parent) as private:
        quantize_dynamic(
            private,
            dst,
            # Gemms reach ORT's op-type filter as MatMuls (see graph_rewrite.dynamic_exclusions)
            op_types_to_quantize=["MatMul"] * bool({"MatMul", "Gemm"} & set(r.op_types)) + [o for o in r.op_types if o in ("Conv", "Gather")],
            per_channel=r.per_channel,
            reduce_range=r.reduce_range,
            weight_type=QuantType.QInt8,  # activations are always uint8 in ORT's dynamic mode (DynamicQuantizeLinear)
            nodes_to_exclude=exclude,
            use_external_data_format=external_data,
        )


def _apply_weight_only(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
    """Weight-only blockwise int4/int8 (MatMulNBits), Gemms first rewritten as MatMul when asked."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    r = p.recipe
    model = onnx.load(str(src))
    keep = list(p.float_nodes)
    if r.gemm_as_matmul:
        keep = with_matmul_names(keep, model.graph)
        gemms_as_matmuls(model)
    algo = None
    if r.algorithm == "hqq":
        from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

        try:
            import torch  # noqa: F401  ORT's HQQ quantizer runs its optimisation in PyTorch
        except ImportError:
            raise InputError("WeightOnly.algorithm='hqq' needs PyTorch (pip install 'kinema[export]'); or use algorithm 'default'") from None

        algo = HQQWeightOnlyQuantConfig(block_size=r.block_size, bits=r.bits)
    q = MatMulNBitsQuantizer(
        model,
        bits=r.bits,
        block_size=r.block_size,
        is_symmetric=r.symmetric,
        accuracy_level=r.accuracy_level,
        nodes_to_exclude=keep,
        algo_config=algo,
    )
    with warnings.catch_warnings():
        # HQQ hands ONNX's read-only weight arrays to torch.from_numpy, which warns; it only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        q.process()
    if algo is not None and r.accuracy_level is not None:
        _set_accuracy_level(q.model.model.graph, r.accuracy_level)  # HQQ's config has no accuracy level of its own
    q.model.save_model_to_file(str(dst), use_external_data_format=external_data)


def _set_accuracy_level(graph, level: int) -> None:
    import onnx

    for node in graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])


def _apply_float16(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
    """fp16 weights and compute with fp32 islands; float32 graph inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    r = p.recipe
    model = convert_float_to_float16(
        onnx.load(str(src)),
        keep_io_types=True,
        op_block_list=list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *r.op_block_list])),  # a given list replaces ORT's default
        node_block_list=list(p.float_nodes),
    )
    onnx.save(model, str(dst), save_as_external_data=external_data, location=f"{dst.name}.data")


def _apply_mixed(p: ComponentPlan, src: Path, dst: Path, external_data: bool, calibration: list[dict] | None) -> None:
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


APPLY = {
    StaticInt8: _apply_static,
    DynamicInt8: _apply_dynamic,
    WeightOnly: _apply_weight_only,
    Mixed: _apply_mixed,
    Float16: _apply_float16,
}


__all__ = ["APPLY", "apply_recipe", "copy_graph"]
