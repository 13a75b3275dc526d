"""Mixed precision by search: the smallest recipe whose end-to-end video stays within a PSNR of the fp32 bundle.

    from kinema.quantize.search import search_recipe
    out = search_recipe("kinema-tiny", "kinema-tiny-mixed", target_psnr=35)

0. Prompts: a development set the search measures on, and a held-out set it never sees
   until the chosen recipe is measured on it once at the end (both spread over the family's
   manifest prompts, disjoint; or given).
1. Units: each DiT block of the denoiser (`blocks.<i>`, the family's float groups always
   stay fp32), the text encoder, and the two decoder graphs together.
2. Sensitivity: one unit at a time at each of its lower precisions (block: dynamic int8,
   int4 weight-only; text encoder: int8, int4; decoders: fp16), everything else fp32,
   generating a small fixed prompt set; the squared error of the video against the fp32
   videos and the bytes the unit saves are recorded. The mildest precision of every unit
   is measured first: when none of them reaches the target, the search stops there.
3. Greedy: starting from fp32, repeatedly take the move with the most bytes saved per
   unit of added squared error while the predicted error (the units' errors added, as
   independent noise) stays within the target; then measure that recipe for real and
   undo the last moves until it meets the target by the stopping rule: the one-sided 95%
   lower confidence bound (Student's t) of the mean per-video PSNR over the development
   videos, so that a recipe that happens to suit a few prompts is not taken. With a single
   development video the bound is undefined and its PSNR itself is used.

The chosen recipe, every measurement, the predicted and measured PSNR and the development
and held-out figures go into the bundle's manifest under quantization.search.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.writer import check_output
from kinema.runtime.bundle.load import Bundle, load_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.pipeline import Pipeline

from kinema.quantize.apply import apply_recipe, copy_graph
from kinema.quantize.bundle_tools import tools_of
from kinema.quantize.bundle_tools import prompt_text, spread
from kinema.quantize.compare import CompareSettings
from kinema.quantize.compare.settings import scored_rows
from kinema.quantize.metrics import mean_lower_bound
from kinema.quantize.plan import plan, scopes
from kinema.quantize.quantize_bundle import quantize_bundle
from kinema.quantize.recipes import BundleRecipe, DynamicInt8, Float16, KeepFloat, Mixed, WeightOnly, describe

LEVELS = {"block": ("fp32", "int8", "int4"), "text_encoder": ("fp32", "int8", "int4"), "decoders": ("fp32", "fp16")}
DECODERS = ("decoder_prefix", "decoder_step")
SEARCH_PROMPTS = 8
HELDOUT_PROMPTS = 16


@dataclass(frozen=True)
class Unit:
    """A part of the bundle the search sets to one precision: a DiT block, the text encoder, or the decoders."""

    name: str  # "blocks.3", "text_encoder", "decoders"
    kind: str  # a key of LEVELS


def units_of(src: Bundle) -> list[Unit]:
    """The search units of a bundle: every `blocks.<i>` module scope of its denoiser, the text encoder, the decoders."""
    import onnx

    g = onnx.load(str(src.component_path("denoiser")), load_external_data=False).graph
    blocks = sorted({int(m.group(1)) for n in g.node for s in scopes(n) if (m := re.search(r"(?:^|\.)blocks\.(\d+)$", s))})
    out = [Unit(f"blocks.{i}", "block") for i in blocks]
    out.append(Unit("text_encoder", "text_encoder"))
    if all(src.has(d) for d in DECODERS):
        out.append(Unit("decoders", "decoders"))
    return out


def recipe_for(config: dict[str, str], src: Bundle, name: str = "mixed") -> BundleRecipe:
    """The BundleRecipe of a {unit name: precision} choice (units not named stay fp32)."""
    groups = tools_of(src).float_groups  # none for a bundle without a tools section
    keep = groups.get("denoiser", ())
    comps: dict = {}
    w4 = tuple(u for u, lvl in config.items() if u.startswith("blocks.") and lvl == "int4")
    w8 = tuple(u for u, lvl in config.items() if u.startswith("blocks.") and lvl == "int8")
    if w4 or w8:
        comps["denoiser"] = Mixed(weight_only_groups=w4, dynamic_groups=w8, nodes_to_exclude=keep)
    te = config.get("text_encoder", "fp32")
    if te == "int8":
        comps["text_encoder"] = DynamicInt8(nodes_to_exclude=groups.get("text_encoder_int8", ()))
    elif te == "int4":
        comps["text_encoder"] = WeightOnly()
    if config.get("decoders", "fp32") == "fp16":
        comps.update({d: Float16() for d in DECODERS})
    return BundleRecipe(name, comps)


class _Trials:
    """Bundles for trial recipes, built from cached graphs in a scratch folder, and their videos' error vs fp32."""

    def __init__(self, src: Bundle, work: Path, settings: CompareSettings, threads: int | None):
        self.src, self.work, self.settings, self.threads = src, work, settings, threads
        self.graphs: dict[str, Path] = {}
        for name, entry in src.components.items():  # the fp32 graphs, once: the search's reference and source
            copy_graph(src.path, entry["file"], work / "fp32")
        shutil.copyfile(src.path / src.manifest["tokenizer"]["file"], work / "fp32" / src.manifest["tokenizer"]["file"])
        shutil.copyfile(src.path / "manifest.json", work / "fp32" / "manifest.json")
        self.ref = self._videos(Bundle(work / "fp32", src.manifest))
        self.ref_bytes = {n: (work / "fp32" / e["file"]).stat().st_size for n, e in src.components.items()}
        self.evaluations = 0

    def _videos(self, bundle: Bundle, settings: CompareSettings | None = None) -> list[np.ndarray]:
        pipe = Pipeline(bundle, threads=self.threads)
        s = settings or self.settings
        return [pipe.generate(p, seed=seed, **s.generate).frames for p in s.prompts for seed in s.seeds]

    def _graph(self, name: str, recipe, plans) -> Path:
        key = json.dumps({"c": name, "r": describe(recipe)}, sort_keys=True)
        if key not in self.graphs:
            folder = self.work / f"g{len(self.graphs)}"
            dst = folder / self.src.components[name]["file"]
            # from the snapshot taken at the start: a source replaced mid-search must not mix into the trials
            src = self.work / "fp32" / self.src.components[name]["file"]
            apply_recipe(plans[name], src, dst, external_data=bool(self.src.components[name].get("external_data")))
            self.graphs[key] = dst
        return self.graphs[key]

    def build(self, recipe: BundleRecipe) -> tuple[Bundle, int]:
        """A Bundle over cached graphs for `recipe` (hard links in a fresh folder) and its graphs' total bytes."""
        plans = plan(self.src, recipe)
        folder = Path(tempfile.mkdtemp(prefix="trial-", dir=self.work))
        comps, total = {}, 0
        for name, entry in self.src.components.items():
            r = plans[name].recipe
            path = self.work / "fp32" / entry["file"] if isinstance(r, KeepFloat) else self._graph(name, r, plans)
            (folder / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / entry["file"]).hardlink_to(path)
            size = path.stat().st_size
            comps[name] = {**entry, "bytes": size, "precision": r.precision}
            total += size
        tok = self.src.manifest["tokenizer"]["file"]
        (folder / tok).hardlink_to(self.work / "fp32" / tok)
        manifest = {**self.src.manifest, "components": comps}
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")  # the pipeline's metadata hashes it
        return Bundle(folder, manifest), total

    def error(self, recipe: BundleRecipe) -> tuple[float, int]:
        """(sum of squared uint8 errors of every video vs fp32, bytes of all graphs) of a recipe."""
        sq, total, _ = self.errors(recipe)
        return sq, total

    def errors(self, recipe: BundleRecipe, settings: CompareSettings | None = None) -> tuple[float, int, list[float]]:
        """(summed squared error, bytes of all graphs, per-video PSNR in dB) of a recipe on the development set, or on `settings`."""
        bundle, total = self.build(recipe)
        ref = self.ref if settings is None else self._videos(Bundle(self.work / "fp32", self.src.manifest), settings)
        videos = self._videos(bundle, settings)
        shutil.rmtree(bundle.path, ignore_errors=True)
        self.evaluations += settings is None
        per = [float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2)) for a, b in zip(ref, videos)]
        psnrs = [99.0 if e == 0 else min(99.0, 10 * math.log10(255.0**2 * a.size / e)) for e, a in zip(per, ref)]
        return sum(per), total, psnrs

    def psnr(self, sq: float) -> float:
        n = sum(v.size for v in self.ref)
        return math.inf if sq == 0 else 10 * math.log10(255.0**2 * n / sq)


