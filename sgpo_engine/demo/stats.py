"""The numbers the demo reports, from its runs: {(arm, lr): {seed: record}}
(runs.py). A summary per run (held-out accuracy over seeds, the training
curves' last steps, the phantom-gradient gauge, steps to reach a baseline's
final accuracy) and the sweep's ranking of each arm's learning rates.
"""
from __future__ import annotations

import statistics
from typing import Optional

SWEEP_TAIL = 20  # steps of rollout accuracy the sweep ranks by
RANKING = f"rollout accuracy, mean of the last {SWEEP_TAIL} steps"  # what the sweep ranks by, in words


def mean_accuracy(ev: dict) -> float:
    """The mean over k of a held-out evaluation's accuracy ({"k10": {"accuracy": ...}, ...})."""
    return sum(v["accuracy"] for v in ev.values()) / len(ev)


def mean_std(xs) -> tuple:
    """Mean and std over the values that are there (None: missing); NaN, NaN for none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def curve_mean(by_seed: dict, curve: str) -> float:
    """Mean of a per-step curve over every step and seed that has a value (None, NaN: none)."""
    xs = [x for r in by_seed.values() for x in r["steps"].get(curve, []) if x is not None and x == x]
    return statistics.fmean(xs) if xs else float("nan")


def last10_mean(by_seed: dict, curve: str) -> float:
    """A curve's mean over its last 10 steps, averaged over the seeds (where the run ended up)."""
    per_seed = [statistics.fmean([x for x in r["steps"][curve][-10:] if x is not None] or [float("nan")])
                for r in by_seed.values()]
    return mean_std(per_seed)[0]


def steps_to_reach(curve: list, target: float) -> Optional[int]:
    """The first evaluated step whose held-out accuracy is >= target (None: never)."""
    return next((step for step, acc in curve if acc >= target - 1e-9), None)


def summarize(runs: dict, baseline: Optional[tuple]) -> dict:
    """Per run: held-out accuracy at the end (mean, std over seeds), the
    training curves' last 10 steps, and, given a baseline run, the steps each
    seed took to reach the baseline's final held-out accuracy (its mean over seeds)."""
    target = baseline_steps = None
    if baseline in runs:
        target = statistics.fmean(r["heldout_end_accuracy"] for r in runs[baseline].values())
        baseline_steps = len(next(iter(runs[baseline].values()))["steps"]["accuracy"])
    out = {}
    for key, by_seed in runs.items():
        acc, acc_sd = mean_std([r["heldout_end_accuracy"] for r in by_seed.values()])
        out[key] = {"heldout_accuracy_mean": acc, "heldout_accuracy_std": acc_sd,
                    "train_accuracy_last10": last10_mean(by_seed, "accuracy"),
                    "all_negative_frac_last10": last10_mean(by_seed, "all_negative_frac"),
                    "credited_frac_last10": last10_mean(by_seed, "credited_frac"),
                    "correct_prefix_last10": last10_mean(by_seed, "correct_prefix_frac"),
                    "premature_answer_last10": last10_mean(by_seed, "premature_answer_frac"),
                    "response_len_last10": last10_mean(by_seed, "response_len_mean"),
                    # the phantom-gradient gauge: mean |advantage| in credited vs mixed groups, all steps
                    "adv_abs_credited_mean": curve_mean(by_seed, "adv_abs_credited"),
                    "adv_abs_mixed_mean": curve_mean(by_seed, "adv_abs_mixed")}
        if target is not None:
            out[key].update(_reach(by_seed, target, baseline_steps))
    return out


def _reach(by_seed: dict, target: float, baseline_steps: int) -> dict:
    """Steps to reach `target` per seed, their mean, and that mean as a share of
    the baseline's whole run (its final accuracy is the target); a seed that
    never reached it leaves the ratio undefined rather than flattering."""
    reach = [steps_to_reach(r["heldout"], target) for r in by_seed.values()]
    got = [x for x in reach if x is not None]
    return dict(target_accuracy=target, steps_to_reach=reach,
                steps_to_reach_mean=statistics.fmean(got) if got else None,
                steps_to_reach_ratio=statistics.fmean(got) / baseline_steps if got and len(got) == len(reach)
                else None)


def rollout_scores(runs: dict) -> dict:
    """What the sweep ranks by: each run's mean rollout accuracy over its last
    SWEEP_TAIL steps (training prompts: the held-out set stays out of the choice), over
    every drawn group (drawn_accuracy): with dynamic sampling the kept groups' accuracy
    excludes the all-right and all-wrong ones. Records older than that curve have no
    dynamic sampling, where the two are the same."""
    def score(r):
        curve = drawn_curve(r, "drawn_accuracy") or r["steps"]["accuracy"]
        return statistics.fmean(x for x in curve[-SWEEP_TAIL:] if x is not None)
    return {key: statistics.fmean(score(r) for r in by_seed.values()) for key, by_seed in runs.items()}


def best_rates(scores: dict) -> dict:
    """Each arm's best run by score, {arm: (arm, lr)}; of equal scores the first."""
    best: dict = {}
    for key, score in scores.items():
        arm = key[0]
        if arm not in best or score > scores[best[arm]]:
            best[arm] = key
    return best


