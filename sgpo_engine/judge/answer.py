"""Final-answer extraction and equivalence: the outcome verifier.

    extract_answer(text, patterns=DEFAULT_PATTERNS) -> str | None
    verify(response, gold, *, patterns=DEFAULT_PATTERNS, rel_tol=1e-6, abs_tol=1e-9,
           units=True, symbolic=True) -> bool

extract_answer tries the patterns in order and returns the first that matches
(each takes its *last* occurrence in the text, since models restate and then
conclude):
  "boxed"        \\boxed{...} (nested braces allowed), also \\fbox{...}
  "hash"         "#### N" (GSM8K's gold format): the rest of that line
  "answer"       a line "Answer: N", "Final answer: N" or "A: N" (GSM8K's
                 model solutions), markdown emphasis around it allowed
  "last_number"  the last number in the text (sign, thousands commas,
                 decimals, a fraction a/b, a trailing %)
A compiled regex may stand in the list: its group 1 (or whole match) is the answer.

verify extracts the response's answer, and the gold's when the gold is a full
solution (else the gold is taken as the answer), then decides equivalence:
  1. exact, after normalization (surrounding space, $, \\text{}, \\( \\),
     "\\!" spacing, thousands commas, a trailing period, a leading "x = ";
     a unit word after a number and a space, as in "18 dollars", is dropped
     when units=True),
  2. numeric: both parse as numbers (ints, decimals, 3/4, \\frac{3}{4},
     percentages: 75% equals 75 and 0.75) and agree within rel_tol / abs_tol,
  3. symbolic, when symbolic=True: math_verify if installed, else sympy if
     installed, on expressions that pass a strict allowlist (no code is ever
     evaluated from model text); neither installed -> this step is skipped.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Optional, Sequence, Union

Pattern = Union[str, "re.Pattern[str]"]
DEFAULT_PATTERNS = ("boxed", "hash", "answer", "last_number")
GOLD_PATTERNS = ("boxed", "hash", "answer")  # a gold answer is never guessed from its last number

# Greedy captures, trimmed afterwards: a lazy capture before a trailing-space
# class would backtrack quadratically on long runs of spaces in model output.
_HASH = re.compile(r"####[ \t]*(.*)$", re.MULTILINE)
_ANSWER = re.compile(r"^[ \t>*_#-]*(?:[Ff]inal [Aa]nswer|[Aa]nswer|ANSWER|A)[ \t*_]*[:：][ \t*_]*(\S.*)$",
                     re.MULTILINE)
_BRACE = re.compile(r"[{}]")
MAX_ANSWER_CHARS = 1000  # longer "answers" are compared exactly, never parsed
_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+"
_LAST_NUMBER = re.compile(rf"(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?%?")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...} (the one opening last), matching nested
    braces; None if none is closed. One pass over the braces: linear time."""
    box_open = {m.end() - 1 for m in _BOX.finditer(text)}  # index of each "{" that opens a box
    stack: list[int] = []  # per open brace: its index when it opens a box, else -1
    best = None
    for m in _BRACE.finditer(text):
        i = m.start()
        if text[i] == "{":
            stack.append(i if i in box_open else -1)
        elif stack:
            start = stack.pop()
            if start >= 0 and (best is None or start > best[0]):
                best = (start, i)
    return None if best is None else text[best[0] + 1:best[1]]


def _last(pattern: "re.Pattern[str]", text: str) -> Optional[str]:
    m = None
    for m in pattern.finditer(text):
        pass
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


def _one_pattern(p: Pattern, text: str) -> Optional[str]:
    if isinstance(p, re.Pattern):
        return _last(p, text)
    if p == "boxed":
        return _last_boxed(text)
    if p == "hash":
        found = _last(_HASH, text)
        return None if found is None else found.strip()
    if p == "answer":
        found = _last(_ANSWER, text)
        return None if found is None else found.strip().rstrip("*_ \t")
    if p == "last_number":
        return _last(_LAST_NUMBER, text)
    raise ValueError(f"patterns: unknown pattern {p!r} (expected boxed, hash, answer, last_number or a regex)")


