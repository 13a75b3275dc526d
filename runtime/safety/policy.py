"""The prompt policy: which prompts kinema refuses to turn into video, checked before any graph opens.

A policy is a JSON file of categories (the built-in one is `data/policy.json`). Each
category lists *terms* that block on their own, *combos* (terms from every group, in order
within a window of words, or anywhere in the prompt) and *allow* phrases that are harmless
uses of a listed word ("the naked eye", "chicken breasts"). Matching works on words, not
substrings, so "skill" is not "kill" and "Scunthorpe" is not a slur; a term matches its
simple inflections (kill, kills, killed, killing), a term ending in "*" matches any word
it starts ("decapitat*").

Prompts are normalised before matching, against the trivial evasions: Unicode NFKC
(full-width and mathematical letters), invisible format characters (zero-width spaces
and joiners, soft hyphens), case, accents, Cyrillic and Greek look-alike letters,
leetspeak inside words (s3x, p0rn, k1ll, $ex), letters spaced or dotted apart
("k i l l", "p.o.r.n") and ages written as numbers ("12yo", "12-year-old").

The category `sexual_minors` (sexual content involving minors) cannot be switched off: a
replacement policy that leaves it out or disables it still gets the built-in one enforced.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, PolicyError

FORMAT_NAME = "kinema-policy"
FORMAT_VERSION = 1
REQUIRED_CATEGORY = "sexual_minors"
MAX_POLICY_BYTES = 1 << 20
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[1] / "data" / "policy.json"

# Look-alike letters from other scripts that NFKC leaves alone (Unicode confusables.txt, the common ones).
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ɡ": "g", "ӏ": "l", "ь": "b",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "c", "ϲ": "c", "μ": "u",
    # Latin variants
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe",
})
# Leetspeak: symbols and digits that stand for letters inside a word. "1" reads as i or l.
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
         "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l"}
_LEET_CHARS = "".join(_LEET)
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen".split())}
MINOR_AGE_TOKEN = "<minor-age>"  # what "12yo", "12-year-old", "twelve year old" become
_AGE = re.compile(r"(?<![\w.])(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")[\s\-]*(?:yo|y/o|yrs?|years?)(?:[\s\-]*old)?(?!\w)")
_SENTENCE_END = ".,;:?!\"')]}"
_INFLECTIONS = ("s", "es", "ed", "d", "ing", "er", "ers", "ings", "'s")
_UNIT = re.compile(r"\d+[a-z]{1,3}")  # 4k, 3d, 60fps, 1080p: numbers with units are not leetspeak


@dataclass(frozen=True)
class Rule:
    """Terms from every group, each group matched once; `ordered` within `window` words, or anywhere."""

    groups: tuple[tuple[tuple[str, ...], ...], ...]  # group -> term -> words
    window: int | None = None
    ordered: bool = True


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


@dataclass(frozen=True)
class Verdict:
    """Why a prompt is refused: the category and the normalised words that matched."""

    category: str
    name: str
    matched: str


# ---------------------------------------------------------------------------- normalising


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width, soft hyphen, bidi marks
    text = text.casefold().translate(_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _ages(text: str) -> str:
    def repl(m: re.Match) -> str:
        n = m.group(1)
        age = _NUMBER_WORDS[n] if n in _NUMBER_WORDS else int(n)
        return f" {MINOR_AGE_TOKEN} " if age < 18 else " adult "
    return _AGE.sub(repl, text)


def _word(raw: str, one: str) -> list[str]:
    """Words of one whitespace-separated chunk: leetspeak read as letters, punctuation splits or joins."""
    raw = raw.strip(_SENTENCE_END) or raw
    if raw == MINOR_AGE_TOKEN:
        return [raw]
    if not _UNIT.fullmatch(raw) and any(c.isalpha() for c in raw):
        raw = "".join((one if c == "1" else _LEET[c]) if c in _LEET else c for c in raw)
    parts = [p for p in re.split(r"[^a-z0-9]+", raw) if p]
    return parts  # "p.o.r.n" gives single letters, joined by tokens()


def tokens(text: str, one: str = "i") -> tuple[list[str], set[int]]:
    """The prompt as normalised words, and the indices of words joined from 3+ spaced letters ("k i l l")."""
    words = [w for chunk in _ages(_fold(text)).split() for w in _word(chunk, one)]
    out: list[str] = []
    joined: set[int] = set()
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and len(words[j]) == 1 and words[j].isalpha():
            j += 1
        if j - i >= 3:
            joined.add(len(out))
            out.append("".join(words[i:j]))
            i = j
        else:
            out.append(words[i])
            i += 1
    return out, joined


def _variants(text: str) -> list[tuple[list[str], set[int]]]:
    a, b = tokens(text, "i"), tokens(text, "l")
    return [a] if a == b else [a, b]


# ---------------------------------------------------------------------------- matching


def _term_words(term: str) -> tuple[str, ...]:
    words = []
    for w in _fold(term).split():
        star = w.endswith("*")
        w = re.sub(r"[^a-z0-9<>\-]", "", w)
        words.append(w + ("*" if star else ""))
    return tuple(words)


def _word_matches(pattern: str, word: str) -> bool:
    if pattern.endswith("*"):
        return word.startswith(pattern[:-1])
    if word == pattern:
        return True
    if word.startswith(pattern):
        rest = word[len(pattern):]
        # short words take only a plural, so "her" is not "herd"
        if rest in (_INFLECTIONS if len(pattern) > 3 else ("s", "es", "'s")) or (rest[:1] == pattern[-1:] and rest[1:] in ("ing", "ed", "er", "ers")):
            return True
    if pattern.endswith("e") and word.startswith(pattern[:-1]) and word[len(pattern) - 1:] in ("ing", "ings"):
        return True
    if pattern.endswith("y") and word == pattern[:-1] + "ies":
        return True
    return False


def _spaced_matches(pattern: str, word: str) -> bool:
    """A word joined from spaced letters may carry neighbours ("akill"): the term anywhere inside it."""
    return len(word) > len(pattern.rstrip("*")) >= 3 and pattern.rstrip("*") in word


def _find(term: tuple[str, ...], words: list[str], joined: set[int]) -> list[int]:
    """Start indices where the term's words match consecutive words."""
    hits = []
    n = len(term)
    for i in range(len(words) - n + 1):
        if all(_word_matches(t, words[i + k]) or (n == 1 and i in joined and _spaced_matches(t, words[i]))
               for k, t in enumerate(term)):
            hits.append(i)
    return hits


