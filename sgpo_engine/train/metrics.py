"""Per-step metrics: what they are (response_sums on each rank, then
step_metrics from the sums over ranks), and where they go: OUTPUT/metrics.jsonl
(one JSON object per step) and TensorBoard when it is installed; sample
completions: OUTPUT/completions.jsonl (what the policy wrote, what the
verifier and the judge said of it)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from ..model.files import json_lines

_SUMS = ("responses", "correct", "reward", "sgpo_reward", "all_negative", "all_negative_credited", "groups",
         "credited", "rts", "judged",
         "judge_failures", "response_tokens", "adv_abs_credited", "credited_group_responses", "adv_abs_mixed",
         "mixed_group_responses", "update_positions", "token_positions", "credit_fallbacks")


@dataclass
class Timings:
    """Seconds of one step on one rank."""
    rollout: float
    update: float
    step: float


def response_sums(groups, scored, batch) -> dict[str, float]:
    """This rank's sums of the step's per-response quantities (the same names on every rank,
    in the same order, so one all-reduce adds them). scored: the ScoredGroups of `groups`
    (None when this rank had no prompts); batch: its TrainBatch."""
    sums = dict.fromkeys(_SUMS, 0.0)
    flat = [c for g in groups for c in g]
    if flat:
        out, adv = scored.rewards, scored.advantages
        judged = ~torch.isnan(out.rts)
        sums.update(responses=float(len(flat)), correct=float(out.correct.sum()),
                    reward=float(out.rewards.sum()), sgpo_reward=float(adv.rewards.sum()),
                    all_negative=float(adv.all_negative.sum()), groups=float(len(groups)),
                    credited=float(scored.credited.sum()), rts=float(out.rts[judged].sum()),
                    judged=float(judged.sum()), judge_failures=float(out.failed),
                    response_tokens=float(sum(len(c.token_ids) for c in flat)))
        sums.update(advantage_scale_sums(scored))
        group_of = torch.repeat_interleave(torch.arange(len(scored.group_sizes)), scored.group_sizes)
        credited_groups = torch.zeros(len(scored.group_sizes), dtype=torch.bool)
        credited_groups[group_of[scored.credited]] = True
        sums["all_negative_credited"] = float((credited_groups & adv.all_negative.cpu()).sum())
    sums["update_positions"] = float(batch.positions)
    sums["token_positions"] = float(batch.token_positions)
    sums["credit_fallbacks"] = float(batch.credit_fallbacks)
    return sums


def advantage_scale_sums(scored) -> dict[str, float]:
    """The phantom-gradient gauge: sums of |advantage| over the responses of credited groups
    (some partial credit) and of mixed groups (correct and incorrect responses), and their counts."""
    sizes = scored.group_sizes                                              # [P]
    group_of = torch.repeat_interleave(torch.arange(len(sizes)), sizes)     # [N]
    in_credited = torch.zeros(len(sizes), dtype=torch.bool).index_put_((group_of[scored.credited],),
                                                                       torch.tensor(True))
    correct_count = torch.zeros(len(sizes)).index_add_(0, group_of, scored.rewards.correct.float())
    mixed = (correct_count > 0) & (correct_count < sizes)
    a = scored.advantages.advantages.abs()
    per = lambda flags: flags.repeat_interleave(sizes)
    return {"adv_abs_credited": float(a[per(in_credited)].sum()),
            "credited_group_responses": float(per(in_credited).sum()),
            "adv_abs_mixed": float(a[per(mixed)].sum()), "mixed_group_responses": float(per(mixed).sum())}


def step_metrics(step: int, g: dict[str, float], update, times: Timings, prefix_credit: bool) -> dict:
    """The step's metrics from the sums over ranks `g` (response_sums), the UpdateStats and the
    slowest rank's timings."""
    n = max(g["responses"], 1.0)
    m = {
        "step": step, "loss": update.loss,
        "reward_mean": g["reward"] / n, "sgpo_reward_mean": g["sgpo_reward"] / n, "accuracy": g["correct"] / n,
        "all_negative_frac": g["all_negative"] / max(g["groups"], 1.0), "credited_frac": g["credited"] / n,
        # the all-negative groups the judge gave some credit: where SGPO has signal and GRPO none
        "all_negative_credited_frac": g["all_negative_credited"] / g["all_negative"] if g["all_negative"] else float("nan"),
        "rts_mean": g["rts"] / g["judged"] if g["judged"] else float("nan"),
        "judge_failures": int(g["judge_failures"]),
        "clip_ratio_low": update.clip_ratio_low, "clip_ratio_high": update.clip_ratio_high,
        "kl_mean": update.kl_mean, "grad_norm": update.grad_norm,
        "lr": update.lr,
        **update.rollout_is,
        "response_len_mean": g["response_tokens"] / n,
        "train_tokens_per_s": g["update_positions"] / max(times.update, 1e-9),
        # what the update's layout cost: decoder positions, and the share of them spent beyond
        # computing each token once (padding, repeated prompts; train/batch.py)
        "update_positions": int(g["update_positions"]),
        "update_padding_frac": 1 - g["token_positions"] / g["update_positions"] if g["update_positions"] else 0.0,
        "step_seconds": times.step,
    }
    for kind in ("credited", "mixed"):  # the phantom-gradient gauge: |advantage| by kind of group
        count = g[f"{kind}_group_responses"]
        m[f"adv_abs_{kind}"] = g[f"adv_abs_{kind}"] / count if count else float("nan")
    if prefix_credit:  # judged responses whose steps did not map onto tokens
        m["credit_fallbacks"] = int(g["credit_fallbacks"])
    return m