# ---------------------------------------------------------------------- at equal compute
BASELINES = ("grpo", "grpo-ds")  # what SGPO is measured against: plain GRPO, and GRPO + dynamic sampling
CLEAR_MARGIN = 0.05              # a baseline that ends less than this above the warm start "did not move"
FIXED_TARGET_GAIN = 0.1          # ...and then the target is the warm start + this
TARGET_RULE = (f"the target is the final held-out accuracy of the stronger baseline ({' or '.join(BASELINES)}) "
               f"when it ends at least {CLEAR_MARGIN} above the warm start; else the warm start + "
               f"{FIXED_TARGET_GAIN} (a baseline that never moves would make 'tokens to reach it' measure noise)")


# The drawn-group curves of records older than them: without dynamic sampling every drawn group was kept.
OLDER_CURVE = {"drawn_accuracy": "accuracy", "drawn_all_negative_frac": "all_negative_frac"}


def drawn_curve(record: dict, curve: str) -> Optional[list]:
    """A record's drawn-group curve (OLDER_CURVE's names): the recorded one, or for an older
    record of one prompt batch a step its kept-group curve, which is the same; None for an
    older dynamic-sampling record (it kept only some of the groups it drew)."""
    steps = record["steps"]
    if steps.get(curve):
        return steps[curve]
    one_batch = all(b in (None, 1) for b in steps.get("sample_batches") or [])
    return steps[OLDER_CURVE[curve]] if one_batch else None


def with_compute_curves(record: dict, responses_per_step: int, judge_free: bool) -> dict:
    """A record with the cumulative rollout-token curve, made from its mean response length
    where it has none (written before the curve existed, by a run without dynamic sampling:
    each response generated once, one prompt batch a step); judge_free (an arm that never
    asks the judge, scope "off"): its judge-token curve is zeros where it has none."""
    steps = dict(record["steps"])
    n = len(steps["response_len_mean"])
    if "rollout_tokens_total" not in steps:
        total, steps["rollout_tokens_total"] = 0.0, []
        for length in steps["response_len_mean"]:
            total += (length or 0.0) * responses_per_step
            steps["rollout_tokens_total"].append(round(total))
    steps.setdefault("sample_batches", [1] * n)
    if judge_free and not steps.get("judge_read_tokens_total"):
        steps["judge_read_tokens_total"] = [0] * n
    return {**record, "steps": steps}


def tokens_at(record: dict, step: int, curve: str = "rollout_tokens_total") -> Optional[float]:
    """A run's cumulative tokens after `step` steps (0 at step 0; None: the run has no such curve)."""
    if step == 0:
        return 0.0
    values = record["steps"].get(curve)
    return None if not values or values[step - 1] is None else float(values[step - 1])


def tokens_to_reach(record: dict, target: float, curve: str = "rollout_tokens_total") -> Optional[float]:
    """The cumulative tokens at the first evaluation whose held-out accuracy is >= target (None: never)."""
    step = steps_to_reach(record["heldout"], target)
    return None if step is None else tokens_at(record, step, curve)


def accuracy_at_budget(record: dict, budget: float) -> float:
    """Held-out accuracy at the last evaluation the run reached within `budget` rollout tokens."""
    within = [acc for step, acc in record["heldout"] if tokens_at(record, step) <= budget + 1e-9]
    return within[-1]


def equal_compute(runs: dict, start_accuracy: float) -> dict:
    """The arms at equal rollout compute: the target (TARGET_RULE), each arm's rollout tokens
    (and rollout + judge-read tokens) to reach it per seed, their mean as a share of the
    rollout tokens of the baseline's whole run (with which it reached its final accuracy; a
    seed that never reached the target leaves the share undefined), and every arm's held-out
    accuracy at the budget the cheapest arm spent."""
    by_arm = {key[0]: by_seed for key, by_seed in runs.items()}
    present = [b for b in BASELINES if b in by_arm]
    if not present:
        return {}
    finals = {b: statistics.fmean(r["heldout_end_accuracy"] for r in by_arm[b].values()) for b in present}
    baseline = max(present, key=lambda b: finals[b])
    moved = finals[baseline] >= start_accuracy + CLEAR_MARGIN
    target = finals[baseline] if moved else start_accuracy + FIXED_TARGET_GAIN
    budget = min(tokens_at(r, len(r["steps"]["accuracy"])) for by_seed in by_arm.values() for r in by_seed.values())
    out = {"rule": TARGET_RULE, "baseline": baseline, "baseline_moved": moved, "target_accuracy": target,
           "equal_budget_rollout_tokens": budget, "arms": {}}
    for arm, by_seed in by_arm.items():
        reach = [tokens_to_reach(r, target) for r in by_seed.values()]
        judge = [tokens_to_reach(r, target, "judge_read_tokens_total") for r in by_seed.values()]
        with_judge = [None if t is None or j is None else t + j for t, j in zip(reach, judge)]
        acc, sd = mean_std([accuracy_at_budget(r, budget) for r in by_seed.values()])
        out["arms"][arm] = {"rollout_tokens_to_reach": reach, "rollout_and_judge_tokens_to_reach": with_judge,
                            "accuracy_at_equal_budget": acc, "accuracy_at_equal_budget_std": sd,
                            "final_accuracy_ratio": (statistics.fmean(r["heldout_end_accuracy"] for r in
                                                                      by_seed.values()) / finals[baseline]
                                                     if finals[baseline] else None)}
    # the baseline reached its final accuracy with its whole run: what the others are measured by
    base_total = statistics.fmean(tokens_at(r, len(r["steps"]["accuracy"])) for r in by_arm[baseline].values())
    out["baseline_rollout_tokens"] = base_total
    for arm, v in out["arms"].items():
        got = v["rollout_tokens_to_reach"]
        v["tokens_ratio_vs_baseline"] = statistics.fmean(got) / base_total if None not in got else None
    return out
