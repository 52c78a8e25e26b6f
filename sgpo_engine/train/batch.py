"""The training batch of one rank's update, and the two layouts the decoder can run it in.

    batch = train_batch(layout, completions, groups, advantages, reach, device=..., old_logp=..., server_logp=...)
    for rows in batch.micro_batches(micro_batch_size, micro_batch_tokens):
        hidden = batch.hidden(model, rows)          # [b, T, H]: what the fused loss reads

Position t of row i predicts token t + 1 of sequence i (its prompt and
completion): targets[i, t] is that token, mask[i, t] = 1 where it is a
completion token. Every per-token tensor of the batch is [N, T] in that
indexing, whatever the layout; the layout decides only how the decoder
computes the hidden states of a set of rows (`hidden`), how rows form
micro-batches, and so how many positions the decoder computes (`positions`).

- "padded" (TrainBatch): every row right-padded to the longest prompt +
  completion of the step, and each completion's prompt computed again with it:
  the decoder runs [b, T]. The reference layout.
- "packed" (PackedBatch, the default): each micro-batch is one row holding each
  group's prompt once and then its completions, unpadded (model/packed.py: a
  completion sees its prompt and itself, at generation's RoPE positions). For
  a group of G completions of lengths R_i after a prompt of P tokens the
  decoder computes P + sum_i (R_i - 1) positions instead of G * T. The hidden
  states are gathered back to [b, T, H] (zeros where the mask is 0), so the
  loss and every [N, T] tensor are the padded layout's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..credit import token_advantages
from ..model.packed import PackedAttention

@dataclass
class TrainBatch:
    """N sequences of one rank, per-token tensors [N, T]; the padded layout."""
    input_ids: torch.Tensor              # [N, T] int64: prompt + completion without its last token, padded
    targets: torch.Tensor                # [N, T] int64: the next token at each position
    mask: torch.Tensor                   # [N, T] float: 1 where the target is a completion token
    advantages: torch.Tensor             # [N] ("sequence" credit) or [N, T] ("prefix")
    old_logp: Optional[torch.Tensor]     # [N, T] the sampler's log-probs, or None: recompute them
    server_logp: Optional[torch.Tensor]  # [N, T] an external server's log-probs (IS correction), or None
    lengths: Sequence[tuple[int, int]] = ()  # [N] (prompt tokens P, completion tokens R) of each row
    prompt_of: Sequence[int] = ()        # [N] the first row of its group with the same prompt ids
    credit_fallbacks: int = 0            # judged responses whose steps did not map onto tokens

    @property
    def n(self) -> int:
        return self.input_ids.shape[0]

    @property
    def positions(self) -> int:
        """Token positions the decoder computes for this batch (forward and backward)."""
        return self.input_ids.numel()

    @property
    def token_positions(self) -> int:
        """The positions of each token once: every distinct prompt, then every completion
        (what the packed layout computes when no group is split)."""
        return self._cost(range(self.n))

    def _cost(self, rows) -> int:
        """Positions of one packed row holding `rows`: each distinct prompt once, then each completion."""
        prompts = {self.prompt_of[i] for i in rows}
        return sum(self.lengths[p][0] for p in prompts) + sum(self.lengths[i][1] - 1 for i in rows)

    def micro_batches(self, size: int, tokens: int) -> list[torch.Tensor]:
        """Row indices [b] of this rank's micro-batches: `size` rows at a time."""
        return [torch.arange(i, min(i + size, self.n)) for i in range(0, self.n, size)]

    def epoch_rows(self, rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """The rows micro-batch `rows` trains on in an epoch whose row order is `order` [N]."""
        return order[rows.to(order.device)]

    def hidden(self, model, rows: torch.Tensor) -> torch.Tensor:
        """Final hidden states [b, T, H] of rows [b] (model: the decoder, or its DDP/FSDP wrapper)."""
        return model(self.input_ids[rows])


@dataclass
class PackedBatch(TrainBatch):
    """The packed layout (module docstring): row i shares the prompt of row prompt_of[i]."""
    _computed: int = field(default=0, init=False, repr=False)  # positions of the last micro_batches split
    _ids: Optional[list] = field(default=None, init=False, repr=False)  # input_ids as lists, on the host

    @property
    def positions(self) -> int:
        return self._computed if self._computed else self.token_positions

    def micro_batches(self, size: int, tokens: int) -> list[torch.Tensor]:
        """Consecutive rows (a group's rows are consecutive) packed greedily while the packed
        row stays within `tokens` positions and `size` rows; a group splits only where it alone
        exceeds the budget, and each part then computes its prompt again. A row longer than
        the budget gets a micro-batch of its own."""
        micro, cur = [], []
        for i in range(self.n):
            if cur and (len(cur) >= size or self._cost(cur + [i]) > tokens):
                micro.append(cur)
                cur = []
            cur.append(i)
        if cur:
            micro.append(cur)
        self._computed = sum(self._cost(m) for m in micro)
        return [torch.tensor(m, dtype=torch.int64) for m in micro]

    def epoch_rows(self, rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        # Each epoch sums every micro-batch's gradient before its one optimizer step, so the
        # order changes round-off only; the rows stay with their prompts.
        return rows

    def hidden(self, model, rows: torch.Tensor) -> torch.Tensor:
        ids, positions, groups, seqs, where = self._pack(rows.tolist())
        device = self.input_ids.device
        decoder = getattr(model, "module", model)  # DDP wraps the decoder; FSDP2 shards it in place
        attention = PackedAttention(groups.to(device), seqs.to(device), positions.to(device),
                                    decoder.config.layer_sliding_window)
        out = model(ids.to(device)[None], positions.to(device)[None], attention)[0]    # [L, H]
        out = torch.cat([out, out.new_zeros(1, out.shape[1])])                         # [L + 1, H]: row L is zero
        return out[where.to(device)].view(len(rows), -1, out.shape[1])                 # [b, T, H]

    def _pack(self, rows: list[int]):
        """The packed row of `rows`: ids, positions, group and sequence of each token [L], and
        `where` [b * T]: the packed index of each (row, t) the loss reads, else L (the zero row)."""
        T = self.input_ids.shape[1]
        if self._ids is None:
            self._ids = self.input_ids.tolist()
        by_prompt: dict[int, list[int]] = {}
        for j, i in enumerate(rows):
            by_prompt.setdefault(self.prompt_of[i], []).append(j)
        ids, positions, groups, seqs = [], [], [], []
        where = torch.full((len(rows), T), -1, dtype=torch.int64)
        for g, (p_row, members) in enumerate(by_prompt.items()):
            P = self.lengths[p_row][0]
            prompt_start = len(ids)
            ids += self._ids[p_row][:P]
            positions += range(P)
            groups += [g] * P
            seqs += [-1] * P
            for j in members:
                i = rows[j]
                R = self.lengths[i][1]
                start = len(ids)
                ids += self._ids[i][P:P + R - 1]
                positions += range(P, P + R - 1)
                groups += [g] * (R - 1)
                seqs += [j] * (R - 1)
                where[j, P - 1] = prompt_start + P - 1        # the last prompt token predicts the first one
                where[j, P:P + R - 1] = torch.arange(start, start + R - 1)
        L = len(ids)
        where[where < 0] = L
        return (torch.tensor(ids, dtype=torch.int64), torch.tensor(positions), torch.tensor(groups),
                torch.tensor(seqs), where.flatten())


def train_batch(layout: str, completions: Sequence, groups: Sequence[int], advantages: torch.Tensor,
                reach: Optional[Sequence[int]], *, device, old_logp: bool, server_logp: bool) -> TrainBatch:
    """completions [N] (Completion: prompt_ids, token_ids, logprobs, server_logprobs; non-empty),
    groups [N] (the prompt group of each, consecutive), advantages [N], reach [N] (prefix
    credit: the leading completion tokens each advantage reaches) or None -> the batch in
    `layout` ("packed" or "padded") on `device`. old_logp / server_logp: take the completions'
    sampler / server log-probs."""
    batch = padded_batch(completions, advantages, reach, device=device, old_logp=old_logp, server_logp=server_logp)
    first: dict = {}  # (group, prompt ids) -> its first row
    batch.prompt_of = [first.setdefault((g, tuple(c.prompt_ids)), i)
                       for i, (g, c) in enumerate(zip(groups, completions))]
    if layout == "padded":
        return batch
    return PackedBatch(**{k: getattr(batch, k) for k in TrainBatch.__dataclass_fields__})


def padded_batch(completions: Sequence, advantages: torch.Tensor, reach: Optional[Sequence[int]], *,
                 device, old_logp: bool, server_logp: bool) -> TrainBatch:
    """completions [N] -> a right-padded TrainBatch on `device` (see train_batch)."""
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
                      server.to(device) if server_logp else None,
                      lengths=[(len(p), len(t)) for p, t in seqs])
