"""The built-in synthetic task: left-to-right `+`/`-` chains (docs/design.md section 6.8).

A problem starts from a value in 0..99 and applies k operations, each adding
or subtracting an operand in 1..99, so that the running value stays in 0..99:

    prompt     17+5-3+8=
    reference  17+5=22          one line per operation (k lines),
               22-3=19
               19+8=27
               #27              then the answer line, then EOS.

k (the number of operations) sets the difficulty. Every next value is drawn
uniformly among the 99 values in 0..99 other than the current one (which fixes
the operation and the operand), so all running values are equally likely.

Train and evaluation problems are disjoint by construction: a fixed 10% of all
prompts (by a stable hash of the prompt text) form the held-out split; the
training generator never yields them and the evaluation generator yields
nothing else.

Checking is exact (`first_error`): the response's non-empty lines (stripped)
are compared one by one with the reference lines. The first line that differs
is the first error, which covers wrong arithmetic, a copied wrong operand,
garbage, and an early `#` answer line (it stands where an operation line
should). A response that stops before the reference does (a missing line) has
its first error at the position of the missing line, i.e. index len(steps):
one past its last step (`step_judge`, which must name an existing step, names
the last one instead). Extra lines after a correct `#` answer line are an
error at the first extra line (a correct response is exactly the reference;
generation should have stopped with EOS), and `verify` rejects such a response
too, since its final line is no longer the answer.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

MIN_VALUE, MAX_VALUE = 0, 99        # start and running values
MIN_OPERAND, MAX_OPERAND = 1, 99
HELDOUT_MOD = 10                    # 1 prompt in HELDOUT_MOD (by hash) is held out for evaluation
ANSWER_PREFIX = "#"

_OP_RE = re.compile(r"([+-])(\d+)")
_PROMPT_RE = re.compile(r"^(\d+)((?:[+-]\d+)+)=$")


@dataclass(frozen=True)
class Problem:
    """One chain. `answer` is the final value; `reference` the worked solution
    (k operation lines and the `#answer` line, newline-separated, no EOS)."""
    prompt: str
    answer: int
    reference: str
    k: int
    start: int
    ops: tuple[tuple[str, int], ...]        # ((op, operand), ...), op in "+-"

    @property
    def values(self) -> list[int]:
        """The running values: start, then after each operation."""
        out = [self.start]
        for op, x in self.ops:
            out.append(out[-1] + x if op == "+" else out[-1] - x)
        return out


def make_problem(start: int, ops: Sequence[tuple[str, int]]) -> Problem:
    """The problem for an explicit chain; ValueError when a value leaves 0..99
    or an operand leaves 1..99."""
    if not (isinstance(start, int) and MIN_VALUE <= start <= MAX_VALUE):
        raise ValueError(f"start: expected an int in {MIN_VALUE}..{MAX_VALUE}, got {start!r}")
    if not ops:
        raise ValueError("ops: expected at least one operation")
    value, lines, prompt = start, [], str(start)
    for i, (op, x) in enumerate(ops):
        if op not in ("+", "-"):
            raise ValueError(f"ops[{i}]: operation must be '+' or '-', got {op!r}")
        if not (isinstance(x, int) and MIN_OPERAND <= x <= MAX_OPERAND):
            raise ValueError(f"ops[{i}]: operand must be an int in {MIN_OPERAND}..{MAX_OPERAND}, got {x!r}")
        new = value + x if op == "+" else value - x
        if not MIN_VALUE <= new <= MAX_VALUE:
            raise ValueError(f"ops[{i}]: {value}{op}{x}={new} leaves {MIN_VALUE}..{MAX_VALUE}")
        lines.append(f"{value}{op}{x}={new}")
        prompt += f"{op}{x}"
        value = new
    lines.append(f"{ANSWER_PREFIX}{value}")
    return Problem(prompt=prompt + "=", answer=value, reference="\n".join(lines), k=len(ops),
                   start=start, ops=tuple((op, x) for op, x in ops))


def parse_prompt(prompt: str) -> Problem:
    """`17+5-3+8=` -> its Problem (ValueError when it is not a valid chain)."""
    m = _PROMPT_RE.match(prompt.strip())
    if not m:
        raise ValueError(f"prompt: not an arithmetic chain like '17+5-3=': {prompt!r}")
    ops = [(op, int(x)) for op, x in _OP_RE.findall(m.group(2))]
    return make_problem(int(m.group(1)), ops)


def is_heldout(prompt: str) -> bool:
    """Whether a prompt belongs to the held-out evaluation split (stable across runs and machines)."""
    return zlib.crc32(prompt.encode("utf-8")) % HELDOUT_MOD == 0


def _random_chain(rng: random.Random, k: int) -> Problem:
    start = rng.randint(MIN_VALUE, MAX_VALUE)
    value, ops = start, []
    for _ in range(k):
        new = rng.randint(MIN_VALUE, MAX_VALUE - 1)      # uniform over the 99 values != value
        if new >= value:
            new += 1
        ops.append(("+", new - value) if new > value else ("-", value - new))
        value = new
    return make_problem(start, ops)


class ArithTask:
    """A seeded stream of problems with k in min_ops..max_ops.

    split: "train" (never yields a held-out prompt) or "eval" (only held-out
    prompts). weights: relative probability of each k (len = max_ops - min_ops
    + 1); uniform by default. The same (arguments, seed) give the same stream.
    """

    def __init__(self, min_ops: int = 1, max_ops: int = 8, seed: int = 0, split: str = "train",
                 weights: Optional[Sequence[float]] = None):
        if not (isinstance(min_ops, int) and isinstance(max_ops, int) and 1 <= min_ops <= max_ops):
            raise ValueError(f"min_ops, max_ops: expected ints with 1 <= min_ops <= max_ops, "
                             f"got {min_ops!r}, {max_ops!r}")
        if split not in ("train", "eval"):
            raise ValueError(f"split: expected 'train' or 'eval', got {split!r}")
        self.ks = list(range(min_ops, max_ops + 1))
        if weights is None:
            weights = [1.0] * len(self.ks)
        weights = [float(w) for w in weights]
        if len(weights) != len(self.ks) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights: expected {len(self.ks)} non-negative numbers (k = {min_ops}..{max_ops}) "
                             f"with a positive sum, got {weights!r}")
        self.weights = weights
        self.min_ops, self.max_ops, self.seed, self.split = min_ops, max_ops, seed, split
        # distinct streams per split, so train and eval never share random draws either
        self.rng = random.Random(f"sgpo-arith/{split}/{seed}")

    def sample_k(self, k: int) -> Problem:
        """The next problem of the split with exactly k operations."""
        want = self.split == "eval"
        while True:
            p = _random_chain(self.rng, k)
            if is_heldout(p.prompt) == want:
                return p

    def sample(self) -> Problem:
        k = self.rng.choices(self.ks, weights=self.weights)[0]
        return self.sample_k(k)

    def batch(self, n: int) -> list[Problem]:
        return [self.sample() for _ in range(n)]

    def __iter__(self) -> Iterator[Problem]:
        while True:
            yield self.sample()


def eval_set(k: int, n: int = 300, seed: int = 0) -> list[Problem]:
    """n distinct held-out problems with k operations (deterministic in k, n, seed).
    The held-out split has about 990 problems for k = 1 and far more for k >= 2."""
    task = ArithTask(k, k, seed=seed, split="eval")
    seen: dict[str, Problem] = {}
    tries = 0
    while len(seen) < n:
        p = task.sample_k(k)
        seen.setdefault(p.prompt, p)
        tries += 1
        if tries > 100 * n:
            raise ValueError(f"n: the held-out split has too few distinct problems with k={k} for n={n}")
    return list(seen.values())


# ----------------------------------------------------------------------
# checking
# ----------------------------------------------------------------------
def response_lines(text: str) -> list[str]:
    """The steps of a response: its non-empty lines, stripped (what
    split_steps(text, mode="line") gives)."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def _reference_lines(reference: Union[str, Problem, None], problem=None) -> list[str]:
    if isinstance(reference, Problem):
        return reference.reference.split("\n")
    if reference is None or reference == "":
        p = _as_problem(problem)
        if p is None:
            raise ValueError("reference: needed when the problem is not a Problem or a chain prompt")
        return p.reference.split("\n")
    return response_lines(reference)


