"""`kinema bench shapes`: ground-truth self-check, a random bundle end to end, and bad input (exit 2, one line, no JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def kinema(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kinema.runtime.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


GOOD_ROW = {"prompt": "a red ball moving left on black", "background": "black", "objects": [{"color": "red", "shape": "circle", "motion": "left"}]}


def test_ground_truth_scores_near_perfect(tmp_path):
    out = tmp_path / "out.json"
    r = kinema("bench", "shapes", "--ground-truth", "--limit", 20, "--seeds", 1, "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["n"] == 20 and len(data["rows"]) == 20
    assert data["adherence"] >= 0.98
    assert data["settings"]["ground_truth"] is True and data["settings"]["seeds"] == [0]
    assert data["timing"]["videos"] == 20
    assert "adherence" in r.stdout and "motion" in r.stdout and "s/video" in r.stdout
    assert "20/20 videos" in r.stderr  # progress (the \r updates read as newlines in text mode)
    assert not [p for p in tmp_path.iterdir() if p.name != "out.json"]  # no temp file left behind


def test_ground_truth_custom_prompts_seeds_quiet_and_no_torch(tmp_path):
    prompts = tmp_path / "p.jsonl"
    second = dict(GOOD_ROW, prompt="a large blue square growing on white", background="white",
                  objects=[{"color": "blue", "shape": "square", "motion": "grow", "size": "large"}])
    prompts.write_text(json.dumps(GOOD_ROW) + "\n\n" + json.dumps(second) + "\n")
    out = tmp_path / "r.json"
    code = (
        "import sys; from kinema.runtime.cli import main; "
        f"rc = main(['bench', 'shapes', '--ground-truth', '--prompts', {str(prompts)!r}, '--seeds', '2', '-q', '--json', {str(out)!r}]); "
        "assert 'torch' not in sys.modules, 'bench shapes imported torch'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # -q: no progress
    data = json.loads(out.read_text())
    assert data["n"] == 4
    assert [(row["prompt"], row["seed"]) for row in data["rows"]] == [
        (GOOD_ROW["prompt"], 0), (GOOD_ROW["prompt"], 1), (second["prompt"], 0), (second["prompt"], 1)
    ]
    assert data["adherence"] >= 0.98


def test_bundle_end_to_end(tiny_bundle, tmp_path):
    out = tmp_path / "bundle.json"
    r = kinema("bench", "shapes", "--bundle", tiny_bundle, "--limit", 3, "--seeds", 1, "--steps", 2, "--json", out, "-q")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert 0.0 <= data["adherence"] <= 1.0
    assert data["n"] == 3 and len(data["rows"]) == 3
    s = data["settings"]
    assert s["steps"] == 2 and s["bundle_sha256"] and s["frames"] >= 2
    assert data["timing"]["generate_s_per_video"] > 0


def _bad_prompts(tmp_path: Path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps(dict(GOOD_ROW, background="purple")) + "\n")
    return p


@pytest.mark.parametrize(
    "case",
    ["missing-prompts", "bad-row", "bad-json-line", "seeds-0", "limit-0", "json-folder-missing", "json-is-folder", "steps-0", "gt-with-bundle"],
)
def test_bad_input_exits_2_one_line_no_json(case, tiny_bundle, tmp_path):
    out = tmp_path / "out.json"
    base = ["bench", "shapes", "--bundle", tiny_bundle, "--limit", 1, "--seeds", 1, "--steps", 1]
    extra, expect = {
        "missing-prompts": (["--prompts", tmp_path / "nope.jsonl", "--json", out], "nope.jsonl"),
        "bad-row": (["--prompts", _bad_prompts(tmp_path), "--json", out], "bad.jsonl, line 2"),
        "bad-json-line": (["--prompts", tmp_path / "j.jsonl", "--json", out], "j.jsonl, line 1"),
        "seeds-0": (["--seeds", 0, "--json", out], "--seeds"),
        "limit-0": (["--limit", 0, "--json", out], "--limit"),
        "json-folder-missing": (["--json", tmp_path / "no" / "such" / "out.json"], "does not exist"),
        "json-is-folder": (["--json", tmp_path], "folder"),
        "steps-0": (["--steps", 0, "--json", out], "steps"),
        "gt-with-bundle": (["--ground-truth", "--json", out], "--ground-truth"),
    }[case]
    (tmp_path / "j.jsonl").write_text("{not json\n")
    r = kinema(*base, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert expect in lines[0], lines[0]
    assert not out.exists()
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.tmp"))