def extract_answer(text: str, patterns: Sequence[Pattern] = DEFAULT_PATTERNS) -> Optional[str]:
    """The final answer in `text` (stripped), by the first pattern that finds one; None otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    if isinstance(patterns, (str, re.Pattern)):
        patterns = (patterns,)
    for p in patterns:
        found = _one_pattern(p, text)
        if found is not None and found.strip():
            return found.strip()
    return None


# ---------------------------------------------------------------------------
# normalization and comparison
# ---------------------------------------------------------------------------
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_UNIT = re.compile(r"^(?P<num>.*?\d%?)\s+(?:[A-Za-z°][A-Za-z°./^²³ \t-]*)$")
_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")


def normalize(answer: str, units: bool = True) -> str:
    """The comparable form of an answer string (see the module docstring)."""
    s = answer.strip()
    s = _TEXT_WRAP.sub(r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "").replace("−", "-")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = _THOUSANDS.sub("", s)
    s = re.sub(r"^[A-Za-z]\s*=\s*(?=\S)", "", s)  # "x = 5" -> "5"
    s = s.rstrip(".").strip()
    if units and len(s) <= 200:  # (a "number unit" answer is short; the regex is not for long text)
        m = _UNIT.match(s)
        if m and _number_values(m.group("num").strip()):
            s = m.group("num").strip()
    return re.sub(r"\s+", " ", s)


def _plain_number(s: str) -> Optional[Fraction]:
    try:
        return Fraction(s.replace(" ", ""))  # ints, decimals, "3/4", "1e3"
    except (ValueError, ZeroDivisionError):
        return None


def _number_values(s: str) -> list[Fraction]:
    """The values a normalized answer may mean: one, or two for a percentage (75% -> 75 and 0.75)."""
    if len(s) > 100:  # Fraction of a huge exponent string would be slow
        return []
    m = _FRAC.match(s)
    if m:
        a, b = _plain_number(m.group(1)), _plain_number(m.group(2))
        return [a / b] if a is not None and b else []
    if s.endswith("%") or s.endswith("\\%"):
        v = _plain_number(s.rstrip("%").rstrip("\\").strip())
        return [v, v / 100] if v is not None else []
    v = _plain_number(s)
    return [v] if v is not None else []


def _close(a: Fraction, b: Fraction, rel_tol: float, abs_tol: float) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    except OverflowError:
        return False


def numeric_equal(a: str, b: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Optional[bool]:
    """True / False when both normalized answers are numbers, None when either is not."""
    va, vb = _number_values(a), _number_values(b)
    if not va or not vb:
        return None
    return any(_close(x, y, rel_tol, abs_tol) for x in va for y in vb)


def verify(response: str, gold: Union[str, int, float, Fraction], *, patterns: Sequence[Pattern] = DEFAULT_PATTERNS,
           rel_tol: float = 1e-6, abs_tol: float = 1e-9, units: bool = True, symbolic: bool = True) -> bool:
    """Whether the response's final answer equals the gold answer (module docstring)."""
    if not isinstance(response, str):
        raise ValueError(f"response: expected a str, got {type(response).__name__}")
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float, Fraction)):
        raise ValueError(f"gold: expected a str or a number, got {type(gold).__name__}")
    gold = str(gold)
    got = extract_answer(response, patterns)
    want = extract_answer(gold, GOLD_PATTERNS) or gold.strip()
    if got is None or not want:
        return False
    if max(len(got), len(want)) > MAX_ANSWER_CHARS:
        return got.strip() == want.strip()
    a, b = normalize(got, units), normalize(want, units)
    if a == b:
        return True
    num = numeric_equal(a, b, rel_tol, abs_tol)
    if num is not None:
        return num
    if symbolic:
        from .symbolic import symbolic_equal
        return bool(symbolic_equal(a, b))
    return False