def stats(psnrs: list[float]) -> dict:
    """Per-video PSNRs (dB, capped at 99) summarised: mean, its one-sided 95% lower bound, spread."""
    bound = mean_lower_bound(psnrs)
    mse = np.mean([10 ** (-p / 10) for p in psnrs])  # in units of 255^2; the videos are of one size
    return {
        "videos": len(psnrs),
        "pooled_psnr_db": round(float(-10 * math.log10(mse)), 3),
        "mean_psnr_db": round(float(np.mean(psnrs)), 3),
        "lower_bound_psnr_db": None if bound is None else round(bound, 3),
        "min_psnr_db": round(min(psnrs), 3),
        "per_video_psnr_db": [round(p, 3) for p in psnrs],
    }


def meets(psnrs: list[float], target: float) -> bool:
    """The stopping rule: the lower bound of the mean per-video PSNR (a single video: its PSNR) reaches the target."""
    bound = mean_lower_bound(psnrs)
    return (psnrs[0] if bound is None else bound) >= target


def split_prompts(src: Bundle, n_dev: int, n_heldout: int, seeds=(0,), **generate) -> tuple[CompareSettings, CompareSettings | None]:
    """A development and a disjoint held-out prompt set, each spread over the manifest's prompts (held out: None when none are left)."""
    dev = CompareSettings.default(src, n_dev, seeds=tuple(seeds), generate=generate)
    return dev, heldout_for(src, dev, n_heldout)


