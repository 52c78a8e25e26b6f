"""The option sets of the ops and the trainer, and the SGPO credit's settings
with their defaults (`CreditConfig`): the one place each is spelled.

The C++ boundary (csrc/options.h) parses the same strings into enums, and
tests/test_options.py checks that it accepts exactly these values, so adding a
value here without teaching the kernels (or the reverse) fails a test.
Everything else (ops.py, reference.py, the judge's rewards, the config,
the TRL and verl adapters) imports from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

# ---- group_advantages (docs/design.md, "The algorithm")
SCOPES = ("all_negative", "all_incorrect", "off")  # which incorrect responses earn credit
CREDITS = ("sigmoid", "linear")                    # RTS -> partial reward
SCALES = ("group", "batch", "none")                # advantage denominator: group std, batch std, 1

# ---- fused_policy_loss
# the aggregation of per-token losses; cispo (aggregated as dapo) and sapo (as
# grpo) also have their own per-token surrogate, as in TRL
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "cispo", "sapo")
IS_LEVELS = ("token", "sequence")                  # importance ratio per token or per sequence (GSPO)

# ---- trainer only (the ops never see these)
CREDIT_ASSIGNMENTS = ("sequence", "prefix")        # one advantage per response, or per judged step
ROLLOUT_IS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none")  # TRL's modes
UPDATE_LAYOUTS = ("packed", "padded")              # how the update runs the decoder (train/batch.py)


def check_choice(name: str, value, options: tuple) -> None:
    """ValueError naming `name` unless value is one of options."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")


@dataclass(frozen=True)
class CreditConfig:
    """How SGPO turns outcomes and verdicts into advantages (docs/design.md section 1).

    The defaults are published SGPO. `ops.group_advantages`, `sgpo_engine.credit`,
    TRL's SGPOReward, verl's `algorithm.sgpo` and TrainConfig all take their
    defaults from here. `credit_beta` is the sigmoid's sharpness: `beta` alone
    always means the KL weight of the loss, as in TRL.
    """
    scope: str = "all_negative"          # which incorrect responses earn credit (SCOPES)
    credit: str = "sigmoid"              # sigmoid(credit_beta * (rts - credit_gamma)) | linear: credit_scale * rts
    credit_beta: float = 5.0
    credit_gamma: float = 0.5
    credit_scale: float = 0.5
    scale: str = "group"                 # what advantages are divided by (SCALES)
    eps: float = 1e-4
    credited_std_floor: float = 0.0      # scale "group": a credited group divides by at least this std (0: off)
    correct_reward: float = 1.0          # the outcome rewards
    incorrect_reward: float = 0.0
    credit_assignment: str = "sequence"  # one advantage per response | prefix: per judged step (CREDIT_ASSIGNMENTS)

    def validated(self, name: Callable[[str], str] = str) -> "CreditConfig":
        """self, or ValueError naming the bad field as `name(field)` ("config field 'scope'",
        "algorithm.sgpo.scope", ...)."""
        for f, allowed in (("scope", SCOPES), ("credit", CREDITS), ("scale", SCALES),
                           ("credit_assignment", CREDIT_ASSIGNMENTS)):
            check_choice(name(f), getattr(self, f), allowed)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{name(f.name)}: expected a finite number, got {v!r}")
        for f in ("eps", "credited_std_floor"):
            if getattr(self, f) < 0:
                raise ValueError(f"{name(f)}: expected >= 0, got {getattr(self, f)}")
        return self


CREDIT = CreditConfig()  # the defaults