TOTALS = ("rollout_tokens", "judge_calls", "judge_read_tokens", "update_positions")


def new_totals() -> dict[str, int]:
    return dict.fromkeys(TOTALS, 0)


def compute_metrics(drawn: dict[str, float], g: dict[str, float], batches: int, times: Timings,
                    totals: dict[str, int]) -> dict:
    """What the step cost, over all ranks, and since step 0 (`totals`, updated in place):
    rollout tokens generated (dynamic sampling's thrown-away batches included), judge calls
    and the tokens the judge read (sampling.draw_sums), decoder positions of the update;
    and dynamic sampling's count of batches and groups drawn and kept, with the rollout accuracy
    and all-negative fraction over every drawn group (`accuracy` and `all_negative_frac` are
    of the kept ones: the same without dynamic sampling)."""
    step = {"rollout_tokens": int(drawn["drawn_tokens"]), "judge_calls": int(drawn["judge_calls"]),
            "judge_read_tokens": int(drawn["judge_read_tokens"]), "update_positions": int(g["update_positions"])}
    for k, v in step.items():
        totals[k] += v
    return {"rollout_tokens": step["rollout_tokens"], "judge_calls": step["judge_calls"],
            "judge_read_tokens": step["judge_read_tokens"],
            **{f"{k}_total": v for k, v in totals.items()},
            "rollout_tokens_per_s": drawn["drawn_tokens"] / max(times.rollout, 1e-9),
            "sample_batches": batches, "groups_drawn": int(drawn["drawn_groups"]), "groups_kept": int(g["groups"]),
            "drawn_accuracy": drawn["drawn_correct"] / max(drawn["drawn_responses"], 1.0),
            "drawn_all_negative_frac": drawn["drawn_all_negative"] / max(drawn["drawn_groups"], 1.0)}


def progress_line(m: dict, max_steps: int) -> str:
    """One plain line of a step's metrics (or of an evaluation alone), for logs off a terminal."""
    parts = [f"step {m['step']}/{max_steps}"]
    if "loss" in m:
        parts += [f"{m['step_seconds']:.1f} s", f"reward {m['reward_mean']:.3f}", f"accuracy {m['accuracy']:.3f}",
                  f"all-negative {m['all_negative_frac']:.2f}", f"judge failures {m['judge_failures']}"]
    for key, label in (("eval/accuracy", "eval accuracy"), ("eval/no_correct_frac", "eval no-correct")):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts += [f"eval {k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("eval/pass@")]
    return " | ".join(parts)


class MetricsWriter:
    def __init__(self, output: str, tensorboard: bool = True, resume_step: int = 0):
        os.makedirs(output, exist_ok=True)
        self.path = os.path.join(output, "metrics.jsonl")
        _truncate_after(self.path, resume_step)  # a resumed run rewrites the steps it redoes
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(output, "tensorboard"))
            except Exception:  # tensorboard not installed: jsonl only
                self.tb = None

    def write(self, metrics: dict):
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k, v, metrics["step"])

    def close(self):
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class CompletionLog:
    """OUTPUT/completions.jsonl: per step, the first `per_step` completions of
    this rank, one JSON object each (TRL's log_completions, as a file)."""

    def __init__(self, output: str, per_step: int, resume_step: int = 0):
        self.path = os.path.join(output, "completions.jsonl")
        self.per_step = per_step
        _truncate_after(self.path, resume_step)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, step: int, examples, groups, rewards, advantages, tokenizer):
        """rewards: the SGPORewards of these groups; advantages [N], one per completion."""
        flat = [(ex, c) for ex, group in zip(examples, groups) for c in group][:self.per_step]
        rows = []
        for i, (ex, c) in enumerate(flat):  # completion i of the step: the rewards' index i too
            v = rewards.verdicts[i]
            rows.append({
                "step": step, "prompt": ex.prompt,
                "prompt_text": tokenizer.decode(c.prompt_ids, skip_special_tokens=False) if tokenizer else None,
                "completion": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids),
                "correct": bool(rewards.correct[i]), "reward": float(rewards.rewards[i]),
                "advantage": float(advantages[i]),
                "judge": None if v is None else {"first_error": v.first_error, "num_steps": v.num_steps,
                                                 "rts": None if v.failed else v.rts, "reason": v.reason}})
        for r in rows:
            self.file.write(json.dumps(r) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def _truncate_after(path: str, step: int):
    if not os.path.exists(path):
        return
    keep = [line if line.endswith("\n") else line + "\n"
            for line, row in json_lines(path) if row.get("step", 0) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)
