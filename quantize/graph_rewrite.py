"""Graph rewrites the quantizers need: Gemm as MatMul (+ Add), and node names that survive ORT's own rewrite."""

from __future__ import annotations

from kinema.quantize.recipes import DynamicInt8


def gemms_as_matmuls(model, read=None) -> int:
    """Rewrite each Gemm with a constant weight as MatMul (+ Add for a bias), in place; returns how many.

    MatMulNBits only replaces MatMul, so Linears the exporter wrote as Gemm (2-D inputs:
    adaLN modulation, the timestep MLP) would stay fp32 under a weight-only recipe. The
    new nodes are named `<gemm>_MatMul` / `<gemm>_Add`, as ORT's own rewrite names them,
    and keep the Gemm's module-scope metadata so recipe groups still select them. A Gemm
    with alpha/beta != 1, transA, or a computed weight is left as it is. `read` turns an
    initializer into an array (default: numpy_helper.to_array, which needs its data loaded).
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
            t = (read or numpy_helper.to_array)(inits[w]).T.copy()  # (in, out) for MatMul
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


def with_matmul_names(names, graph) -> list[str]:
    """Node names to exclude, each Gemm also under the `<name>_MatMul` a Gemm -> MatMul rewrite gives it."""
    gemms = {n.name for n in graph.node if n.op_type == "Gemm"}
    names = set(names)
    return sorted(names | {f"{n}_MatMul" for n in names & gemms})


def dynamic_exclusions(graph, r: DynamicInt8, keep: tuple[str, ...]) -> list[str]:
    """Node names for quantize_dynamic's nodes_to_exclude that give the recipe its meaning.

    ORT's dynamic mode first rewrites every Gemm into MatMul (+ Add), renamed
    `<name>_MatMul`, and only then applies nodes_to_exclude and op_types: an excluded Gemm
    would be quantized, and "MatMul" alone would take the Gemms too. Each Gemm to keep is
    therefore named in both spellings, and a MatMul/Gemm whose op type the recipe leaves
    out is excluded by name.
    """
    names = set(keep) | {n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.op_type not in r.op_types}
    return with_matmul_names(names, graph)


__all__ = ["dynamic_exclusions", "gemms_as_matmuls", "with_matmul_names"]