def heldout_for(src: Bundle, dev: CompareSettings, n: int) -> CompareSettings | None:
    """`n` of the manifest's prompts that `dev` does not use, spread; None when none are left."""
    used = set(dev.prompts)
    rows = [r for r in tools_of(src).calibration_prompts if prompt_text(r) not in used]
    if not rows or n < 1:
        return None
    picked = spread(rows, min(n, len(rows)))
    texts = tuple(prompt_text(r) for r in picked)
    return CompareSettings(texts, scored_rows(picked, lambda i: f"held-out prompt {i}"), seeds=dev.seeds, generate=dev.generate)


def _max_sq(target_psnr: float, n_values: int) -> float:
    """The summed squared error at which the video PSNR equals the target."""
    return n_values * 255.0**2 / 10 ** (target_psnr / 10)


def predicted(sens: dict[str, dict[str, dict]], config: dict[str, str]) -> float:
    """Predicted summed squared error of a choice: the units' own errors added, as independent noise."""
    return sum(sens[u][lvl]["sq"] for u, lvl in config.items())


def greedy(units: list[Unit], sens: dict[str, dict[str, dict]], limit: float) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(choice, moves in the order taken): from fp32, the move with the most bytes saved per added squared error, while predicted <= limit.

    `sens[unit][level]` holds "sq" (squared error with only that unit at that level) and
    "saved" (bytes it saves); levels not measured are not taken.
    """
    config = {u.name: "fp32" for u in units}
    moves: list[tuple[str, str, str]] = []
    while True:
        best = None
        for u in units:
            cur = sens[u.name][config[u.name]]
            for lvl in LEVELS[u.kind][LEVELS[u.kind].index(config[u.name]) + 1 :]:
                if lvl not in sens[u.name] or predicted(sens, {**config, u.name: lvl}) > limit:
                    continue
                gain = sens[u.name][lvl]["saved"] - cur["saved"]
                cost = max(sens[u.name][lvl]["sq"] - cur["sq"], 1e-9 * limit)
                if gain > 0 and (best is None or gain / cost > best[0]):
                    best = (gain / cost, u.name, lvl)
        if best is None:
            return config, moves
        moves.append((best[1], config[best[1]], best[2]))
        config[best[1]] = best[2]


def search_recipe(
    src_dir,
    out_dir,
    target_psnr: float,
    *,
    settings: CompareSettings | None = None,
    heldout: CompareSettings | None = None,
    heldout_prompts: int = HELDOUT_PROMPTS,
    threads: int | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the smallest searched mixed recipe of the bundle meeting `target_psnr` (dB, video vs fp32); returns its path.

    `settings`: the development prompts (default: SEARCH_PROMPTS of the manifest's);
    `heldout`: the prompts measured once on the chosen recipe (default: `heldout_prompts`
    of the manifest's that the development set does not use; none when none are left).
    Raises InputError when no quantized unit on its own reaches the target, or when the
    measured recipe cannot be brought to it; nothing is written then.
    """
    say = progress or (lambda msg: None)
    if not isinstance(target_psnr, (int, float)) or not math.isfinite(target_psnr) or not 10 <= target_psnr <= 99:
        raise InputError(f"target PSNR {target_psnr!r} must be a number of dB from 10 to 99")
    out = check_output(Path(out_dir), overwrite=overwrite)
    src = load_bundle(src_dir)
    if "quantization" in src.manifest:
        raise InputError(f"bundle {src.path} is already quantized; search from its fp32 source")
    settings = settings or CompareSettings.default(src, SEARCH_PROMPTS)
    if heldout is None:
        heldout = heldout_for(src, settings, heldout_prompts)
    elif set(heldout.prompts) & set(settings.prompts):
        raise InputError("the held-out prompts must not include development prompts: " + ", ".join(sorted(set(heldout.prompts) & set(settings.prompts)))[:200])
    units = units_of(src)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.search.", dir=out.parent))
    try:
        trials = _Trials(src, work, settings, threads)
        limit = _max_sq(target_psnr, sum(v.size for v in trials.ref))
        sens = _sensitivity(trials, units, limit, target_psnr, say)
        config, moves = greedy(units, sens, limit)
        pred_psnr = trials.psnr(predicted(sens, config))
        verified = _measure_and_undo(trials, sens, config, moves, limit, target_psnr, say)
        held = None
        if heldout is not None:
            say(f"held-out: {len(heldout.prompts) * len(heldout.seeds)} videos")
            held = {"prompts": list(heldout.prompts), **stats(trials.errors(recipe_for(config, src), heldout)[2])}
            say(f"held-out: mean {held['mean_psnr_db']:.2f} dB (development {verified[-1]['development']['mean_psnr_db']:.2f})")
        record = {
            "target_psnr_db": target_psnr,
            "measured_psnr_db": verified[-1]["psnr_db"],
            "stopping_rule": "one-sided 95% lower confidence bound (Student's t) of the mean per-video PSNR over the development videos >= target",
            "development": verified[-1]["development"],
            "held_out": held,
            "predicted_psnr_db": round(pred_psnr, 3) if math.isfinite(pred_psnr) else None,
            "chosen": config,
            "fp32_graph_bytes": sum(trials.ref_bytes.values()),
            "graph_bytes": verified[-1]["graph_bytes"],
            "sensitivity": {u: {lvl: {"psnr_db": v.get("psnr_db"), "saved_bytes": v["saved"]} for lvl, v in s.items() if lvl != "fp32"} for u, s in sens.items()},
            "verifications": verified,
            "prompts": list(settings.prompts),
            "seeds": list(settings.seeds),
            "generate": dict(settings.generate),
            "evaluations": trials.evaluations,
            "seconds": round(time.perf_counter() - t0, 1),
            "method": "sensitivity of one unit at a time, greedy bytes saved per added squared error, then measured",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"writing {out}")
    return quantize_bundle(src.path, out, recipe_for(config, src), overwrite=overwrite, record={"search": record})


