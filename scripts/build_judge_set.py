"""Builds examples/data/judge_gsm8k.jsonl: a labelled step-judge set from GSM8K's worked solutions.

    python scripts/build_judge_set.py [--source ../shared/data/gsm8k/test.jsonl] [--problems 400]

Source: the GSM8K test set (Cobbe et al. 2021, github.com/openai/grade-school-math,
MIT license): each worked solution is one step per line with calculator
annotations `<<16-3-4=9>>` and a final line `#### 9`. Each of the first
--problems problems gives one item, in turn:
- correct:      the solution as written, label -1;
- slip:         an arithmetic slip: one step's stated result is off (+-1..3, or x10);
- copy:         a wrong number copied from the problem into one step's expression;
- operation:    a wrong operation in one step (+ <-> -, * <-> /).
The changed step is the label (0-based). The wrong value is carried forward:
every later annotation that used the old result is recomputed, and the later
text and the final answer follow, so the later steps are consistent with the
mistake and the final answer differs from the reference. A variant is kept only
if the changed step is really the earliest wrong one (the steps before it are
the reference's, unchanged), its value differs from the reference's, every
number stays a non-negative integer or a short decimal, and the final answer
changes; otherwise that problem gives the next kind that works, or nothing.

Rows: {"problem", "steps": [...], "label", "kind", "answer", "source_index"} (the
format `sgpo judge-eval` reads: ProcessBench's fields plus ours).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from fractions import Fraction
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sgpo_engine.judge.calc import evaluate  # noqa: E402

KINDS = ("correct", "slip", "copy", "operation")
ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>=]+)>>")
NUMBER = re.compile(r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d.]*\d)")


def fmt(v: Fraction) -> Optional[str]:
    """A value as GSM8K writes it (12, 2.5), or None when it is negative or not a short decimal."""
    if v < 0:
        return None
    if v.denominator == 1:
        return str(v.numerator)
    for d in (1, 2):
        if (v * 10 ** d).denominator == 1:
            return f"{float(v):.{d}f}"
    return None


def parse_solution(answer: str) -> tuple[list[str], str]:
    """GSM8K's answer field -> (its step lines, the final answer)."""
    lines = [ln for ln in answer.split("\n") if ln.strip()]
    final = lines[-1].removeprefix("####").strip()
    return lines[:-1], final


def substitute(text: str, mapping: dict[str, str]) -> str:
    """Each whole number of `text` that is a key of `mapping` (compared without thousands
    commas) replaced by its value, written with commas where the old one had them."""
    def one(m: re.Match) -> str:
        old = m.group(0)
        new = mapping.get(old.replace(",", ""))
        if new is None:
            return old
        return f"{int(Fraction(new)):,}" if "," in old and Fraction(new).denominator == 1 else new
    return NUMBER.sub(one, text)


def recompute(steps: list[str], mapping: dict[str, str]) -> Optional[tuple[list[str], dict[str, str]]]:
    """`steps` with the changed values `mapping` (old text -> new text) carried forward: each
    annotation's expression takes the new numbers, its result is recomputed, and the step's
    text follows; also returns the mapping grown by every result that changed. None when a
    value leaves what GSM8K writes (negative, or not a short decimal)."""
    out = []
    for step in steps:
        local = dict(mapping)
        annotations = []
        for expr, result in ANNOTATION.findall(step):
            new_expr = substitute(expr, mapping)
            value = evaluate(new_expr)
            new_result = fmt(value) if value is not None else None
            if new_result is None:
                return None
            if new_result != result.strip():
                local[result.strip()] = new_result
            annotations.append(f"<<{new_expr}={new_result}>>")
        parts = ANNOTATION.split(step)  # text, expr, result, text, ...
        texts = [substitute(parts[i], local) for i in range(0, len(parts), 3)]
        out.append("".join(t + (annotations[j] if j < len(annotations) else "") for j, t in enumerate(texts)))
        mapping = local
    return out, mapping


