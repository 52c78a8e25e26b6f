"""The tables the demo prints: the comparison's (each arm at its rate) and the
sweep's (each arm at each rate). Summaries are keyed by (arm, lr) (stats.py)."""
from __future__ import annotations

from typing import Optional

from .runs import sweep_name
from .stats import RANKING


def comparison_table(summary: dict, start_accuracy: float, settings: dict) -> str:
    w = max(12, *(len(arm) for arm, _ in summary))
    has_reach = any("steps_to_reach" in v for v in summary.values())
    rows = [f"{'arm':{w}s} {'lr':>6s} {'held-out acc':>15s} {'to reach':>9s} {'train acc':>9s} {'all-neg':>7s} "
            f"{'credited':>8s} {'prefix':>6s} {'premature':>9s} {'length':>6s}",
            f"{'warm start':{w}s} {'':6s} {start_accuracy:15.3f}"]
    for (arm, lr), v in summary.items():
        reach = _reach_cell(v) if has_reach else "-"
        rows.append(f"{arm:{w}s} {lr:6.0e} {v['heldout_accuracy_mean']:7.3f} ± {v['heldout_accuracy_std']:.3f} {reach:>9s} "
                    f"{v['train_accuracy_last10']:9.3f} {v['all_negative_frac_last10']:7.2f} "
                    f"{v['credited_frac_last10']:8.2f} {v['correct_prefix_last10']:6.2f} "
                    f"{v['premature_answer_last10']:9.2f} {v['response_len_last10']:6.1f}")
    rows.append("mean |advantage|, credited groups / mixed groups: " + ", ".join(
        f"{arm} {v.get('adv_abs_credited_mean', float('nan')):.2f} / {v.get('adv_abs_mixed_mean', float('nan')):.2f}"
        for (arm, _), v in summary.items()))
    if has_reach:
        rows.append("steps to reach GRPO's final accuracy / GRPO's steps: " + ", ".join(
            f"{arm} {v['steps_to_reach_ratio']:.2f}x" if v.get("steps_to_reach_ratio") is not None else f"{arm} -"
            for (arm, _), v in summary.items()))
    st = settings
    rows.append(f"({st['seeds']} seed(s), {st['steps']} steps, k {st['ks'][0]}-{st['ks'][-1]}, held-out: "
                f"{st['eval_problems_per_k']} problems per k every {st['eval_every']} steps; 'to reach': mean "
                f"steps to GRPO's final held-out accuracy over the seeds that reached it; train columns: "
                f"mean of the last 10 steps)")
    return "\n".join(rows)


def compute_table(c: dict) -> str:
    """The arms at equal rollout compute (stats.equal_compute)."""
    w = max(12, *(len(a) for a in c["arms"]))
    rows = [f"at equal rollout compute: target {c['target_accuracy']:.3f} "
            f"({'the final accuracy of ' + c['baseline'] if c['baseline_moved'] else 'warm start + gain: ' + c['baseline'] + ' did not move'})",
            f"{'arm':{w}s} {'acc @ ' + _tokens(c['equal_budget_rollout_tokens']):>16s} {'rollout tok to target':>22s} "
            f"{'+ judge read':>13s} {'vs ' + c['baseline'] + ' run':>14s}"]
    for arm, v in c["arms"].items():
        ratio = v["tokens_ratio_vs_baseline"]
        rows.append(f"{arm:{w}s} {v['accuracy_at_equal_budget']:9.3f} ± {v['accuracy_at_equal_budget_std']:.3f} "
                    f"{_reach_tokens(v['rollout_tokens_to_reach']):>22s} "
                    f"{_reach_tokens(v['rollout_and_judge_tokens_to_reach']):>13s} "
                    f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>14s}")
    rows.append(f"(rule: {c['rule']}; 'acc @ N': held-out accuracy at the last evaluation within N rollout tokens, "
                "the cheapest arm's whole run; tokens: mean over the seeds that reached the target; 'vs "
                f"{c['baseline']} run': that mean over the {_tokens(c['baseline_rollout_tokens'])} rollout tokens of "
                f"{c['baseline']}'s whole run, - where a seed never reached it)")
    return "\n".join(rows)


def _tokens(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _reach_tokens(reach: list) -> str:
    got = [x for x in reach if x is not None]
    return f"{_tokens(sum(got) / len(got)) if got else '-'} ({len(got)}/{len(reach)})"


def _reach_cell(v: dict) -> str:
    """Mean steps to reach over the seeds that reached it, and how many did: "40 (2/3)"."""
    got = sum(x is not None for x in v["steps_to_reach"])
    mean = f"{v['steps_to_reach_mean']:.0f}" if got else "-"
    return f"{mean} ({got}/{len(v['steps_to_reach'])})"


def sweep_table(summary: dict, scores: dict, best: dict, start_accuracy: float, settings: dict) -> str:
    """Per arm and learning rate: the ranking score, where the run ended and
    whether it broke (held-out accuracy below the warm start's)."""
    w = max(len(sweep_name(key)) for key in summary)
    rows = [f"{'run':{w}s} {'rollout acc':>11s} {'held-out':>8s} {'premature':>9s} {'length':>6s} "
            f"{'|adv| credited/mixed':>20s}"]
    for key, v in summary.items():
        mark = "best" if best[key[0]] == key else "broke" if v["heldout_accuracy_mean"] < start_accuracy else ""
        adv = " / ".join(_or_dash(x) for x in (v["adv_abs_credited_mean"], v["adv_abs_mixed_mean"]))
        rows.append(f"{sweep_name(key):{w}s} {scores[key]:11.3f} {v['heldout_accuracy_mean']:8.3f} "
                    f"{v['premature_answer_last10']:9.2f} {v['response_len_last10']:6.1f} {adv:>20s}  {mark}")
    st = settings
    rows.append(f"(one seed, {st['steps']} steps, k {st['ks'][0]}-{st['ks'][-1]}; rollout acc: {RANKING}, "
                f"what ranks; held-out: {st['eval_problems_per_k']} problems per k at the end, warm start "
                f"{start_accuracy:.3f}; broke: ended below the warm start)")
    return "\n".join(rows)


def _or_dash(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"  # NaN: no credited group in the run


def print_results(table: str, path: str, plot: Optional[str]):
    print(table)
    print(f"results: {path}" + (f", plot: {plot}" if plot else ""))