def _sensitivity(trials: _Trials, units: list[Unit], limit: float, target_psnr: float, say) -> dict[str, dict[str, dict]]:
    """sens[unit][level]: the error and bytes saved with only that unit at that level; the mildest level of every unit first.

    Raises InputError when none of the mildest levels reaches the target: the harsher ones will not either.
    """
    fp32_bytes = sum(trials.ref_bytes.values())
    sens: dict[str, dict[str, dict]] = {u.name: {"fp32": {"sq": 0.0, "saved": 0}} for u in units}
    for depth in (1, 2):
        for u in units:
            levels = LEVELS[u.kind]
            if depth >= len(levels):
                continue
            lvl = levels[depth]
            sq, total = trials.error(recipe_for({u.name: lvl}, trials.src))
            sens[u.name][lvl] = {"sq": sq, "saved": fp32_bytes - total, "psnr_db": round(trials.psnr(sq), 3)}
            say(f"sensitivity {u.name} {lvl}: {trials.psnr(sq):.2f} dB, saves {(fp32_bytes - total) / 2**20:.2f} MiB")
        if depth == 1 and not any(v["sq"] <= limit for s in sens.values() for k, v in s.items() if k != "fp32"):
            best = max(((u, lvl, v) for u, s in sens.items() for lvl, v in s.items() if lvl != "fp32"), key=lambda t: t[2]["psnr_db"])
            raise InputError(
                f"target PSNR {target_psnr:g} dB cannot be met: the most accurate single quantized group ({best[0]} {best[1]}) "
                f"already gives {best[2]['psnr_db']:.2f} dB vs fp32; lower --target-psnr or keep fp32"
            )
    return sens


