"""Step-level credit (docs/design.md 1.6) on TRL's batch layout.

    advantages_bt = prefix_advantages(advantages, scores, completion_ids, completion_mask, tokenizer, step_mode)

TRL's completions are right-padded [B, T] from their first token, so the
judged reach of response i (credit.prefix_reach) starts at position 0.
"""
from __future__ import annotations

import torch

from ...credit import prefix_reach, token_advantages


class _Completion:  # what prefix_reach reads of a completion
    def __init__(self, token_ids: list, text: str):
        self.token_ids, self.text = token_ids, text


def prefix_advantages(advantages: torch.Tensor, scores, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, tokenizer, step_mode) -> torch.Tensor:
    """advantages [B] -> [B, T], each judged response's advantage reaching only the tokens before
    its first wrong step (positive) or through it (negative); the others keep it on every
    token. scores: the SGPOScores of these completions (texts, verdicts); completion_ids,
    completion_mask [B, T]; tokenizer: sgpo_engine's Tokenizer."""
    B, T = completion_ids.shape
    if len(scores.verdicts) != B:
        raise ValueError(f"advantages: {B} completions, but the SGPOReward scored {len(scores.verdicts)}")
    lengths = completion_mask.sum(dim=1).tolist()
    completions = [_Completion(completion_ids[i, :int(n)].tolist(), text)
                   for i, (n, text) in enumerate(zip(lengths, scores.texts))]
    reach, _ = prefix_reach(completions, scores.verdicts, [v is not None for v in scores.verdicts],
                            advantages.tolist(), tokenizer, step_mode)
    starts = torch.zeros(B, dtype=torch.long, device=advantages.device)
    return token_advantages(advantages, torch.tensor(reach, device=advantages.device), starts, T)