def _as_problem(problem) -> Optional[Problem]:
    if isinstance(problem, Problem):
        return problem
    if isinstance(problem, str):
        try:
            return parse_prompt(problem)
        except ValueError:
            return None
    if isinstance(problem, dict) and isinstance(problem.get("prompt"), str):
        return _as_problem(problem["prompt"])
    return None


def first_error_of_steps(steps: Sequence[str], reference_lines: Sequence[str]) -> Optional[int]:
    """Index of the first step that differs from the reference line at its
    position; len(steps) when every step matches but the response stops before
    the reference ends (the missing line); None when steps == reference."""
    steps = [s.strip() for s in steps]
    for i, ref in enumerate(reference_lines):
        if i >= len(steps):
            return i                       # the missing line
        if steps[i] != ref:
            return i
    if len(steps) > len(reference_lines):
        return len(reference_lines)        # extra line after the answer
    return None


def first_error(response_text: str, reference_text: Union[str, Problem]) -> Optional[int]:
    """The index (0-based, among the response's non-empty lines) of the first
    wrong line, or None for a fully correct response. See the module docstring
    for what counts as an error; a result equal to the number of response lines
    means the response stopped early (the missing line)."""
    return first_error_of_steps(response_lines(response_text), _reference_lines(reference_text))


def step_judge(problem, steps: Sequence[str], reference=None) -> Optional[int]:
    """The exact judge, in FunctionJudge's signature fn(problem, steps, reference).

    problem: a Problem, a chain prompt, or a dict with "prompt"; steps: the
    response's non-empty lines; reference: the worked solution (optional when
    the problem is a Problem or a parseable prompt). Returns the index of the
    first wrong step, or None when all steps (the answer line included) are
    right.

    A judge can only name a step the response has, so a response that stops
    early with every line right (the first error is the missing line at index
    len(steps), see `first_error`) is judged wrong at its last line,
    len(steps) - 1. This keeps stopping early from earning RTS 1: its RTS,
    (n - 1) / n, is below that of the same n lines followed by an early answer
    line, n / (n + 1). Zero steps give 0 (the judge layer itself gives a
    response without steps RTS 0 without calling this).
    """
    fe = first_error_of_steps(steps, _reference_lines(reference, problem))
    return fe if fe is None else min(fe, max(len(steps) - 1, 0))


