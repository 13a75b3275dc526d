"""Policy v2: the multilingual development sets, normalisation in eight languages, misspellings, the learned head."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from kinema.runtime.safety import train_head as PH
from kinema.runtime.safety import classifier as C
from kinema.runtime.safety import policy as P
from kinema.runtime.errors import InputError, PolicyError

DATA = Path(__file__).parent / "data"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


DEV = rows("policy_v2_dev.jsonl") + rows("policy_v2_heldout_a.jsonl")
LANGS = {"en", "fr", "es", "de", "it", "pt", "nl", "pl"}


def test_sets_are_large_labelled_and_multilingual():
    held = rows("policy_v2_heldout_b.jsonl")
    assert len(DEV) + len(held) >= 400
    for r in DEV + held:
        assert set(r) == {"prompt", "expect", "lang", "kind"}
        assert r["expect"] in (None, "violence", "sexual", "sexual_minors", "hate") and r["lang"] in LANGS
        assert (r["kind"] == "lookalike") == (r["expect"] is None)
    assert {r["lang"] for r in held} == LANGS and len({r["prompt"] for r in held}) == len(held)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in DEV}  # nothing of the held-out set trains or tunes


@pytest.mark.parametrize("row", DEV, ids=lambda r: f"{r['lang']}-{r['prompt'][:36]}")
def test_development_labels(row):
    """Every violating development prompt refused, every look-alike allowed."""
    v = P.classify(row["prompt"])
    assert (v is not None) == (row["expect"] is not None), (row, v)


def test_development_categories_mostly_right():
    bad = [r for r in DEV if r["expect"]]
    right = sum((v := P.classify(r["prompt"])) is not None and v.category == r["expect"] for r in bad)
    assert right / len(bad) >= 0.95


@pytest.mark.parametrize("text, age", [
    ("aged 11", True), ("age 30", False), ("une fille de 12 ans", True), ("un homme de 40 ans", False),
    ("una niña de 12 años", True), ("ein 12-jähriges Mädchen", True), ("ein 13 jähriger Junge", True),
    ("una bambina di dodici anni", True), ("um menino de 13 anos", True), ("een meisje van 12 jaar", True),
    ("dwunastoletnia dziewczynka", True), ("13-letni chłopiec", True), ("chica de 13 añ0s", True),
])
def test_ages_in_eight_languages(text, age):
    assert (P.MINOR_AGE_TOKEN in P.tokens(text)[0]) == age


@pytest.mark.parametrize("text, words", [
    ("s*x", ["s?x"]), ("p_rn vid", ["p?rn", "vid"]), ("ap*ñalado", ["ap?nalado"]),
    ("***", []), ("a*b*c", ["abc"]),  # more masks than half the letters: the masks are dropped
])
def test_masked_letters(text, words):
    assert P.tokens(text)[0] == words


@pytest.mark.parametrize("prompt, refused", [
    ("a s*x scene", True), ("a nakked woman", True), ("pornografqe video", True), ("a masacre in a village", True),
    ("una ragazza nvda", True),
    ("a baked potato", False),           # one letter from "naked", but a known English word
    ("freshly baked naan bread", False),
    ("a woman holding a vase", False),
])
def test_masks_and_misspellings(prompt, refused):
    assert (P.classify(prompt) is not None) == refused


def test_unless_lifts_a_rule_and_allowed_phrases_mask():
    assert P.classify("a nude woman on a bed") is not None
    assert P.classify("a marble statue of a nude god in a museum") is None
    assert P.classify("a documentary about the genocide, archival footage") is None
    assert P.classify("a rally celebrating the genocide, nazi flags") is not None


def test_refusal_names_category_and_appeal():
    with pytest.raises(PolicyError) as e:
        P.check_prompt("un homme décapité à la hache")
    msg = str(e.value)
    assert "extreme violence" in msg and "--policy FILE" in msg and "\n" not in msg


def test_features_are_the_hashed_ngrams():
    x = C.features("Kill")
    grams = {"w:kill", "<ki", "kil", "ill", "ll>", "<kil", "kill", "ill>", "<kill", "kill>"}
    idx = {zlib.crc32(g.encode()) % C.DIM for g in grams}
    assert set(np.flatnonzero(x)) == idx
    assert np.isclose(np.linalg.norm(x), 1.0)


def test_head_probabilities_are_the_softmax_of_the_linear_scores():
    rng = np.random.default_rng(0)
    head = C.Head(["benign", "a", "b"], rng.normal(size=(C.DIM, 3)).astype(np.float32), np.array([0.1, -0.2, 0.3], np.float32), 0.9)
    x = C.features("a quick brown fox")
    z = x.astype(np.float64) @ head.weight.astype(np.float64) + head.bias
    ref = np.exp(z) / np.exp(z).sum()
    got = head.probabilities("a quick brown fox")
    assert np.allclose([got["benign"], got["a"], got["b"]], ref, atol=1e-5)


def test_fit_separates_two_classes_and_threshold_keeps_benign():
    words = ["apple pear plum", "fig date lime", "knife blade sword", "spear axe club"]
    x = np.stack([C.features(w) for w in words * 5])
    y = np.array([0, 0, 1, 1] * 5)
    w, b = PH.fit(x, y, steps=300)
    p = (lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))(x @ w + b)
    assert (p.argmax(1) == y).all()
    t = PH.pick_threshold(1 - p[:, 0], y == 0)
    assert ((1 - p[:, 0])[y == 0] < t).all()


def test_shipped_head_fits_and_the_classifier_can_be_switched(tmp_path):
    head = C.default_head()
    assert head is not None and head.classes[0] == "benign" and 0.5 <= head.threshold < 1.0
    assert P.default_policy().classifier
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"format": "kinema-policy", "version": 1, "categories": [{"id": "fruit", "name": "fruit", "terms": ["banana"]}]}))
    assert not P.load_policy(p).classifier
    p.write_text(json.dumps({"format": "kinema-policy", "version": 1, "classifier": "yes", "categories": []}))
    with pytest.raises(InputError, match="classifier must be true or false"):
        P.load_policy(p)
    p.write_text(json.dumps({"format": "kinema-policy", "version": 1, "colour": 1, "categories": []}))
    with pytest.raises(InputError, match="unknown key"):
        P.load_policy(p)


def test_word_index_is_built_once_per_policy():
    pol = P.default_policy()
    first = P._index(pol)
    assert P._index(pol) is not None and P._index(pol)[0] is first[0]
    other = P.parse_policy({"format": "kinema-policy", "version": 1, "categories": [{"id": "x", "name": "x", "terms": ["zebra"]}]}, "t")
    assert P._index(other)[0] == {"z": ["zebra"]}
