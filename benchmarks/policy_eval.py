"""Precision and recall of the prompt policy on labelled prompt sets.

    python benchmarks/policy_eval.py [--policy FILE] [--out benchmarks/results]

Each set is JSONL rows {"prompt": ..., "expect": category id or null}. A row counts as a
true positive when the policy refuses it (category agreement is reported separately), a
false positive when it refuses a row labelled null. `policy_prompts.jsonl` was written
with the rules (tests assert every label); `policy_prompts_heldout.jsonl` was written
before its first run and is only measured here. Writes benchmarks/results/policy_eval/result.json
and result.md (under --out, the results root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
from kinema.runtime.safety import policy as P

NAME = "policy_eval"

DATA = Path(__file__).resolve().parents[1] / "tests" / "runtime" / "data"
SETS = {"tuned": DATA / "policy_prompts.jsonl", "held out": DATA / "policy_prompts_heldout.jsonl"}


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
        if got != r["expect"]:
            errors.append({"prompt": r["prompt"], "expect": r["expect"], "got": got, "matched": v.matched if v else None})
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None, help="policy file (default: the built-in one)")
    ap.add_argument("--out", default=str(common.RESULTS), help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args()
    policy = P.load_policy(args.policy)
    results = {name: evaluate([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()], policy)
               for name, path in SETS.items()}
    machine = common.machine()
    lines = ["| set | prompts | blocked / look-alike | precision | recall | false positives | category right |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['prompts']} | {r['blocked_labelled']} / {r['allowed_labelled']} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['fp']} of {r['allowed_labelled']} | {r['category_accuracy']:.3f} |")
    misses = [f"- {name}: {e['prompt']!r}: expected {e['expect']}, got {e['got']} (matched {e['matched']!r})"
              for name, r in results.items() for e in r["errors"]]
    if misses:
        lines += ["", "Rows the policy gets wrong:", ""] + misses
    lines += ["", f"Machine: {common.describe_machine(machine)}."]
    common.write_result(NAME, {"policy": policy.source, "machine": machine, "sets": results}, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
