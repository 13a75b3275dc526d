"""The prompt policy: which prompts kinema refuses to turn into video, checked before any graph opens.

A policy is a JSON file of categories (the built-in one is `data/policy.json`, in English,
French, Spanish, German, Italian, Portuguese, Dutch and Polish). Each category lists
*terms* that block on their own, *rules* (terms from every group, in order within a window
of words, or anywhere in the prompt; `unless` terms anywhere lift the rule, so "nude" next
to "statue" passes) and *allow* phrases that are harmless uses of a listed word ("the naked
eye", "chicken breasts"). Matching works on normalised words (see `words.py`: look-alike
letters, leetspeak, masks, spaced letters, ages, misspellings), not substrings, so "skill"
is not "kill" and "Scunthorpe" is not a slur.

With `"classifier": true` (the built-in policy) a learned classifier over character n-grams
(`classifier.py`) also refuses, in the categories the policy enables, what the rules let through.

The category `sexual_minors` (sexual content involving minors) cannot be switched off: a
replacement policy that leaves it out or disables it still gets the built-in one enforced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, PolicyError
from .classifier import default_head
from .words import MINOR_AGE_TOKEN, known_words, misspelt, term_words, tokens, variants, word_matches

FORMAT_NAME = "kinema-policy"
FORMAT_VERSION = 1
REQUIRED_CATEGORY = "sexual_minors"
MAX_POLICY_BYTES = 1 << 20
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[1] / "data" / "policy.json"
APPEAL = "if this prompt is harmless, a policy file of your own can allow it: --policy FILE (docs/safety.md)"


@dataclass(frozen=True)
class Rule:
    """Terms from every group, each group matched once; `ordered` within `window` words, or anywhere."""

    groups: tuple[tuple[tuple[str, ...], ...], ...]  # group -> term -> words
    window: int | None = None
    ordered: bool = True
    unless: tuple[tuple[str, ...], ...] = ()  # terms anywhere in the prompt that lift the rule ("statue" for "nude")


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    enabled: bool
    rules: tuple[Rule, ...]
    allow: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Policy:
    categories: tuple[Category, ...]
    source: str
    notes: tuple[str, ...] = ()  # what the loader overrode, e.g. the minors category put back
    classifier: bool = False  # whether the learned head (classifier.py) also refuses, in the enabled categories


@dataclass(frozen=True)
class Verdict:
    """Why a prompt is refused: the category and the normalised words that matched."""

    category: str
    name: str
    matched: str


# ---------------------------------------------------------------------------- matching


def _policy_words(policy: "Policy") -> dict[str, list[str]]:
    """Every word the policy's rules use, by first letter."""
    out: dict[str, set[str]] = {}
    for cat in policy.categories:
        for rule in cat.rules:
            for group in rule.groups + (rule.unless,):
                for term in group:
                    for w in term:
                        out.setdefault(w[:1], set()).add(w)
    return {k: sorted(v) for k, v in out.items()}


_INDEXES: dict[int, tuple["Policy", dict[str, list[str]], frozenset[str]]] = {}


def _index(policy: "Policy") -> tuple[dict[str, list[str]], frozenset[str]]:
    """The policy's words by first letter, and the words never read as misspellings; built once per policy."""
    got = _INDEXES.get(id(policy))
    if got is None or got[0] is not policy:  # keyed by identity: hashing a whole policy costs more than matching
        if len(_INDEXES) > 8:
            _INDEXES.clear()
        allowed = frozenset(w for c in policy.categories for phrase in c.allow for w in phrase)
        got = _INDEXES[id(policy)] = (policy, _policy_words(policy), known_words() | allowed)
    return got[1], got[2]


def _matched(words: list[str], policy: "Policy") -> list[frozenset[str]]:
    """Per prompt word, the policy words it matches (itself, an inflection, a prefix, or a misspelling)."""
    by_letter, known = _index(policy)
    cache: dict[str, frozenset[str]] = {}
    for w in words:
        if w in cache:
            continue
        pool = [p for ps in by_letter.values() for p in ps] if w.startswith("?") else by_letter.get(w[:1], [])
        hits = {p for p in pool if word_matches(p, w)}
        if not hits and len(w) >= 4 and w not in known:
            hits = {p for p in pool if misspelt(p, w)}
        cache[w] = frozenset(hits)
    return [cache[w] for w in words]


