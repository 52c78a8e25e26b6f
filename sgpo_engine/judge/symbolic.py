"""Optional symbolic equivalence of two normalized answers.

    symbolic_equal(a, b) -> True | False | None   (None: no backend, or not parseable)

Backends, imported only when first needed, so their absence breaks nothing:
math_verify (preferred) and sympy. Model text is untrusted, and sympy's parser
evaluates Python, so an expression reaches a backend only if it passes an
allowlist: at most 200 characters of digits, + - * / ^ ( ) { } spaces, a few
LaTeX commands, single-letter variables and known function names; powers only
with a short literal exponent (no 9^9^9 that would take forever to expand).
"""
from __future__ import annotations

import re
import threading
from typing import Optional

_MAX_LEN = 200
_LATEX = [(re.compile(r"\\left|\\right|\\,|\\;|\\!|\\displaystyle"), ""),
          (re.compile(r"\\(?:cdot|times)"), "*"), (re.compile(r"\\div"), "/"),
          (re.compile(r"\\pi\b"), "pi"), (re.compile(r"\\sqrt\b"), "sqrt"),
          (re.compile(r"\\(?:sin|cos|tan|log|ln|exp)\b"), lambda m: m.group(0)[1:])]
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FUNCTIONS = ("sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp")
_ALLOWED_CHARS = re.compile(r"[0-9A-Za-z+\-*/^(). ]*")
_WORD = re.compile(r"[A-Za-z]+")
_POWER = re.compile(r"\^|\*\*")
_SHORT_EXPONENT = re.compile(r"\s*(?:-?\d{1,3}|[A-Za-z]|\(\s*-?\d{1,3}(?:\s*/\s*\d{1,3})?\s*\))")


def to_sympy_syntax(s: str) -> Optional[str]:
    """LaTeX-ish answer -> allowlisted sympy syntax, or None when outside the allowlist."""
    if len(s) > _MAX_LEN:
        return None
    for pat, rep in _LATEX:
        s = pat.sub(rep, s)
    for _ in range(10):  # innermost \frac first
        s, n = _FRAC.subn(r"((\1)/(\2))", s)
        if not n:
            break
    s = s.replace("{", "(").replace("}", ")")
    if "\\" in s or not _ALLOWED_CHARS.fullmatch(s) or re.search(r"\d{31,}|\.(?!\d)", s):
        return None  # (a "." only inside a decimal number: no attribute access)
    if any(len(w) > 1 and w not in _FUNCTIONS for w in _WORD.findall(s)):
        return None
    for m in _POWER.finditer(s):
        e = _SHORT_EXPONENT.match(s, m.end())
        if e is None or _POWER.match(s[e.end():].lstrip()):  # no towers: 9^9^9 is 9^(9^9)
            return None
    return s.replace("^", "**")


def _math_verify(a: str, b: str) -> Optional[bool]:
    try:
        import math_verify
    except ImportError:
        return None
    try:
        # math_verify's timeouts use signals, which only work in the main thread.
        kw = {} if threading.current_thread() is threading.main_thread() else {"parsing_timeout": None}
        vkw = {} if not kw else {"timeout_seconds": None}
        ga, gb = math_verify.parse(f"${b}$", **kw), math_verify.parse(f"${a}$", **kw)
        if not ga or not gb:
            return None
        return bool(math_verify.verify(ga, gb, **vkw))
    except Exception:
        return None


def _sympy(a: str, b: str) -> Optional[bool]:
    try:
        import sympy
        from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                                standard_transformations)
    except ImportError:
        return None
    sa, sb = to_sympy_syntax(a), to_sympy_syntax(b)
    if sa is None or sb is None:
        return None
    names = {"sqrt": sympy.sqrt, "pi": sympy.pi, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
             "log": sympy.log, "ln": sympy.log, "exp": sympy.exp}
    # Every single letter is a plain symbol (so N, S, E, I, Q are not sympy's objects).
    names.update({c: sympy.Symbol(c) for c in set(re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", sa + " " + sb))})
    tr = standard_transformations + (implicit_multiplication_application,)
    try:
        ea = parse_expr(sa, local_dict=dict(names), transformations=tr)
        eb = parse_expr(sb, local_dict=dict(names), transformations=tr)
        diff = sympy.simplify(ea - eb)
        if diff == 0:
            return True
        if not diff.free_symbols:
            return abs(complex(sympy.N(diff))) < 1e-9
        return False
    except Exception:  # a parse or simplification error: undecided, not equal
        return None


def symbolic_equal(a: str, b: str) -> Optional[bool]:
    r = _math_verify(a, b)
    return r if r is not None else _sympy(a, b)