def exact_judge(**kwargs):
    """The exact judge as a FunctionJudge over the response lines
    (FunctionJudge(step_judge, step_mode="line", **kwargs))."""
    from ..judge import FunctionJudge
    return FunctionJudge(step_judge, **{"step_mode": "line", **kwargs})


def correct_prefix(response_text: str, reference_text: Union[str, Problem]) -> float:
    """Share of the reference lines the response reproduces before its first
    error, in [0, 1] (1 for a correct response): the correct-prefix metric."""
    ref = _reference_lines(reference_text)
    fe = first_error_of_steps(response_lines(response_text), ref)
    return 1.0 if fe is None else min(fe, len(ref)) / len(ref)


# ----------------------------------------------------------------------
# answers
# ----------------------------------------------------------------------
def extract_answer(response_text: str) -> Optional[int]:
    """N when the response's last non-empty line is `#N` (N a plain decimal), else None."""
    lines = response_lines(response_text)
    if not lines or not lines[-1].startswith(ANSWER_PREFIX):
        return None
    body = lines[-1][len(ANSWER_PREFIX):]
    return int(body) if body.isdecimal() and body.isascii() else None


def _answer_of(answer) -> str:
    if isinstance(answer, Problem):
        return str(answer.answer)
    if isinstance(answer, dict):
        answer = answer["answer"]
    return str(answer).strip()


def verify(response_text: str, answer: Union[int, str, Problem, dict]) -> bool:
    """Exact answer check: the last non-empty line is `#<answer>` exactly
    (`#027` is not 27). Intermediate lines are not checked here (the judge
    checks them)."""
    lines = response_lines(response_text)
    return bool(lines) and lines[-1] == f"{ANSWER_PREFIX}{_answer_of(answer)}"


def premature_answer(response_text: str, problem: Union[Problem, int, str, dict]) -> bool:
    """Whether an answer line (`#...`) comes before the k operation lines a
    correct solution needs, whatever those lines say: the gaming pattern of
    partial credit (a few lines, then a guess). problem: a Problem, a chain
    prompt, a dict with "k" or "prompt", or k itself."""
    if isinstance(problem, bool):
        raise ValueError("problem: expected a Problem, a prompt, a dict or k")
    if isinstance(problem, int):
        k = problem
    elif isinstance(problem, dict) and "k" in problem:
        k = int(problem["k"])
    else:
        p = _as_problem(problem)
        if p is None:
            raise ValueError(f"problem: cannot tell k from {problem!r}")
        k = p.k
    for i, line in enumerate(response_lines(response_text)):
        if line.startswith(ANSWER_PREFIX):
            return i < k
    return False