def _spaced_matches(pattern: str, word: str) -> bool:
    """A word joined from spaced letters may carry neighbours ("akill"): the term anywhere inside it."""
    return len(word) > len(pattern.rstrip("*")) >= 3 and pattern.rstrip("*") in word


class _Hits:
    """Per prompt word, the policy words it matches, and each policy word's positions."""

    def __init__(self, words: list[str], hits: list[frozenset[str]], joined: set[int]):
        self.words, self.hits, self.joined = words, hits, joined
        self.at: dict[str, list[int]] = {}
        for i, h in enumerate(hits):
            for p in h:
                self.at.setdefault(p, []).append(i)

    def find(self, term: tuple[str, ...]) -> list[int]:
        """Start indices where the term's words match consecutive words."""
        n, hits = len(term), self.hits
        found = [i for i in self.at.get(term[0], ()) if i + n <= len(hits) and all(term[k] in hits[i + k] for k in range(1, n))]
        if n == 1 and self.joined:
            found += [i for i in sorted(self.joined) if i not in found and _spaced_matches(term[0], self.words[i])]
        return found


def _mask_allowed(words: list[str], hits: list[frozenset[str]], allow: tuple[tuple[str, ...], ...]) -> list[frozenset[str]]:
    """The hits with the words of every allowed phrase taken out."""
    hits = list(hits)
    for phrase in allow:
        for i in [i for i in range(len(words) - len(phrase) + 1) if all(word_matches(t, words[i + k]) for k, t in enumerate(phrase))]:
            for k in range(len(phrase)):
                hits[i + k] = frozenset()
    return hits


def _rule_match(rule: Rule, found_in: _Hits) -> str | None:
    if any(found_in.find(t) for t in rule.unless):
        return None
    words = found_in.words
    hits = []  # per group: [(start, end, text)]
    for group in rule.groups:
        found = [(i, i + len(t), " ".join(words[i:i + len(t)])) for t in group for i in found_in.find(t)]
        if not found:
            return None
        hits.append(sorted(found))
    if len(hits) == 1:
        return hits[0][0][2]

    def extend(k: int, prev_end: int, first_start: int, chosen: list[str]) -> str | None:
        if k == len(hits):
            return " ... ".join(chosen)
        for start, end, text in hits[k]:
            if rule.ordered and start < prev_end:
                continue
            if rule.window is not None and k and end - first_start > rule.window:
                continue
            r = extend(k + 1, end, start if k == 0 else first_start, chosen + [text])
            if r:
                return r
        return None

    return extend(0, 0, 0, [])


def classify(prompt: str, policy: Policy | None = None) -> Verdict | None:
    """The first category the prompt falls in, or None when the policy allows it."""
    policy = default_policy() if policy is None else policy
    for words, joined in variants(prompt):
        matched = _matched(words, policy)
        for cat in policy.categories:
            if not cat.enabled:
                continue
            found_in = _Hits(words, _mask_allowed(words, matched, cat.allow), joined)
            for rule in cat.rules:
                m = _rule_match(rule, found_in)
                if m:
                    return Verdict(cat.id, cat.name, m)
    return _learned(prompt, policy) if policy.classifier else None


def _learned(prompt: str, policy: Policy) -> Verdict | None:
    head = default_head()
    v = head.verdict(prompt) if head is not None else None
    cat = next((c for c in policy.categories if v and c.id == v[0] and c.enabled), None)
    return Verdict(cat.id, cat.name, f"classifier, p = {v[1]:.2f}") if cat else None


def check_prompt(prompt: str, policy: Policy | None = None) -> None:
    """Raise PolicyError (one line, naming the category) if the policy refuses the prompt."""
    v = classify(prompt, policy)
    if v is not None:
        raise PolicyError(
            f"prompt refused by the content policy: {v.name} (matched {v.matched!r}); "
            f"kinema does not generate this; {APPEAL}"
        )


# ---------------------------------------------------------------------------- loading


def _fail(source: str, msg: str) -> InputError:
    return InputError(f"policy {source}: {msg}")


