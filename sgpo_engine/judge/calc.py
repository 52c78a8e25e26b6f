"""CalcJudge: a free, deterministic step judge for arithmetic reasoning.

    CalcJudge(step_mode="line").judge(problems, responses) -> list[Verdict]

Each step's stated equations are checked with exact rational arithmetic
(fractions.Fraction); the first step holding a wrong one is the first error.
An equation is either
- a calculator annotation, GSM8K's `<<48/2=24>>`: its expression against its
  result, and the result against the number written right after it
  (`<<13*2=26>>28` states 28), or
- a written one, `48 / 2 = 24`, `$80,000 + $50,000 = $130,000`,
  `3 x 4 = 12 eggs`, `50 * 20% = 10`: an expression of numbers, + - * x / ÷
  and parentheses (with `$`, thousands commas and `%` around the numbers)
  directly before `=`, and the number directly after it.
An expression cut off by words (`5 apples + 3 apples = 8`) or by an operator
(`... * 2 = 18` after words) is not read: calc names a step only when the
arithmetic it can read is wrong, so it does not fire on correct solutions.
A result written with d decimals, or as an integer for a non-integer value,
passes within 10^-d (rounding or truncation); an integer value must be exact;
a float printed in full (more than 6 decimals, 99.00000000000001, as GSM8K's
calculator wrote them) passes within 1e-9 relative.

When no equation is wrong the verdict is "no_error_found", its own outcome:
failed (RTS NaN), so the response keeps its outcome reward, and counted apart
from real failures. In a cascade (judge = "calc+http", cascade.py) the next
judge is asked exactly then.

Untrusted text: no eval; a step is read up to MAX_STEP_CHARS, an expression up
to MAX_EXPR_CHARS characters and MAX_DIGITS digits per number; the scanners
are linear (no backtracking regex over the step), and `^` / `**` powers are not
read at all (9^9^9 would not finish).
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional, Union

from .base import Item, Judge
from .cache import VerdictCache
from .steps import StepMode
from .verdict import Verdict

MAX_STEP_CHARS = 4000
MAX_EXPR_CHARS = 160
MAX_DIGITS = 18
FLOAT_DECIMALS = 6  # more decimals than this: a float printed in full, compared to 1e-9 relative

_ANNOTATION = re.compile(r"<<([^<>=]{1,%d})=([^<>=]{1,40})>>" % MAX_EXPR_CHARS)
# a number as written: $1,234.5 or 12% or .5
_NUMBER = re.compile(r"\$?\s?(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?\s?(%)?")
_EXPR_CHARS = set("0123456789.,$% +-*/x×÷()−–")
_OPERATORS = set("+-*/x×÷−–")


class CalcJudge(Judge):
    """Checks the arithmetic each step states (module docstring)."""

    def __init__(self, step_mode: StepMode = "line", cache: Union[bool, VerdictCache, None] = None,
                 cache_path: Optional[str] = None):
        super().__init__(step_mode, cache, cache_id="calc:v1", cache_path=cache_path)

    def _judge_items(self, items: list[Item]) -> list[Verdict]:
        return [self._one(it) for it in items]

    def _one(self, it: Item) -> Verdict:
        checked = 0
        for k, step in enumerate(it.steps):
            for lhs, rhs, ok in step_equations(step):
                checked += 1
                if not ok:
                    return Verdict.judged(k, len(it.steps))
        return Verdict.no_error_found(len(it.steps), f"{checked} equation(s) checked, none wrong")

    def __repr__(self) -> str:
        return f"CalcJudge(step_mode={self.step_mode!r})"


def step_equations(step: str) -> list[tuple[str, str, bool]]:
    """(expression, stated result, whether they agree) for every equation calc can read in
    `step`, annotations first, then the written ones (annotations removed from the text)."""
    step = step[:MAX_STEP_CHARS]
    out = []
    for m in _ANNOTATION.finditer(step):
        expr, result = m.group(1), m.group(2)
        value, stated = evaluate(expr), parse_number(result.strip())
        if value is not None and stated is not None:
            out.append((expr, result, agrees(value, result.strip(), stated)))
        written = _number_at(step, m.end())  # the value the text states after the annotation
        if stated is not None and written is not None:
            text, number = written
            out.append((result, text, agrees(stated, text, number)))
    plain = _ANNOTATION.sub(" ", step)
    for i, ch in enumerate(plain):
        if ch == "=" and plain[i + 1:i + 2] != "=" and plain[i - 1:i] not in ("=", "<", ">", "!"):
            eq = _written_equation(plain, i)
            if eq is not None:
                out.append(eq)
    return out


def _written_equation(text: str, eq: int) -> Optional[tuple[str, str, bool]]:
    """The equation whose `=` is at text[eq], or None when calc cannot read both sides."""
    start = eq
    while start > 0 and text[start - 1] in _EXPR_CHARS and eq - start < MAX_EXPR_CHARS:
        start -= 1
    if start > 0 and text[start - 1] in _EXPR_CHARS:
        return None  # longer than MAX_EXPR_CHARS: not read
    lhs = text[start:eq].strip().lstrip(",").strip()
    if lhs.startswith(".") and not lhs[1:2].isdigit():  # a sentence's full stop, not ".5"
        lhs = lhs[1:].strip()
    before = text[:start].rstrip()
    if not lhs or not any(c in _OPERATORS for c in lhs[1:]):
        return None  # "x = 5", "total = 18", "-3 = ...": nothing to check
    if before.endswith("=") or (lhs[0] in _OPERATORS and before and before[-1] not in ":;("):
        return None  # "eggs - 2 * 3 = ...", "a = b + 1 = ...": not the whole expression
    value = evaluate(lhs)
    written = _number_at(text, eq + 1)
    if value is None or written is None:
        return None
    rhs, stated = written
    return lhs, rhs, agrees(value, rhs, stated)


def _number_at(text: str, pos: int) -> Optional[tuple[str, Fraction]]:
    """The number written at text[pos:] (after spaces) as (text, value); None when there is
    none, or when an expression follows it ("= 3/4", "= 5 x 3"): no single stated result."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    neg = pos < len(text) and text[pos] in "-−"
    m = _NUMBER.match(text, pos + neg)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    rest = text[m.end():].lstrip(" ")
    if rest[:1].isdigit():
        return None  # "17 500": a space between digit groups, or two numbers; either way unclear
    if rest[:1] in ("/", "*", "^", "(", "×", "÷") or (rest[:1] in ("+", "-", "x") and rest[1:].lstrip(" ")[:1].isdigit()):
        return None
    raw = text[pos:m.end()].strip()
    value = parse_number(raw)
    return None if value is None else (raw, value)


