"""Held-out evaluation: k samples per problem -> accuracy (mean@k), pass@k,
response length, truncation and the all-wrong rate, overall and per group.

The one evaluation path of the engine: the trainer's `eval_every` (built-in
task and dataset alike), `sgpo eval` (a model folder or an OpenAI-compatible
server) and the warm start's per-k accuracy all call `evaluate`.

    sample(examples, seeds, settings) -> per example, k Completions   (local_sampler, ServerSampler)
    evaluate(sample, examples, settings, verify, ...)       -> Evaluation(metrics, records)

Sharding: under torchrun each rank samples its contiguous share of the
problems (Dist.share) and the metrics are sums reduced over ranks. Problem
i samples from seed mix_seeds(settings.seed, i) whichever rank holds it, so
the reduced metrics equal one process's.

Metric names (prefix "eval/"; per group "eval/GROUP/..."):
  accuracy           mean over the k samples of every problem (mean@k; greedy: accuracy)
  pass@K             the unbiased estimator of Chen et al. 2021, for K = 2, 4, 8, ... and k
  no_correct_frac    problems with no correct sample: what the judge must rescue in training
  response_len_mean  tokens per sample; truncated_frac: samples that hit max_new_tokens
  problems           how many were evaluated
and the task's own per-sample metrics (the built-in task: correct_prefix, premature_answer).
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ..generation.rng import mix_seeds

PREFIX = "eval/"


@dataclass
class EvalSettings:
    """How a held-out problem is sampled. The names are the training config's
    (num_samples, temperature, ...): generation.generate_groups takes either."""
    num_samples: int = 1           # k samples per problem
    temperature: float = 0.0       # 0: greedy
    max_new_tokens: int = 256
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    stop: list = field(default_factory=list)
    chat_template: bool = False
    seed: int = 0                  # sample streams: problem i draws from mix_seeds(seed, i)
    batch_size: int = 64           # problems per generate call

    def validated(self, name: Callable[[str], str] = lambda f: f) -> "EvalSettings":
        for f in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{name(f)}: expected >= 1, got {getattr(self, f)}")
        if self.temperature < 0:
            raise ValueError(f"{name('temperature')}: expected >= 0, got {self.temperature}")
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(f"{name('num_samples')}: {self.num_samples} greedy samples are all the same; "
                             f"set {name('temperature')} > 0 for pass@k")
        return self


# ---------------------------------------------------------------------- pass@k
def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n, c of them
    correct, is correct) = 1 - C(n-c, k) / C(n, k): Chen et al. 2021's unbiased
    estimator, as a product so that large n does not overflow."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k: need 1 <= k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_ks(n: int) -> list[int]:
    """The K of the pass@K a k = n evaluation reports: 2, 4, 8, ... below n, and n."""
    ks, k = [], 2
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n > 1 else []


# ---------------------------------------------------------------------- problems
def fixed_subset(n_total: int, n: int, seed: int) -> list[int]:
    """The indices of a fixed, seeded subset of n of n_total problems, in file
    order (n = 0 or n >= n_total: all): the same at every evaluation and after a resume."""
    if not n or n >= n_total:
        return list(range(n_total))
    return sorted(random.Random(seed).sample(range(n_total), n))


@dataclass
class ProblemRecord:
    """One problem's samples and what the verifier said of each."""
    index: int
    group: Optional[str]
    texts: list[str]
    tokens: list[int]
    truncated: list[bool]
    correct: list[bool]
    extra: dict                     # the task's per-sample metrics, summed over the k samples

    def as_json(self, example) -> dict:
        return {"index": self.index, "group": self.group, "prompt": example.prompt, "answer": example.answer,
                "completions": self.texts, "tokens": self.tokens, "truncated": self.truncated,
                "correct": self.correct, "num_correct": sum(self.correct)}


@dataclass
class Evaluation:
    metrics: dict                   # "eval/..." -> value, over all ranks
    records: list                   # this rank's ProblemRecords


