"""The prompt policy's words: a prompt normalised into words, and which policy words each one matches.

Normalising undoes the trivial evasions: Unicode NFKC (full-width and mathematical
letters), invisible format characters (zero-width spaces and joiners, soft hyphens), case,
accents, Cyrillic and Greek look-alike letters, leetspeak inside words (s3x, p0rn, k1ll,
$ex), masked letters (s*x, p_rn: each mask stands for one letter), letters spaced or dotted
apart ("k i l l", "p.o.r.n") and ages written as numbers in the languages the built-in
policy covers ("12yo", "12-year-old", "aged 11", "12 ans", "12-jährig", "dwunastoletni").

A policy word matches a prompt word when they are equal, when the prompt word is a simple
inflection of it (kill, kills, killed, killing), when the policy word ends in "*" and the
prompt word starts with it, or, for words of five letters or more, when the prompt word is a
misspelling of it: one edit for words of seven letters or more, a doubled, dropped or
swapped letter or another vowel for shorter ones. A prompt word that is itself a known word
(the built-in text encoder's English vocabulary, or one the policy allows) is never read as a
misspelling, so "baked" is not "naked".
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

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
MASK = "?"  # one masked letter: "s*x" is s?x
_MASKS = "*_#•·"
_NUMBER_WORDS = {}
for _lang in (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen",
    "zero un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize dix-sept",
    "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciseis diecisiete",
    "null eins zwei drei vier funf sechs sieben acht neun zehn elf zwolf dreizehn vierzehn funfzehn sechzehn siebzehn",
    "zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici quindici sedici diciassette",
    "zero um dois tres quatro cinco seis sete oito nove dez onze doze treze catorze quinze dezesseis dezessete",
    "nul een twee drie vier vijf zes zeven acht negen tien elf twaalf dertien veertien vijftien zestien zeventien",
):
    for _i, _w in enumerate(_lang.split()):
        _NUMBER_WORDS.setdefault(_w, _i)
_NUMBER_WORDS.update({"dezasseis": 16, "dezassete": 17, "quatorze": 14})
# Polish ages are one word: "dwunastoletni" (twelve-year-old), "13-letni".
_PL_AGE = {p: i for i, p in enumerate(
    "- jedno dwu trzy cztero piecio szescio siedmio osmio dziewiecio dziesiecio jedenasto dwunasto trzynasto "
    "czternasto pietnasto szesnasto siedemnasto".split()) if p != "-"}
MINOR_AGE_TOKEN = "<minor-age>"  # what "12yo", "12-year-old", "aged 11" become
_NUM = r"(\d{1,3}|" + "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len, reverse=True)) + r")"
_UNITS = (r"yo|y/o|y\.o\.?|yrs?|years?|ans?|anos?|anys?|anni|jahre?n?|jahrig\w*|jaar|jarig\w*|lat|letni\w*|letnia|latek|latka")
_AGES = [
    re.compile(r"(?<![\w.])" + _NUM + r"[\s\-]*(?:" + _UNITS + r")(?:[\s\-]*(?:old|oud))?(?!\w)"),
    re.compile(r"(?<![\w])(?:aged?|agee?s?\s+de|de\s+edad|edad\s+de|im\s+alter\s+von|alter|di\s+eta|idade\s+de|w\s+wieku|lat)\s+" + _NUM + r"(?![\w])"),
    re.compile(r"(?<![\w])(" + "|".join(_PL_AGE) + r")let(?:ni\w*|nia|ek|ka)(?!\w)"),
]
_SENTENCE_END = ".,;:?!\"')]}"
_INFLECTIONS = ("s", "es", "ed", "d", "ing", "er", "ers", "ings", "'s")
_UNIT = re.compile(r"\d+[a-z]{1,3}")  # 4k, 3d, 60fps, 1080p: numbers with units are not leetspeak
_VOWELS = set("aeiouy")
VOCAB_PATH = Path(__file__).resolve().parents[1] / "bundles" / "kinema-tiny" / "tokenizer.json"


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width, soft hyphen, bidi marks
    text = text.casefold().translate(_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _ages(text: str) -> str:
    def number(n: str) -> int:
        return _NUMBER_WORDS[n] if n in _NUMBER_WORDS else int(n)

    def repl(m: re.Match) -> str:
        return f" {MINOR_AGE_TOKEN} " if number(m.group(1)) < 18 else " adult "

    text = _AGES[0].sub(repl, text)
    # "aged 11" reads as an age only for a plausible number: "aged 500 years" was taken above
    text = _AGES[1].sub(lambda m: repl(m) if number(m.group(1)) < 18 else m.group(0), text)
    return _AGES[2].sub(lambda m: f" {MINOR_AGE_TOKEN} " if _PL_AGE[m.group(1)] < 18 else m.group(0), text)


def _word(raw: str, one: str) -> list[str]:
    """Words of one whitespace-separated chunk: leetspeak read as letters, masks kept, punctuation splits."""
    raw = raw.strip(_SENTENCE_END) or raw
    if raw == MINOR_AGE_TOKEN:
        return [raw]
    if not _UNIT.fullmatch(raw) and any(c.isalpha() for c in raw):
        raw = "".join((one if c == "1" else _LEET[c]) if c in _LEET else c for c in raw)
    # A mask between letters is a hidden letter ("s*x", "ap*nalado"); elsewhere it splits.
    raw = re.sub(r"(?<=[a-z])[" + re.escape(_MASKS) + r"](?=[a-z])", MASK, raw)
    parts = [p for p in re.split(r"[^a-z0-9?]+", raw) if p.strip(MASK)]
    return [p if sum(c != MASK for c in p) >= 2 * p.count(MASK) else p.replace(MASK, "") for p in parts]


def tokens(text: str, one: str = "i") -> tuple[list[str], set[int]]:
    """The prompt as normalised words, and the indices of words joined from 3+ spaced letters ("k i l l")."""
    text = re.sub(r"(?<=[a-z])0(?=[a-z])", "o", fold(text))  # "an0s": a zero inside a word reads as o before ages are read
    words = [w for chunk in _ages(text).split() for w in _word(chunk, one)]
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


def variants(text: str) -> list[tuple[list[str], set[int]]]:
    a, b = tokens(text, "i"), tokens(text, "l")
    return [a] if a == b else [a, b]


def term_words(term: str) -> tuple[str, ...]:
    """A policy term as words, normalised like a prompt (a trailing * kept)."""
    words: list[str] = []
    for w in fold(term).split():
        if w == MINOR_AGE_TOKEN:
            words.append(w)
            continue
        star = w.endswith("*")
        parts = [p for p in re.split(r"[^a-z0-9]+", w) if p]  # split as prompts are: "sous-vetements", "l'amour"
        if parts:
            words += parts[:-1] + [parts[-1] + ("*" if star else "")]
    return tuple(words)


# ---------------------------------------------------------------------------- matching one word


def _eq(word: str, pattern: str) -> bool:
    return len(word) == len(pattern) and all(a == b or a == MASK for a, b in zip(word, pattern))


def _inflected(pattern: str, word: str) -> bool:
    """word is pattern itself or a simple inflection of it (masks in word match any letter)."""
    if _eq(word, pattern):
        return True
    stem = word[: len(pattern)]
    if len(word) > len(pattern) and _eq(stem, pattern):
        rest = word[len(pattern):]
        # short words take only a plural, so "her" is not "herd"
        if rest in (_INFLECTIONS if len(pattern) > 3 else ("s", "es", "'s")) or (rest[:1] == pattern[-1:] and rest[1:] in ("ing", "ed", "er", "ers")):
            return True
    if pattern.endswith("e") and len(word) >= len(pattern) and _eq(word[: len(pattern) - 1], pattern[:-1]) and word[len(pattern) - 1:] in ("ing", "ings"):
        return True
    return pattern.endswith("y") and _eq(word, pattern[:-1] + "ies")


def _one_edit(a: str, b: str, strict: bool) -> bool:
    """a differs from b by one edit; `strict` allows only a doubled or dropped letter, a swap, or a vowel for a vowel."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]:
            return True  # swapped neighbours
        if len(diff) != 1:
            return False
        x, y = a[diff[0]], b[diff[0]]
        return not strict or (x in _VOWELS and y in _VOWELS) or {x, y} == {"u", "v"}
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    if short[i:] != long_[i + 1:]:
        return False
    # strict: the extra letter doubles its neighbour ("nakked"), or is a vowel ("pornografco")
    return not strict or long_[i] in (long_[i - 1: i] + long_[i + 1: i + 2]) or long_[i] in _VOWELS


