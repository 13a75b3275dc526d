"""Quantization recipes: what each bundle component becomes, as frozen dataclasses, and the named presets.

One dataclass per kind of quantization; ONNX Runtime's tools do the work
(quantize_bundle.py). A recipe names the nodes to keep in float explicitly: an entry
is a node name of the graph, or a module scope of the exported PyTorch module ("ada",
"dit.final", "blocks.0.mlp"), matched against each node's recorded module path and the
names of its weight initializers. An entry that matches nothing is an error, so a typo
never silently quantizes what it meant to protect.

This module imports neither onnx nor onnxruntime: the CLI reads the preset names from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import ClassVar, Union

from kinema.runtime.bundle.load import COMPONENTS_OPTIONAL, COMPONENTS_REQUIRED
from kinema.runtime.errors import InputError


def _names(value, what: str) -> tuple[str, ...]:
    """A tuple of non-empty strings; a bare string is refused (it would iterate as characters)."""
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{what} must be a sequence of non-empty names, e.g. ('ada', 'final'), not {value!r}")
    return tuple(value)


def _bool(value, what: str) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{what}={value!r} must be True or False")


@dataclass(frozen=True)
class KeepFloat:
    """Leave the graph exactly as exported (fp32)."""

    precision: ClassVar[str] = "fp32"


@dataclass(frozen=True)
class DynamicInt8:
    """Dynamic int8 (ORT quantize_dynamic): int8 weights, uint8 activations quantized per call (MatMulInteger).

    uint8 activations because ORT's u8 x s8 MatMulInteger keeps the AVX-512 VNNI path
    (~840 GOP/s on this project's CPU) and s8 x s8 loses it (~70 GOP/s). Only MatMuls with
    a constant B are quantized (ORT's MatMulConstBOnly, its dynamic-mode default), so
    attention's activation x activation products stay float.
    """

    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights only help pre-VNNI CPUs (vpmaddubsw saturation)
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    nodes_to_exclude: tuple[str, ...] = ()

    precision: ClassVar[str] = "int8-dynamic"
    OP_TYPES: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv", "Gather")  # what ORT's dynamic mode quantizes

    def __post_init__(self):
        _bool(self.per_channel, "DynamicInt8.per_channel")
        _bool(self.reduce_range, "DynamicInt8.reduce_range")
        ops = _names(self.op_types, "DynamicInt8.op_types")
        bad = [o for o in ops if o not in self.OP_TYPES]
        if bad or not ops:
            raise InputError(f"DynamicInt8.op_types {ops!r}: ONNX Runtime's dynamic quantization handles {', '.join(self.OP_TYPES)}; choose from those")
        object.__setattr__(self, "op_types", ops)
        object.__setattr__(self, "nodes_to_exclude", _names(self.nodes_to_exclude, "DynamicInt8.nodes_to_exclude"))


@dataclass(frozen=True)
class StaticInt8:
    """Static int8 QDQ (ORT quantize_static): activation ranges calibrated on inputs recorded from real sampling runs.

    The calibration inputs are what the component really sees while the source bundle
    generates `calibration_prompts` prompts: for the denoiser every step of the schedule
    and both guidance branches (quantize/calibration.py). uint8 activations and int8
    per-channel weights, as for DynamicInt8 (the VNNI fast path). Only MatMul/Gemm with a
    constant weight get Q/DQ pairs (MatMulConstBOnly): attention's activation x activation
    products stay float.
    """

    per_channel: bool = True
    method: str = "minmax"
    calibration_prompts: int = 4
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    nodes_to_exclude: tuple[str, ...] = ()

    precision: ClassVar[str] = "int8-static"
    METHODS: ClassVar[tuple[str, ...]] = ("minmax", "entropy", "percentile")
    OP_TYPES: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv")

    def __post_init__(self):
        _bool(self.per_channel, "StaticInt8.per_channel")
        if self.method not in self.METHODS:
            raise InputError(f"StaticInt8.method={self.method!r} must be one of {', '.join(self.METHODS)}")
        n = self.calibration_prompts
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
            raise InputError(f"StaticInt8.calibration_prompts={n!r} must be a whole number from 1 to 256")
        ops = _names(self.op_types, "StaticInt8.op_types")
        bad = [o for o in ops if o not in self.OP_TYPES]
        if bad or not ops:
            raise InputError(f"StaticInt8.op_types {ops!r}: choose from {', '.join(self.OP_TYPES)}")
        object.__setattr__(self, "op_types", ops)
        object.__setattr__(self, "nodes_to_exclude", _names(self.nodes_to_exclude, "StaticInt8.nodes_to_exclude"))


@dataclass(frozen=True)
class WeightOnly:
    """Weight-only blockwise int4/int8 (ORT MatMulNBits): weights stored in `bits`, activations stay float.

    Cuts memory and file size; at small sizes it gave no speed-up on this project's CPU.
    accuracy_level 4 lets the CPU kernel quantize activations to int8 per block for its
    integer path; None leaves ORT's default (fp32 compute). MatMulNBits only takes MatMul:
    with `gemm_as_matmul` the Linears the exporter wrote as Gemm (adaLN modulation, the
    timestep MLP) are first rewritten as MatMul + Add, so they are quantized too unless
    a float group keeps them.
    """

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = 4
    gemm_as_matmul: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    algorithm: str = "default"  # or "hqq": ORT's HQQ quantizer refines scales and zero points (asymmetric)

    BITS: ClassVar[tuple[int, ...]] = (4, 8)
    ACCURACY_LEVELS: ClassVar[tuple[int | None, ...]] = (None, 0, 1, 2, 3, 4)
    ALGORITHMS: ClassVar[tuple[str, ...]] = ("default", "hqq")

    @property
    def precision(self) -> str:
        return f"int{self.bits}-weight-only"

    def __post_init__(self):
        if self.bits not in self.BITS or isinstance(self.bits, bool):
            raise InputError(f"WeightOnly.bits={self.bits!r} must be one of {self.BITS}")
        bs = self.block_size
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 16 or bs > 256 or bs & (bs - 1):
            raise InputError(f"WeightOnly.block_size={bs!r} must be a power of two from 16 to 256 (MatMulNBits)")
        _bool(self.symmetric, "WeightOnly.symmetric")
        _bool(self.gemm_as_matmul, "WeightOnly.gemm_as_matmul")
        if self.accuracy_level not in self.ACCURACY_LEVELS or isinstance(self.accuracy_level, bool):
            raise InputError(f"WeightOnly.accuracy_level={self.accuracy_level!r} must be None or 0-4 (4: int8 compute)")
        if self.algorithm not in self.ALGORITHMS or (self.algorithm == "hqq" and self.bits != 4):
            raise InputError(f"WeightOnly.algorithm={self.algorithm!r} must be one of {', '.join(self.ALGORITHMS)} ('hqq' needs bits=4)")
        object.__setattr__(self, "nodes_to_exclude", _names(self.nodes_to_exclude, "WeightOnly.nodes_to_exclude"))


@dataclass(frozen=True)
class Float16:
    """fp16 weights and compute, with fp32 islands (onnxruntime.transformers.float16).

    The graph's inputs and outputs stay float32 (the bundle contract; the runtime feeds
    float32), with Casts at the edges. `op_block_list` is added to ORT's own default list.
    Normalisation statistics (LayerNormalization, RMSNormalization; RMS/GroupNorm decomposed
    into Pow -> ReduceMean -> Sqrt) and Softmax (alone or inside Attention) overflow or lose their
    precision in fp16, so they stay fp32 by default; so do the sinusoids of the timestep
    embedding and the rotary tables (Sin, Cos, Exp: fp16 phases are off by whole
    radians at large arguments). A family's float groups (node_block_list) keep whole
    modules such as the timestep MLP in fp32.
    """

    op_block_list: tuple[str, ...] = ("LayerNormalization", "RMSNormalization", "Softmax", "Attention", "Pow", "ReduceMean", "Sqrt", "Reciprocal", "Sin", "Cos", "Exp")
    node_block_list: tuple[str, ...] = ()

    precision: ClassVar[str] = "fp16"

    def __post_init__(self):
        object.__setattr__(self, "op_block_list", _names(self.op_block_list, "Float16.op_block_list"))
        object.__setattr__(self, "node_block_list", _names(self.node_block_list, "Float16.node_block_list"))


@dataclass(frozen=True)
class Mixed:
    """Per node group within one graph: weight-only for some groups, dynamic int8 for others, fp32 for the rest.

    What the mixed-precision search writes (quantize/search.py). Groups are node names or
    module scopes, as for nodes_to_exclude; `nodes_to_exclude` (a family's float groups)
    wins over both lists. The weight-only groups are quantized first (MatMulNBits, Gemms
    rewritten as MatMul), then the dynamic groups (MatMulInteger).
    """

    weight_only_groups: tuple[str, ...] = ()
    dynamic_groups: tuple[str, ...] = ()
    weight_only: WeightOnly = WeightOnly()
    dynamic: DynamicInt8 = DynamicInt8()
    nodes_to_exclude: tuple[str, ...] = ()

    precision: ClassVar[str] = "mixed"

    def __post_init__(self):
        for name in ("weight_only_groups", "dynamic_groups", "nodes_to_exclude"):
            object.__setattr__(self, name, _names(getattr(self, name), f"Mixed.{name}"))
        both = set(self.weight_only_groups) & set(self.dynamic_groups)
        if both:
            raise InputError(f"Mixed: group(s) {', '.join(sorted(both))} are in both weight_only_groups and dynamic_groups")
        if not isinstance(self.weight_only, WeightOnly) or not isinstance(self.dynamic, DynamicInt8):
            raise InputError("Mixed.weight_only must be a WeightOnly and Mixed.dynamic a DynamicInt8")


Recipe = Union[KeepFloat, DynamicInt8, StaticInt8, WeightOnly, Float16, Mixed]
RECIPE_KINDS = (KeepFloat, DynamicInt8, StaticInt8, WeightOnly, Float16, Mixed)


def float_nodes(recipe: Recipe) -> tuple[str, ...]:
    """The node names / module scopes a component recipe keeps in float."""
    if isinstance(recipe, Float16):
        return recipe.node_block_list
    return getattr(recipe, "nodes_to_exclude", ())


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def describe(recipe: Recipe) -> dict:
    """A component recipe as JSON for the manifest: its kind and every field."""
    out = {"kind": type(recipe).__name__, "precision": recipe.precision}
    for f in fields(recipe):
        k, v = f.name, getattr(recipe, f.name)
        out[k] = describe(v) if isinstance(v, RECIPE_KINDS) else _jsonable(v)
    return out


@dataclass(frozen=True)
class BundleRecipe:
    """A recipe per component; components not named get `default`."""

    name: str
    components: Mapping[str, Recipe] = field(default_factory=dict, hash=False)  # read-only after init
    default: Recipe = KeepFloat()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise InputError(f"recipe name {self.name!r} must be a plain non-empty word (it names the output bundle)")
        known = COMPONENTS_REQUIRED + COMPONENTS_OPTIONAL
        for comp, r in {**self.components, "(default)": self.default}.items():
            if comp != "(default)" and comp not in known:
                raise InputError(f"recipe {self.name!r} names component {comp!r}; bundle components are {', '.join(known)}")
            if not isinstance(r, RECIPE_KINDS):
                raise InputError(f"recipe {self.name!r}: {comp} has {r!r}, not one of {', '.join(k.__name__ for k in RECIPE_KINDS)}")
        object.__setattr__(self, "components", MappingProxyType(dict(self.components)))

    def for_component(self, name: str) -> Recipe:
        return self.components.get(name, self.default)

    def describe(self, component_names) -> dict:
        """JSON for the manifest: the recipe's name and what each of the bundle's components got."""
        return {"name": self.name, "components": {c: describe(self.for_component(c)) for c in component_names}}


# A recipe entry "@float_groups.<group>" stands for the node groups the source bundle's
# manifest lists under tools.float_groups.<group> (written by its exporter): the presets
# name groups this way, so what a family keeps in float lives with the family's export,
# not in this module. quantize_bundle binds the entries before anything is checked.
GROUP_REF = "@float_groups."
NODE_FIELDS = ("nodes_to_exclude", "node_block_list", "weight_only_groups", "dynamic_groups")
PRESETS = ("fp32", "fp16", "int8", "int8-static", "int4")


def group_ref(group: str) -> str:
    """The recipe entry that stands for the bundle's float group `group`."""
    return f"{GROUP_REF}{group}"


def preset(name: str, groups: Mapping[str, tuple[str, ...]] | str | None = None) -> BundleRecipe:
    """A named recipe: fp32 (copy), fp16, int8 (dynamic), int8-static (calibrated denoiser), int4 (weight-only denoiser).

    `groups` maps float group names ("denoiser", "text_encoder_int8") to the node names or module
    scopes to keep in float. Without it (None, or a family name: not looked up) the recipe names
    them "@float_groups.<group>", taken from the manifest it is applied to (`bind_float_groups`).
    """
    if name not in PRESETS:
        raise InputError(f"recipe {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    if name == "fp32":
        return BundleRecipe("fp32")
    if groups is None or isinstance(groups, str):
        denoiser, text_int8 = (group_ref("denoiser"),), (group_ref("text_encoder_int8"),)
    else:
        denoiser, text_int8 = tuple(groups.get("denoiser", ())), tuple(groups.get("text_encoder_int8", ()))
    if name == "fp16":
        return BundleRecipe("fp16", {"denoiser": Float16(node_block_list=denoiser)}, default=Float16())
    if name == "int8":
        # Decoders (3-D Conv) stay fp32: ConvInteger was ~3x slower; static QDQ Convs 1.24x faster at
        # >= 43 dB (benchmarks/decoder_int8.py), not yet adopted here.
        return BundleRecipe("int8", {"text_encoder": DynamicInt8(nodes_to_exclude=text_int8), "denoiser": DynamicInt8(nodes_to_exclude=denoiser)})
    if name == "int8-static":
        # The text encoder runs once per video: its dynamic int8 costs nothing per step.
        return BundleRecipe("int8-static", {"text_encoder": DynamicInt8(nodes_to_exclude=text_int8), "denoiser": StaticInt8(nodes_to_exclude=denoiser)})
    # the text encoder as int8: int4 there cost 0.016 ShapesBench adherence (140 prompts) for 3 MiB
    return BundleRecipe("int4", {"text_encoder": DynamicInt8(nodes_to_exclude=text_int8), "denoiser": WeightOnly(nodes_to_exclude=denoiser)})


def group_refs(recipe: BundleRecipe) -> tuple[str, ...]:
    """The float group names a recipe refers to ("@float_groups.<group>" entries), in order of appearance."""
    found: dict[str, None] = {}

    def visit(r) -> None:
        for f in fields(r):
            v = getattr(r, f.name)
            if isinstance(v, RECIPE_KINDS):
                visit(v)
            elif f.name in NODE_FIELDS:
                found.update(dict.fromkeys(e[len(GROUP_REF) :] for e in v if e.startswith(GROUP_REF)))

    for r in [*recipe.components.values(), recipe.default]:
        visit(r)
    return tuple(found)


def bind_float_groups(recipe: BundleRecipe, groups: Mapping[str, tuple[str, ...]]) -> BundleRecipe:
    """`recipe` with every "@float_groups.<group>" entry replaced by that group's entries.

    Raises InputError for a group `groups` does not have (a typo must not silently quantize
    what it meant to protect); a caller with no groups at all passes every group empty.
    """

    def expand(entries: tuple[str, ...], where: str) -> tuple[str, ...]:
        out: list[str] = []
        for e in entries:
            if not e.startswith(GROUP_REF):
                out.append(e)
                continue
            g = e[len(GROUP_REF) :]
            if g not in groups:
                raise InputError(f"recipe {recipe.name!r}: {where} names float group {g!r}, which the bundle does not list (its groups: {', '.join(groups) or 'none'})")
            out.extend(groups[g])
        return tuple(out)

    def bind(r, where: str):
        changes = {}
        for f in fields(r):
            v = getattr(r, f.name)
            if isinstance(v, RECIPE_KINDS):
                changes[f.name] = bind(v, f"{where}.{f.name}")
            elif f.name in NODE_FIELDS:
                changes[f.name] = expand(v, f"{where}.{f.name}")
        return replace(r, **changes) if changes else r

    comps = {c: bind(r, c) for c, r in recipe.components.items()}
    return BundleRecipe(recipe.name, comps, default=bind(recipe.default, "default"))


def recipe_from_dict(data: object, where: str = "recipe") -> BundleRecipe:
    """A BundleRecipe from the JSON that `BundleRecipe.describe` writes (a manifest's recorded recipe replays as is).

    {"name": "mine", "components": {"denoiser": {"kind": "DynamicInt8", "nodes_to_exclude": ["ada"]}},
     "default": {"kind": "KeepFloat"}}; "precision" keys are ignored, unknown fields are errors.
    """
    kinds = {k.__name__: k for k in RECIPE_KINDS}

    def one(d: object, what: str) -> Recipe:
        if not isinstance(d, dict) or d.get("kind") not in kinds:
            raise InputError(f"{where}: {what} must be an object with \"kind\" one of {', '.join(kinds)}, not {d!r}"[:300])
        cls = kinds[d["kind"]]
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in d.items() if k not in ("kind", "precision")}
        extra = sorted(set(args) - known)
        if extra:
            raise InputError(f"{where}: {what} ({d['kind']}) has unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known)) or 'none'}")
        return cls(**{k: one(v, f"{what}.{k}") if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v for k, v in args.items()})

    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError(f"{where}: expected an object with a \"name\" and \"components\"")
    extra = sorted(set(data) - {"name", "components", "default"})
    if extra:
        raise InputError(f"{where}: unknown key(s) {', '.join(extra)}; a recipe has name, components, default")
    comps = data.get("components", {})
    if not isinstance(comps, dict):
        raise InputError(f"{where}: \"components\" must map component names to recipes")
    default = one(data["default"], "default") if "default" in data else KeepFloat()
    return BundleRecipe(data["name"], {c: one(r, c) for c, r in comps.items()}, default=default)


__all__ = [
    "BundleRecipe",
    "GROUP_REF",
    "DynamicInt8",
    "Float16",
    "KeepFloat",
    "Mixed",
    "PRESETS",
    "Recipe",
    "StaticInt8",
    "recipe_from_dict",
    "WeightOnly",
    "bind_float_groups",
    "describe",
    "float_nodes",
    "group_ref",
    "group_refs",
    "preset",
]
