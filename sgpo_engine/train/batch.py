"""The training batch of one rank's update, and the layout that builds it.

    batch = padded_batch(completions, advantages, reach, device=..., old_logp=True, server_logp=False)
    hidden = batch.hidden(model, rows)             # [b, T, H]: what the fused loss reads

Position t of row i predicts token t + 1 of sequence i (its prompt and
completion): targets[i, t] is that token, mask[i, t] = 1 where it is a
completion token. Every per-token tensor of the batch is [N, T] in that
indexing, whatever the layout; the layout decides only how the decoder
computes the hidden states of a set of rows (`hidden`). The padded layout
right-pads every row to the longest prompt + completion of the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..credit import token_advantages


@dataclass
class TrainBatch:
    """N sequences of one rank, per-token tensors [N, T]."""
    input_ids: torch.Tensor              # [N, T] int64: prompt + completion without its last token, padded
    targets: torch.Tensor                # [N, T] int64: the next token at each position
    mask: torch.Tensor                   # [N, T] float: 1 where the target is a completion token
    advantages: torch.Tensor             # [N] ("sequence" credit) or [N, T] ("prefix")
    old_logp: Optional[torch.Tensor]     # [N, T] the sampler's log-probs, or None: recompute them
    server_logp: Optional[torch.Tensor]  # [N, T] an external server's log-probs (IS correction), or None
    credit_fallbacks: int = 0            # judged responses whose steps did not map onto tokens

    @property
    def n(self) -> int:
        return self.input_ids.shape[0]

    @property
    def positions(self) -> int:
        """Token positions the decoder computes for this batch (forward and backward)."""
        return self.input_ids.numel()

    def hidden(self, model, rows: torch.Tensor) -> torch.Tensor:
        """Final hidden states [b, T, H] of rows [b] (model: the decoder, or its DDP/FSDP wrapper)."""
        return model(self.input_ids[rows])


def padded_batch(completions: Sequence, advantages: torch.Tensor, reach: Optional[Sequence[int]], *,
                 device, old_logp: bool, server_logp: bool) -> TrainBatch:
    """completions [N] (Completion: prompt_ids, token_ids, logprobs, server_logprobs; non-empty),
    advantages [N], reach [N] (prefix credit: the leading completion tokens each advantage
    reaches) or None -> a right-padded TrainBatch on `device`. old_logp / server_logp: take
    the completions' sampler / server log-probs."""
    seqs = [(c.prompt_ids, c.token_ids) for c in completions]
    N = len(seqs)
    T = max((len(p) + len(t) - 1 for p, t in seqs), default=1)
    input_ids = torch.zeros(N, T, dtype=torch.int64)
    targets = torch.zeros(N, T, dtype=torch.int64)
    mask = torch.zeros(N, T)
    old = torch.zeros(N, T)
    server = torch.zeros(N, T)
    for i, ((p, t), c) in enumerate(zip(seqs, completions)):
        ids = p + t
        L = len(ids) - 1
        input_ids[i, :L] = torch.tensor(ids[:-1])
        targets[i, :L] = torch.tensor(ids[1:])
        mask[i, len(p) - 1:L] = 1.0  # positions whose target is a completion token
        if old_logp:
            old[i, len(p) - 1:L] = torch.tensor(c.logprobs, dtype=torch.float32)
        if server_logp:
            server[i, len(p) - 1:L] = torch.tensor(c.server_logprobs, dtype=torch.float32)
    if reach is not None and N:
        starts = torch.tensor([len(p) - 1 for p, _ in seqs])  # where each completion's first token is predicted
        advantages = token_advantages(advantages, torch.tensor(reach), starts, T)
    return TrainBatch(input_ids.to(device), targets.to(device), mask.to(device),
                      advantages.to(device, torch.float32), old.to(device) if old_logp else None,
                      server.to(device) if server_logp else None)