def _strings(value, source: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(source, f"{where} must be a list of non-empty strings")
    return value


def _parse_rule(r, source: str, where: str) -> Rule:
    if isinstance(r, str):
        return Rule(groups=((term_words(r),),))
    if not isinstance(r, dict) or set(r) - {"all", "window", "ordered", "unless"} or "all" not in r:
        raise _fail(source, f"{where} must be a term or an object with keys all, window, ordered, unless")
    groups = r["all"]
    if not isinstance(groups, list) or not groups:
        raise _fail(source, f"{where}.all must be a list of one or more term lists")
    window = r.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 2):
        raise _fail(source, f"{where}.window must be a whole number >= 2 or null (anywhere in the prompt)")
    ordered = r.get("ordered", True)
    if not isinstance(ordered, bool):
        raise _fail(source, f"{where}.ordered must be true or false")
    return Rule(
        groups=tuple(tuple(term_words(t) for t in _strings(g, source, f"{where}.all[{i}]")) for i, g in enumerate(groups)),
        window=window,
        ordered=ordered,
        unless=tuple(term_words(t) for t in _strings(r.get("unless", []), source, f"{where}.unless")),
    )


def parse_policy(data, source: str) -> Policy:
    """A Policy from the parsed JSON of a policy file; InputError names the first bad field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise _fail(source, f'not a policy file (needs "format": "{FORMAT_NAME}")')
    if data.get("version") != FORMAT_VERSION:
        raise _fail(source, f"version {data.get('version')!r} is not supported (this kinema reads version {FORMAT_VERSION})")
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise _fail(source, "categories must be a list")
    unknown = set(data) - {"format", "version", "description", "categories", "classifier"}
    if unknown:
        raise _fail(source, f"unknown key(s) {', '.join(sorted(unknown))}")
    classifier = data.get("classifier", False)
    if not isinstance(classifier, bool):
        raise _fail(source, "classifier must be true or false (whether the built-in learned classifier also refuses)")
    out, seen = [], set()
    for i, c in enumerate(cats):
        where = f"categories[{i}]"
        if not isinstance(c, dict):
            raise _fail(source, f"{where} must be an object")
        unknown = set(c) - {"id", "name", "enabled", "terms", "rules", "allow", "description"}
        if unknown:
            raise _fail(source, f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        cid, name = c.get("id"), c.get("name")
        if not isinstance(cid, str) or not re.fullmatch(r"[a-z0-9_]+", cid) or cid in seen:
            raise _fail(source, f"{where}.id must be a unique name of lower-case letters, digits and _")
        seen.add(cid)
        if not isinstance(name, str) or not name.strip():
            raise _fail(source, f"{where}.name must be a non-empty string")
        enabled = c.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _fail(source, f"{where}.enabled must be true or false")
        rules = [_parse_rule(t, source, f"{where}.terms[{j}]") for j, t in enumerate(_strings(c.get("terms", []), source, f"{where}.terms"))]
        raw_rules = c.get("rules", [])
        if not isinstance(raw_rules, list):
            raise _fail(source, f"{where}.rules must be a list")
        rules += [_parse_rule(r, source, f"{where}.rules[{j}]") for j, r in enumerate(raw_rules)]
        allow = tuple(term_words(a) for a in _strings(c.get("allow", []), source, f"{where}.allow"))
        out.append(Category(cid, name, enabled, tuple(rules), allow))
    return Policy(tuple(out), source, classifier=classifier)


def _read(path: Path) -> Policy:
    source = str(path)
    if not path.is_file():
        raise _fail(source, "is a folder, not a JSON file" if path.is_dir() else "no such file")
    if path.stat().st_size > MAX_POLICY_BYTES:
        raise _fail(source, f"is larger than {MAX_POLICY_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise _fail(source, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise _fail(source, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return parse_policy(data, source)


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    """The built-in policy shipped with kinema."""
    return _read(DEFAULT_POLICY_PATH)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in `path` (the built-in one when None), with the minors category always enforced."""
    if path is None:
        return default_policy()
    policy = _read(Path(path))
    required = next(c for c in default_policy().categories if c.id == REQUIRED_CATEGORY)
    own = next((c for c in policy.categories if c.id == REQUIRED_CATEGORY), None)
    if own is not None and own.enabled:
        # The user's version may add terms; the built-in rules still apply on top.
        merged = Category(own.id, own.name, True, own.rules + required.rules, own.allow)
        cats = tuple(merged if c is own else c for c in policy.categories)
        return Policy(cats, policy.source, classifier=policy.classifier)
    why = "disables" if own is not None else "leaves out"
    cats = tuple(c for c in policy.categories if c.id != REQUIRED_CATEGORY) + (required,)
    note = f"policy {path} {why} the '{required.name}' category; kinema enforces it anyway"
    return Policy(cats, policy.source, (note,), policy.classifier)
