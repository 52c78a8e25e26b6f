"""SGPO inside TRL's GRPOTrainer: the rewards, step-level credit, and the fused loss.

    from sgpo_engine.integrations.trl import SGPOGRPOTrainer, SGPOReward
    reward = SGPOReward(HTTPJudge(url, model))                 # any sgpo_engine judge
    trainer = SGPOGRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(scale_rewards="group", ...),
                              train_dataset=...)              # rows with "prompt" and "answer"

    reward.py    SGPOReward (works with TRL's own GRPOTrainer too), SGPOScores
    credit.py    prefix_advantages: [B] advantages -> step-level [B, T]
    trainer.py   SGPOGRPOTrainer: GRPOTrainer with ops.fused_policy_loss as its loss

This package imports trl only when SGPOGRPOTrainer is asked for (PEP 562).
"""
from .credit import prefix_advantages
from .reward import SGPOReward, SGPOScores, completion_text, group_offsets

__all__ = ["SGPOReward", "SGPOScores", "SGPOGRPOTrainer", "completion_text", "group_offsets", "prefix_advantages"]


def __getattr__(name):  # SGPOGRPOTrainer subclasses trl's trainer, so trl loads on first use
    if name == "SGPOGRPOTrainer":
        from .trainer import SGPOGRPOTrainer
        return SGPOGRPOTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