def changed_expression(kind: str, expr: str, problem_numbers: set, rng: random.Random) -> Optional[str]:
    """expr with one mistake of `kind` ("copy": a number swapped for another of the problem's;
    "operation": one operator flipped), or None when expr offers none."""
    if kind == "copy":
        used = [n for n in NUMBER.findall(expr) if n.replace(",", "") in problem_numbers]
        others = sorted(problem_numbers - set(used))
        if not used or not others:
            return None
        old, new = rng.choice(used), rng.choice(others)
        return NUMBER.sub(lambda t: new if t.group(0) == old else t.group(0), expr, count=1)
    ops = [i for i, c in enumerate(expr) if c in "+-*/"]
    if not ops:
        return None
    i = rng.choice(ops)
    return expr[:i] + {"+": "-", "-": "+", "*": "/", "/": "*"}[expr[i]] + expr[i + 1:]


def written_step(step: str, annotation: re.Match, new_expr: str, new_result: str, rewrite_lhs: bool) -> str:
    """The step with its annotation `<<new_expr=new_result>>`, the number written after it, and
    (rewrite_lhs) the expression written before its `=` replaced by new_expr."""
    head, tail = step[:annotation.start()], step[annotation.end():]
    result = annotation.group(2).strip()
    lead = re.match(r"\s*\$?\s*", tail).end()
    number = NUMBER.match(tail, lead)
    if number and number.group(0).replace(",", "") == result:  # "=<<..=120000>>120,000": the same value
        tail = tail[:lead] + substitute(number.group(0), {result: new_result}) + tail[number.end():]
    if rewrite_lhs:
        m = re.search(r"([\d$.,()+\-*/x ]+)=\s*\$?\s*$", head)
        if m and re.search(r"\d", m.group(1)):
            spaced = re.sub(r"\s*([+\-*/])\s*", r" \1 ", new_expr).strip()
            head = head[:m.start(1)] + (" " if m.start(1) and head[m.start(1) - 1] != " " else "") + spaced + " " \
                + head[m.end(1):]
    return head + f"<<{new_expr}={new_result}>>" + tail


def variant(kind: str, problem: str, steps: list[str], final: str, rng: random.Random):
    """(steps, label, final answer) of one erroneous variant of `kind`, or None when none works."""
    candidates = [k for k, s in enumerate(steps) if ANNOTATION.search(s)]
    rng.shuffle(candidates)
    problem_numbers = {n.replace(",", "") for n in NUMBER.findall(problem)}
    for k in candidates:
        m = ANNOTATION.search(steps[k])
        expr, result = m.group(1), m.group(2).strip()
        value = evaluate(expr)
        if value is None or fmt(value) != result:
            continue  # the reference's own annotation is not arithmetic we can redo
        if kind == "slip":
            new_expr = expr
            new_value = value + rng.choice([1, 2, 3, -1, -2]) if rng.random() < 0.8 else value * 10
        else:
            new_expr = changed_expression(kind, expr, problem_numbers, rng)
            new_value = evaluate(new_expr) if new_expr else None
        new_result = fmt(new_value) if new_value is not None else None
        if new_result is None or new_result == result:
            continue
        changed = written_step(steps[k], m, new_expr, new_result, rewrite_lhs=kind != "slip")
        # the rest of the step k's annotations and every later one follow the changed value
        carried = recompute([changed] + steps[k + 1:], {result: new_result})
        if carried is None:
            continue
        later, mapping = carried
        later[0] = changed if len(ANNOTATION.findall(changed)) == 1 else later[0]
        new_final = mapping.get(final, final)
        if new_final == final:
            continue
        return steps[:k] + later, k, new_final
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=os.path.join(ROOT, "..", "shared", "data", "gsm8k", "test.jsonl"))
    ap.add_argument("--problems", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "examples", "data", "judge_gsm8k.jsonl"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with open(args.source, encoding="utf-8") as f:
        source = [json.loads(line) for line in f][:args.problems]
    for i, row in enumerate(source):
        steps, final = parse_solution(row["answer"])
        for kind in KINDS[i % 4:] + KINDS[:i % 4]:  # this problem's kind first, then the next that works
            if kind == "correct":
                item = (steps, -1, final)
            else:
                item = variant(kind, row["question"], steps, final, rng)
            if item is not None:
                s, label, answer = item
                rows.append({"problem": row["question"], "steps": s + [f"#### {answer}"], "label": label,
                             "kind": kind, "answer": answer, "source_index": i})
                break
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(args.out + ".tmp", args.out)
    counts = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    print(f"wrote {len(rows)} items to {args.out}: {counts}")


if __name__ == "__main__":
    main()
