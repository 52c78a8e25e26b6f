"""The option sets of the ops and the trainer: the one place they are spelled.

The C++ boundary (csrc/options.h) parses the same strings into enums, and
tests/test_options.py checks that it accepts exactly these values, so adding a
value here without teaching the kernels (or the reverse) fails a test.
Everything else (ops.py, reference.py, the judge's rewards, the config)
imports from here.
"""
from __future__ import annotations

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


def check_choice(name: str, value, options: tuple) -> None:
    """ValueError naming `name` unless value is one of options."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
