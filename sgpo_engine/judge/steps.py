"""Deterministic step splitting and the reasoning trajectory score (docs/design.md section 1).

    split_steps(text, mode="paragraph") -> list[str]
    step_spans(text, mode="paragraph")  -> list[(start, end)]   # text[start:end] == step
    rts(first_error, num_steps)         -> float

Modes
  "paragraph"  steps are separated by blank lines (lines holding only whitespace).
  "line"       every non-blank line is a step.
  "marker"     a step starts at each line that begins with a step marker:
               "Step 3:", "Step 3.", "**Step 3**", "### Step 3", "3." or "3)"
               (a number followed by whitespace: "3.5 apples" is not a marker).
               Text before the first marker, when not blank, is a step of its own;
               text without any marker is one step.
  re.Pattern   a compiled regex matching the *separators* between steps
  "re:<regex>" the same, as a string (handy in configs and on the command line);
               zero-width patterns work, e.g. "re:(?=Step \\d)" cuts before each "Step N".

Every step is stripped of surrounding whitespace and blank steps are dropped,
so empty or whitespace-only text has zero steps. Line breaks are those of
str.splitlines (\\n, \\r\\n, \\r, \\u2028, ...). Spans index the original text,
so a step can later be mapped to the tokens that produced it.
"""
from __future__ import annotations

import re
from typing import Optional, Union

StepMode = Union[str, "re.Pattern[str]"]
Span = tuple[int, int]

MODES = ("paragraph", "line", "marker")

# The line breaks of str.splitlines, as one alternation (\r\n first, so it is one break).
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_MARKER = re.compile(r"[#*>_ \t]*(?:step[ \t]*\d+\b|\d+[.)](?=\s|$))", re.IGNORECASE)
_NOT_SPACE = re.compile(r"\S")


def _strip_span(text: str, start: int, end: int) -> Optional[Span]:
    """(start, end) shrunk to exclude surrounding whitespace; None when blank."""
    m = _NOT_SPACE.search(text, start, end)
    if m is None:
        return None
    s = m.start()
    e = end
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _lines(text: str) -> list[Span]:
    """Spans of every line (without its line break), blank lines included."""
    spans, start = [], 0
    for m in _LINE_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def _by_lines(text: str) -> list[Span]:
    return [s for s in (_strip_span(text, a, b) for a, b in _lines(text)) if s is not None]


def _by_paragraphs(text: str) -> list[Span]:
    spans, first, last = [], None, None
    for a, b in _lines(text):
        if _NOT_SPACE.search(text, a, b) is None:  # a blank line closes the paragraph
            if first is not None:
                spans.append(_strip_span(text, first, last))
            first = None
            continue
        if first is None:
            first = a
        last = b
    if first is not None:
        spans.append(_strip_span(text, first, last))
    return spans


def _cut_at(text: str, cuts: list[Span]) -> list[Span]:
    """Steps between separator spans `cuts` (sorted, non-overlapping)."""
    spans, start = [], 0
    for a, b in cuts:
        spans.append((start, a))
        start = b
    spans.append((start, len(text)))
    return [s for s in (_strip_span(text, a, b) for a, b in spans) if s is not None]


def _by_markers(text: str) -> list[Span]:
    starts = [a for a, b in _lines(text) if _MARKER.match(text, a, b)]
    # A marker line starts a step: cut (zero width) just before it.
    return _cut_at(text, [(a, a) for a in starts])


def _by_regex(text: str, pattern: "re.Pattern[str]") -> list[Span]:
    return _cut_at(text, [m.span() for m in pattern.finditer(text)])


def resolve_mode(mode: StepMode) -> StepMode:
    """Checks a step mode; "re:<regex>" becomes a compiled pattern. ValueError when unknown."""
    if isinstance(mode, re.Pattern):
        return mode
    if isinstance(mode, str) and mode.startswith("re:"):
        try:
            return re.compile(mode[3:])
        except re.error as e:
            raise ValueError(f"mode: bad regex {mode[3:]!r} ({e})") from None
    if mode in MODES:
        return mode
    raise ValueError(f"mode: expected one of {', '.join(MODES)}, a compiled regex or 're:<regex>', got {mode!r}")


def step_spans(text: str, mode: StepMode = "paragraph") -> list[Span]:
    """The (start, end) character span of each step in `text`; text[start:end] is the step."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    mode = resolve_mode(mode)
    if isinstance(mode, re.Pattern):
        return _by_regex(text, mode)
    return {"paragraph": _by_paragraphs, "line": _by_lines, "marker": _by_markers}[mode](text)


def split_steps(text: str, mode: StepMode = "paragraph") -> list[str]:
    """The steps of `text` (see the module docstring for the modes)."""
    return [text[a:b] for a, b in step_spans(text, mode)]


def rts(first_error: Optional[int], num_steps: int) -> float:
    """Reasoning trajectory score: the share of steps before the first incorrect one.

    first_error: 0-based index of the first incorrect step, None when no step is
    wrong (RTS 1). Zero steps give RTS 0 (nothing was reasoned).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps: expected an int >= 0, got {num_steps!r}")
    if num_steps == 0:
        return 0.0
    if first_error is None:
        return 1.0
    if isinstance(first_error, bool) or not isinstance(first_error, int) or not 0 <= first_error < num_steps:
        raise ValueError(f"first_error: expected None or an int in [0, {num_steps}), got {first_error!r}")
    return first_error / num_steps