def misspelt(pattern: str, word: str) -> bool:
    """word reads as a misspelling of pattern (a "*" pattern: of its prefix, at the word's start)."""
    base = pattern.rstrip("*")
    if word[:1] != base[:1] or MASK in word:
        return False
    if len(base) < 5:  # four letters: only u written as v ("nvda")
        return len(base) == 4 and "v" in word and word.replace("v", "u") == base
    strict = len(base) < 7
    if pattern.endswith("*"):
        return any(_one_edit(word[:n], base, strict) for n in (len(base) - 1, len(base), len(base) + 1) if n <= len(word))
    return _one_edit(word, base, strict) or any(
        _one_edit(word[: -len(s)], base, strict) for s in ("s", "es", "ed", "ing") if word.endswith(s) and len(word) - len(s) >= 5)


def word_matches(pattern: str, word: str) -> bool:
    if pattern.endswith("*"):
        base = pattern[:-1]
        return len(word) >= len(base) and _eq(word[: len(base)], base)
    if pattern == word:
        return True
    return _inflected(pattern, word)


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Whole words of the built-in text encoder's vocabulary: real English words, never read as misspellings."""
    try:
        vocab = json.loads(VOCAB_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, ValueError, KeyError):
        return frozenset()
    return frozenset(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 4)


__all__ = ["MASK", "MINOR_AGE_TOKEN", "fold", "known_words", "misspelt", "term_words", "tokens", "variants", "word_matches"]
