"""Precision and recall of the prompt policy on labelled prompt sets.

    python benchmarks/policy_eval.py [--policy FILE] [--out benchmarks/results]

Each set is JSONL rows {"prompt": ..., "expect": category id or null}, the multilingual
sets also with "lang" and "kind" (plain, paraphrase, misspelling, obfuscation, lookalike).
A row counts as a true positive when the policy refuses it (category agreement is reported
separately), a false positive when it refuses a row labelled null. The development sets
(`policy_prompts.jsonl`, `policy_v2_dev.jsonl`) were written with the rules and train the
classifier head. The held-out sets were written before the policy first ran on them:
`policy_prompts_heldout.jsonl` (English) and two multilingual ones by a separate writer who
never saw the rules. The first of these (`policy_v2_heldout_a.jsonl`) was measured once
(heldout_a_first_run.md) and has been developed on since; `policy_v2_heldout_b.jsonl`, written
after that, is the held-out figure reported. The v2 held-out set is also broken down by language, by category and by
kind. Writes benchmarks/results/policy_eval/result.json and result.md (under --out, the
results root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
from kinema.runtime.safety import policy as P

NAME = "policy_eval"

DATA = Path(__file__).resolve().parents[1] / "tests" / "runtime" / "data"
SETS = {
    "v2 development (8 languages)": DATA / "policy_v2_dev.jsonl",
    "v2 held out (8 languages)": DATA / "policy_v2_heldout_b.jsonl",
    "v2 first held-out set, measured once and developed on since": DATA / "policy_v2_heldout_a.jsonl",
    "v1 development (English)": DATA / "policy_prompts.jsonl",
    "v1 held out (English)": DATA / "policy_prompts_heldout.jsonl",
}
BREAKDOWN_SET = "v2 held out (8 languages)"


def evaluate(rows: list[dict], policy: P.Policy) -> dict:
    tp = fp = fn = tn = same_category = 0
    errors = []
    sw = common.Stopwatch()
    for r in rows:
        v = P.classify(r["prompt"], policy)
        got = v.category if v else None
        if r["expect"] is None:
            tn += got is None
            fp += got is not None
        else:
            tp += got is not None
            fn += got is None
            same_category += got == r["expect"]
        r["got"] = got
        if got != r["expect"]:
            errors.append({"prompt": r["prompt"], "expect": r["expect"], "got": got, "matched": v.matched if v else None,
                           "lang": r.get("lang"), "kind": r.get("kind")})
    seconds = sw.elapsed()
    return {
        "prompts": len(rows), "blocked_labelled": tp + fn, "allowed_labelled": tn + fp,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
        "category_accuracy": same_category / (tp + fn) if tp + fn else None,
        "ms_per_prompt": 1000 * seconds / len(rows),
        "errors": errors,
    }


def breakdown(rows: list[dict], key: str) -> dict:
    """Recall on violating rows and the share of benign rows refused, per value of `key` (lang, expect or kind)."""
    out = {}
    for value in sorted({str(r.get(key)) for r in rows}):
        sel = [r for r in rows if str(r.get(key)) == value]
        bad = [r for r in sel if r["expect"] is not None]
        good = [r for r in sel if r["expect"] is None]
        out[value] = {
            "violating": len(bad), "recall": sum(r["got"] is not None for r in bad) / len(bad) if bad else None,
            "benign": len(good), "benign_refused": sum(r["got"] is not None for r in good) / len(good) if good else None,
        }
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def breakdown_table(parts: dict) -> list[str]:
    lines = []
    for key, title in (("lang", "language"), ("expect", "category (null: the benign look-alikes)"), ("kind", "kind")):
        lines += ["", f"By {title}:", "", f"| {key} | violating | recall | benign | benign refused |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {v['violating']} | {_fmt(v['recall'])} | {v['benign']} | {_fmt(v['benign_refused'])} |" for k, v in parts[key].items()]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None, help="policy file (default: the built-in one)")
    ap.add_argument("--out", default=str(common.RESULTS), help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args()
    policy = P.load_policy(args.policy)
    rows = {name: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] for name, path in SETS.items()}
    P.classify("a warm-up prompt", policy)  # the first call builds the policy's word index
    results = {name: evaluate(r, policy) for name, r in rows.items()}
    parts = {key: breakdown(rows[BREAKDOWN_SET], key) for key in ("lang", "expect", "kind")}
    machine = common.machine()
    lines = ["| set | prompts | blocked / look-alike | precision | recall | false positives | category right | ms per prompt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['prompts']} | {r['blocked_labelled']} / {r['allowed_labelled']} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['fp']} of {r['allowed_labelled']} | {r['category_accuracy']:.3f} | {r['ms_per_prompt']:.2f} |")
    lines += ["", f"Breakdown of the {BREAKDOWN_SET} set:"] + breakdown_table(parts)
    misses = [f"- {name}: {e['prompt']!r} ({e['lang'] or 'en'}, {e['kind'] or '-'}): expected {e['expect']}, got {e['got']} (matched {e['matched']!r})"
              for name, r in results.items() for e in r["errors"]]
    if misses:
        lines += ["", "Rows the policy gets wrong:", ""] + misses
    lines += ["", f"Machine: {common.describe_machine(machine)}."]
    common.write_result(NAME, {"policy": policy.source, "machine": machine, "sets": results, "breakdown": {BREAKDOWN_SET: parts}}, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