# ---------------------------------------------------------------------- evaluate
def evaluate(sample, examples: Sequence, settings: EvalSettings, verify: Callable,
             sample_metrics: Optional[Callable] = None, dist=None,
             log: Optional[Callable[[str], None]] = None) -> Evaluation:
    """Samples settings.num_samples completions of every example (this rank's
    share under torchrun) and scores them.

    sample: (examples, seeds, settings) -> per example, a list of Completions.
    verify: (text, answer) -> bool. sample_metrics: (text, example) -> {name: value},
    the task's own per-sample metrics (averaged over samples). An example's
    meta may name its "group" (the breakdown) and its own "max_new_tokens".
    log: called with a progress line after each batch."""
    share = dist.share(len(examples)) if dist is not None else range(len(examples))
    records, t0 = [], time.perf_counter()
    for batch in _batches(examples, share, settings.batch_size):
        todo = [examples[i] for i in batch]
        limit = todo[0].meta.get("max_new_tokens", settings.max_new_tokens)
        seeds = mix_seeds(settings.seed, torch.tensor(batch)).tolist()
        groups = sample(todo, seeds, dataclasses.replace(settings, max_new_tokens=limit))
        for i, ex, group in zip(batch, todo, groups):
            records.append(_score(i, ex, group, verify, sample_metrics))
        if log:
            log(f"eval: {len(records)}/{len(share)} problems ({time.perf_counter() - t0:.0f} s)")
    groups = sorted({g for g in (e.meta.get("group") for e in examples) if g is not None}, key=_natural)
    names = _extra_names(records, dist)
    sums = _sums(records, settings.num_samples, groups, names)
    if dist is not None:
        sums = dist.sum_named(sums)[0]
    return Evaluation(_metrics(sums, settings.num_samples, groups, names), records)


def _batches(examples, share: range, size: int) -> list[list[int]]:
    """This rank's problem indices in batches of at most `size`, each of one
    max_new_tokens (the built-in task's limit grows with k)."""
    by_limit: dict = {}
    for i in share:
        by_limit.setdefault(examples[i].meta.get("max_new_tokens"), []).append(i)
    return [idx[a:a + size] for idx in by_limit.values() for a in range(0, len(idx), size)]


def _score(index, example, group, verify, sample_metrics) -> ProblemRecord:
    extra: dict = {}
    for c in group:
        for name, v in (sample_metrics(c.text, example) if sample_metrics else {}).items():
            extra[name] = extra.get(name, 0.0) + float(v)
    return ProblemRecord(index, example.meta.get("group"), [c.text for c in group],
                         [len(c.token_ids) for c in group], [c.finish_reason == "length" for c in group],
                         [bool(verify(c.text, example.answer)) for c in group], extra)


def _extra_names(records, dist) -> list[str]:
    """The task's per-sample metric names: every rank the same (a rank with no problems has none)."""
    names = sorted({n for r in records for n in r.extra})
    if dist is not None and dist.world > 1:
        import torch.distributed as tdist
        everyone = [None] * dist.world
        tdist.all_gather_object(everyone, names)
        names = sorted({n for part in everyone for n in part})
    return names


def _sums(records, k: int, groups: list[str], extra: list[str]) -> dict[str, float]:
    """Named sums, overall ("") and per group, in a fixed order on every rank."""
    keys = ["problems", "samples", "correct", "no_correct", "tokens", "truncated",
            *(f"pass@{K}" for K in pass_ks(k)), *extra]
    sums = {f"{g}|{key}": 0.0 for g in ["", *groups] for key in keys}
    for r in records:
        n, c = len(r.correct), sum(r.correct)
        row = {"problems": 1, "samples": n, "correct": c, "no_correct": c == 0, "tokens": sum(r.tokens),
               "truncated": sum(r.truncated), **{f"pass@{K}": pass_at_k(n, c, K) for K in pass_ks(k) if K <= n},
               **r.extra}
        for g in ("", r.group) if r.group is not None else ("",):
            for key, v in row.items():
                sums[f"{g}|{key}"] += float(v)
    return sums


def _metrics(sums: dict, k: int, groups: list[str], extra: list[str]) -> dict[str, float]:
    out = {}
    for g in ["", *groups]:
        s = lambda key: sums[f"{g}|{key}"]
        problems, samples = s("problems"), s("samples")
        if not problems:
            continue
        at = PREFIX + (f"{g}/" if g else "")
        out[at + "accuracy"] = s("correct") / samples
        for K in pass_ks(k):
            out[at + f"pass@{K}"] = s(f"pass@{K}") / problems
        out[at + "no_correct_frac"] = s("no_correct") / problems
        out[at + "response_len_mean"] = s("tokens") / samples
        out[at + "truncated_frac"] = s("truncated") / samples
        for name in extra:
            out[at + name] = s(name) / samples
        out[at + "problems"] = int(problems)
    return out


def _natural(name: str):
    """k9 before k10."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1, name)

