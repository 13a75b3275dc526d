"""The prompt policy: the labelled prompt set, normalisation against evasion, replacement files, CLI refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kinema.runtime.safety import policy as P
from kinema.runtime.errors import InputError, PolicyError

DATA = Path(__file__).parent / "data"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_prompt_set_is_large_and_balanced():
    r = rows("policy_prompts.jsonl")
    blocked = [x for x in r if x["expect"]]
    assert len(r) >= 60 and len(blocked) >= 30 and len(r) - len(blocked) >= 30
    assert {x["expect"] for x in blocked} == {"violence", "sexual", "sexual_minors", "hate"}


@pytest.mark.parametrize("row", rows("policy_prompts.jsonl"), ids=lambda r: r["prompt"][:40])
def test_prompt_set_labels(row):
    """Recall 1.0 on the blocked rows (right category), no refusal of a look-alike (precision 1.0)."""
    v = P.classify(row["prompt"])
    assert (v.category if v else None) == row["expect"], v


@pytest.mark.parametrize("text, words", [
    ("ＮＵＤＥ", ["nude"]),                       # full-width letters (NFKC)
    ("nu\u200bd\u00ade", ["nude"]),                 # zero-width space, soft hyphen
    ("\u0440\u043ern", ["porn"]),                   # Cyrillic er and o
    ("\u03bd\u03bfde", ["vode"]),                   # Greek nu reads as v: not a word the policy knows
    ("S3X p0rn $ex", ["sex", "porn", "sex"]),      # leetspeak inside words
    ("k i l l", ["kill"]),                          # spaced letters
    ("p.o.r.n", ["porn"]),
    ("née café", ["nee", "cafe"]),                  # accents
    ("a 4k 3d video at 60fps", ["a", "4k", "3d", "video", "at", "60fps"]),  # numbers with units stay
    ("a 12-year-old, a twelve year old, a 30 yo", ["a", P.MINOR_AGE_TOKEN, "a", P.MINOR_AGE_TOKEN, "a", "adult"]),
])
def test_normalisation(text, words):
    assert P.tokens(text)[0] == words


@pytest.mark.parametrize("prompt", ["skill", "Scunthorpe", "sussex", "a killer whale", "spicy food", "grapes", "herd of sheep"])
def test_word_boundaries(prompt):
    assert P.classify(prompt) is None


def test_inflections_and_prefixes():
    assert P.classify("decapitation").category == "violence"
    assert P.classify("he kills the man").category == "violence"
    assert P.classify("she was stabbed to death").category == "violence"
    assert P.classify("a cat kills time") is None  # no person follows the verb
    assert P.classify("a killer whale chases a man") is None  # "killer" is not followed by a person within the window


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_replacement_policy_replaces_but_keeps_minors(tmp_path):
    p = write(tmp_path, {"format": "kinema-policy", "version": 1, "categories": [
        {"id": "fruit", "name": "fruit", "terms": ["banana*"]},
        {"id": "sexual_minors", "name": "mine", "enabled": False, "terms": []},
    ]})
    pol = P.load_policy(p)
    assert P.classify("a banana split", pol).category == "fruit"
    assert P.classify("a naked woman", pol) is None  # the built-in sexual category is replaced
    assert P.classify("a naked child", pol).category == "sexual_minors"  # disabled in the file, enforced anyway
    assert any("disables" in n for n in pol.notes)
    dropped = P.load_policy(write(tmp_path, {"format": "kinema-policy", "version": 1, "categories": []}))
    assert P.classify("nude kids", dropped).category == "sexual_minors"
    assert any("leaves out" in n for n in dropped.notes)
    own = P.load_policy(write(tmp_path, {"format": "kinema-policy", "version": 1, "categories": [
        {"id": "sexual_minors", "name": "minors (mine)", "terms": ["kiddo in a swimsuit"]}]}))
    assert own.notes == ()
    assert P.classify("a kiddo in a swimsuit", own).category == "sexual_minors"  # the file's own term
    assert P.classify("a sexy toddler", own).category == "sexual_minors"  # the built-in rule on top


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ({"format": "other", "version": 1, "categories": []}, "not a policy file"),
    ({"format": "kinema-policy", "version": 9, "categories": []}, "version 9"),
    ({"format": "kinema-policy", "version": 1, "categories": [{"id": "x", "name": "x", "terms": "kill"}]}, "terms must be a list"),
    ({"format": "kinema-policy", "version": 1, "categories": [{"id": "x", "name": "x", "colour": 1}]}, "unknown key(s) colour"),
    ({"format": "kinema-policy", "version": 1, "categories": [{"id": "x", "name": "x", "rules": [{"all": []}]}]}, "one or more"),
])
def test_bad_policy_files(tmp_path, content, needle):
    with pytest.raises(InputError, match=None) as e:
        P.load_policy(write(tmp_path, content))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_pipeline_refuses_before_any_graph_opens(tiny_bundle):
    from kinema.runtime import Pipeline

    pipe = Pipeline.from_bundle(tiny_bundle)
    with pytest.raises(PolicyError, match="extreme violence"):
        pipe.generate("a man is beheaded", steps=1, frames=5)
    assert pipe._sessions == {}  # nothing was loaded


def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "kinema.runtime.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_cli_refusal_is_one_line_exit_2_before_the_bundle(tmp_path):
    # the bundle folder does not exist: the policy answers first
    r = run_cli("generate", "a k1ll3r stabbing a woman to death", "--bundle", tmp_path / "none", "-o", tmp_path / "x.mp4", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("kinema generate: error: prompt refused by the content policy: extreme violence")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_replacement_policy_notes_minors(tmp_path):
    p = write(tmp_path, {"format": "kinema-policy", "version": 1, "categories": []})
    r = run_cli("generate", "a n u d e toddler", "--policy", p, "--bundle", tmp_path / "none", cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert "enforces it anyway" in lines[0]
    assert "sexual content involving minors" in lines[1]
    bad = run_cli("generate", "a red ball", "--policy", tmp_path / "missing.json", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("missing.json: no such file"), bad.stderr