def parse_number(s: str) -> Optional[Fraction]:
    """'$1,234.50' -> 1234.5, '12%' -> 0.12, '-3' -> -3 (exact); None when not one number."""
    s = s.strip().replace("−", "-").replace("$", "").replace(" ", "")
    neg = s.startswith("-")
    s = s.lstrip("-")
    pct = s.endswith("%")
    s = s.rstrip("%").rstrip(".")
    if not s or not re.fullmatch(r"(\d{1,3}(,\d{3})+|\d*)(\.\d+)?", s):
        return None
    digits = s.replace(",", "")
    if not digits or len(digits.replace(".", "")) > MAX_DIGITS:
        return None
    value = Fraction(digits)
    value = value / 100 if pct else value
    return -value if neg else value


def agrees(value: Fraction, written: str, stated: Fraction) -> bool:
    """Whether `stated` (as `written`) states `value`: exactly for an integer value, else
    within 10^-d for d decimals written (0 for an integer written)."""
    decimals = len(written.split(".")[1].rstrip("%").strip()) if "." in written else 0
    if decimals > FLOAT_DECIMALS:  # a calculator's float (99.00000000000001): its own round-off
        return abs(value - stated) <= Fraction(1, 10 ** 9) * max(1, abs(value))
    tol = Fraction(1, 10 ** decimals)
    if "%" in written:  # "1/4 = 25%" (a share), or "100 - 75 = 25%" (percentage points)
        return abs(value - stated) <= tol / 100 or abs(value - stated * 100) <= tol
    if value.denominator == 1:
        return value == stated
    return abs(value - stated) <= tol


# ---------------------------------------------------------------------- the expression reader
def evaluate(expr: str) -> Optional[Fraction]:
    """The exact value of an arithmetic expression (numbers with $ , %; + - * x × / ÷; parentheses),
    or None when it is not one (or divides by zero, or is too long)."""
    if len(expr) > MAX_EXPR_CHARS or "^" in expr or "**" in expr:
        return None
    tokens = _tokens(expr)
    if tokens is None:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expression()
    except (ValueError, ZeroDivisionError, IndexError):
        return None
    return value if parser.pos == len(tokens) else None


def _tokens(expr: str) -> Optional[list]:
    out, i = [], 0
    expr = expr.replace("−", "-").replace("–", "-").replace("×", "*").replace("÷", "/")
    while i < len(expr):
        c = expr[i]
        if c == " ":
            i += 1
        elif c in "+-*/()":
            out.append(c)
            i += 1
        elif c == "x":  # "3 x 4": multiplication only between numbers
            out.append("*")
            i += 1
        elif c.isdigit() or c in "$.":
            m = _NUMBER.match(expr, i)
            if m is None or m.end() == i:
                return None
            value = parse_number(expr[i:m.end()])
            if value is None:
                return None
            out.append(value)
            i = m.end()
        else:
            return None
        if len(out) > 64:
            return None
    return out


class _Parser:
    """Precedence climbing: + - bind 1, * / bind 2, left-associative; unary minus;
    parentheses at most 16 deep."""

    _PREC = {"+": 1, "-": 1, "*": 2, "/": 2}

    def __init__(self, tokens: list):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def expression(self, min_prec: int = 1) -> Fraction:
        left = self.atom()
        while self.pos < len(self.tokens) and self._PREC.get(self.tokens[self.pos], 0) >= min_prec:
            op = self.tokens[self.pos]
            self.pos += 1
            right = self.expression(self._PREC[op] + 1)
            left = {"+": left + right, "-": left - right, "*": left * right}[op] if op != "/" else left / right
        return left

    def atom(self) -> Fraction:
        tok = self.tokens[self.pos]
        self.pos += 1
        if tok == "-":
            return -self.atom()
        if tok == "(":
            self.depth += 1
            if self.depth > 16:
                raise ValueError("too deep")
            value = self.expression()
            if self.tokens[self.pos] != ")":
                raise ValueError("unbalanced")
            self.pos += 1
            self.depth -= 1
            return value
        if isinstance(tok, Fraction):
            return tok
        raise ValueError(f"unexpected {tok!r}")