def _measure_and_undo(trials: _Trials, sens, config: dict[str, str], moves: list, limit: float, target_psnr: float, say) -> list[dict]:
    """Measures the greedy choice and undoes its last moves (in place, on `config` and `moves`) until it meets the target.

    The prediction adds the units' errors as independent noise, which they are not quite;
    the measurement decides. Returns every measurement, the accepted one last.
    """
    verified = []
    while True:
        sq, total, psnrs = trials.errors(recipe_for(config, trials.src))
        verified.append({"config": dict(config), "psnr_db": round(trials.psnr(sq), 3), "graph_bytes": total, "development": stats(psnrs)})
        bound = verified[-1]["development"]["lower_bound_psnr_db"]
        say(f"recipe {_short(config)}: measured {trials.psnr(sq):.2f} dB pooled, lower bound {bound} dB (predicted {trials.psnr(predicted(sens, config)):.2f}), {total / 2**20:.1f} MiB of graphs")
        if meets(psnrs, target_psnr):
            break
        if not moves:
            raise InputError(f"target PSNR {target_psnr:g} dB cannot be met: every mixed recipe measured below it; lower --target-psnr or keep fp32")
        unit, before, _ = moves.pop()
        config[unit] = before
    if all(v == "fp32" for v in config.values()):
        raise InputError(f"target PSNR {target_psnr:g} dB cannot be met by any quantized group; lower --target-psnr or keep fp32")
    return verified


def _short(config: dict[str, str]) -> str:
    return ", ".join(f"{u} {lvl}" for u, lvl in config.items() if lvl != "fp32") or "all fp32"


__all__ = ["HELDOUT_PROMPTS", "LEVELS", "Unit", "greedy", "heldout_for", "meets", "predicted", "recipe_for", "search_recipe", "split_prompts", "stats", "units_of"]
