"""What the demo trains: the arms, their learning rates, the task regimes, the
settings every arm shares and the run profiles (`--quick`, default, `--full`).

An arm is one entry of ARMS: the training fields that set it apart, its
learning rate and its color in the plots. Everything else is BASE, so the arms
differ in what defines them and their rate only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Arm:
    settings: dict  # the TrainConfig fields that define the arm (applied after BASE and the overrides)
    lr: float  # its best of SWEEP_LRS in `sgpo demo --full --sweep` (docs/demo/sweep.json); `--lr X` overrides
    color: str  # the same arm, the same color, in every plot


# GRPO's learning rate: its best of SWEEP_LRS in `sgpo demo --full --sweep`
# (docs/demo/sweep.json), so SGPO is compared with a tuned GRPO. It is BASE's
# rate; each arm trains at its own (Arm.lr).
GRPO_LR = 3e-5
SWEEP_LRS = (1e-5, 3e-5, 1e-4, 3e-4)
# The guard's floor on a credited group's std. With beta 5, one step more of
# correct prefix in a 12-step chain raises the credit by about 0.1 near the
# middle: credits closer than one step's worth are not blown up to the unit
# scale of a right-vs-wrong group (whose std is at least 0.35 with 8 samples).
GUARD_FLOOR = 0.1
# Dynamic sampling's cap on prompt batches a step (verl's max_num_gen_batches): enough to fill a
# batch where one prompt in four is informative.
DS_BATCHES = 4
SCHEDULE_WARMUP = 10  # steps of linear warmup before the cosine decay (the -cosine arm)
ARMS = {
    "grpo": Arm(dict(scope="off"), GRPO_LR, "tab:gray"),
    "sgpo": Arm(dict(scope="all_negative"), 1e-4, "tab:blue"),
    "sgpo-prefix": Arm(dict(scope="all_negative", credit_assignment="prefix"), 1e-4, "tab:orange"),
    "sgpo-guard": Arm(dict(scope="all_negative", credited_std_floor=GUARD_FLOOR), 1e-4, "tab:cyan"),
    "sgpo-prefix-guard": Arm(dict(scope="all_negative", credit_assignment="prefix", credited_std_floor=GUARD_FLOOR),
                             1e-4, "tab:red"),
    # DAPO's dynamic sampling (train/sampling.py): what practitioners do with all-negative groups today.
    # Its rate: its best of 3e-5, 1e-4, 3e-4 in the sweep (docs/demo/sweep.json), ranked by the
    # accuracy of every drawn group.
    "grpo-ds": Arm(dict(scope="off", dynamic_sampling="filter", max_sample_batches=DS_BATCHES), 1e-4, "tab:green"),
    # A warmup and cosine decay (to 0.1 lr, config min_lr_ratio) at SGPO-prefix's rate: does a
    # falling rate steady the swings of the constant one between evaluations?
    "sgpo-prefix-cosine": Arm(dict(scope="all_negative", credit_assignment="prefix", lr_schedule="cosine",
                                   warmup_steps=SCHEDULE_WARMUP), 1e-4, "tab:brown"),
    "sgpo-prefix-ds": Arm(dict(scope="all_negative", credit_assignment="prefix", dynamic_sampling="filter",
                               max_sample_batches=DS_BATCHES), 1e-4, "tab:purple"),
}
DEMO_ARMS = ("grpo", "sgpo", "sgpo-prefix")  # what `sgpo demo` runs without --arms

# The task: the demo's chains (the warm start's hardest), or longer ones it has
# never seen (max_new_tokens: 9 per operation + 8, tasks/warmup.py).
REGIMES = {
    "default": {},
    "hard": dict(task_min_ops=13, task_max_ops=16, max_new_tokens=152),
}

# The shared training settings of every arm (docs/design.md section 6.8).
BASE = dict(task_min_ops=10, task_max_ops=12, prompts_per_step=16, num_samples=8, max_new_tokens=112,
            temperature=1.0, lr=GRPO_LR, lr_schedule="constant", max_grad_norm=1.0, loss_type="dapo",
            micro_batch_size=64, tensorboard=False, keep_checkpoints=1)
PROFILES = {
    "quick": dict(steps=4, seeds=1, eval_n=10, eval_every=2, base=dict(prompts_per_step=4, num_samples=4)),
    "default": dict(steps=24, seeds=3, eval_n=100, eval_every=8, base={}),
    "full": dict(steps=100, seeds=3, eval_n=300, eval_every=10, base={}),
}


def check_choices(arms: Optional[Sequence[str]], regime: str):
    """A clear error for an arm or a regime the demo does not have, before anything runs."""
    unknown = sorted(set(arms or ()) - set(ARMS))
    if unknown:
        raise ValueError(f"arms: unknown {', '.join(unknown)} (expected some of {', '.join(ARMS)})")
    if regime not in REGIMES:
        raise ValueError(f"regime: unknown {regime!r} (expected one of {', '.join(REGIMES)})")