def _mask_allowed(words: list[str], allow: tuple[tuple[str, ...], ...]) -> list[str]:
    words = list(words)
    for phrase in allow:
        for i in _find(phrase, words, set()):
            for k in range(len(phrase)):
                words[i + k] = "\x00"
    return words


def _rule_match(rule: Rule, words: list[str], joined: set[int]) -> str | None:
    hits = []  # per group: [(start, end, text)]
    for group in rule.groups:
        found = [(i, i + len(t), " ".join(words[i:i + len(t)])) for t in group for i in _find(t, words, joined)]
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
    for words, joined in _variants(prompt):
        for cat in policy.categories:
            if not cat.enabled:
                continue
            masked = _mask_allowed(words, cat.allow)
            for rule in cat.rules:
                m = _rule_match(rule, masked, joined)
                if m:
                    return Verdict(cat.id, cat.name, m)
    return None


def check_prompt(prompt: str, policy: Policy | None = None) -> None:
    """Raise PolicyError (one line, naming the category) if the policy refuses the prompt."""
    v = classify(prompt, policy)
    if v is not None:
        raise PolicyError(
            f"prompt refused by the content policy: {v.name} (matched {v.matched!r}); "
            f"kinema does not generate this"
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
        return Rule(groups=((_term_words(r),),))
    if not isinstance(r, dict) or set(r) - {"all", "window", "ordered"} or "all" not in r:
        raise _fail(source, f"{where} must be a term or an object with keys all, window, ordered")
    groups = r["all"]
    if not isinstance(groups, list) or len(groups) < 2:
        raise _fail(source, f"{where}.all must be a list of at least two term lists")
    window = r.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 2):
        raise _fail(source, f"{where}.window must be a whole number >= 2 or null (anywhere in the prompt)")
    ordered = r.get("ordered", True)
    if not isinstance(ordered, bool):
        raise _fail(source, f"{where}.ordered must be true or false")
    return Rule(
        groups=tuple(tuple(_term_words(t) for t in _strings(g, source, f"{where}.all[{i}]")) for i, g in enumerate(groups)),
        window=window,
        ordered=ordered,
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
        allow = tuple(_term_words(a) for a in _strings(c.get("allow", []), source, f"{where}.allow"))
        out.append(Category(cid, name, enabled, tuple(rules), allow))
    return Policy(tuple(out), source)


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
        return Policy(cats, policy.source)
    why = "disables" if own is not None else "leaves out"
    cats = tuple(c for c in policy.categories if c.id != REQUIRED_CATEGORY) + (required,)
    note = f"policy {path} {why} the '{required.name}' category; kinema enforces it anyway"
    return Policy(cats, policy.source, (note,))
