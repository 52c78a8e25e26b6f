"""The policy update of one training step: a function of the policy, the batch and the config.

    stats = update(policy, batch, cfg, optim, parallel, step, reference=None)

    micro-batches: batch.micro_batches (the layout's: rows, or packed to a token budget)
    if needed: old_logp / ref_logp [N, T] by score_logprobs, micro-batch by micro-batch
    server rollouts: advantages x truncated IS weights (rollout_is), before the epochs
    for epoch in range(mu):                       (order: seeded by (seed, step, epoch))
      for each micro-batch of rows:
        hidden = batch.hidden(model, rows)                        [b, T, H]
        loss = ops.fused_policy_loss(hidden, lm_head_weight [V, H], targets, mask, advantages, ...)
        (loss * share * world).backward()                          gradient sync on the last only
      clip_grad_norm(max_grad_norm; 0 = no clipping); optimizer step
    scheduler step (once per training step, updates or not)

Exact gradient accumulation: token-normalized losses (dapo, bnpo, cispo) divide
by the global count of completion tokens, the others scale each micro-batch by
its share of the global sequence count; x world undoes DDP's averaging. So the
micro-batch losses sum to the full batch's, on any number of ranks.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .. import ops
from ..generation.rng import mix_seeds
from .batch import TrainBatch
from .rollout import rollout_is_weights

_POS = (1 << 63) - 1  # generator seeds must be non-negative
TOKEN_NORMALIZED = ("dapo", "bnpo", "cispo")  # divided by the global completion-token count


@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


@dataclass
class UpdateStats:
    """What the update reports (global over ranks)."""
    lr: float                        # the learning rate this update used
    loss: float = 0.0
    clip_ratio_low: float = 0.0
    clip_ratio_high: float = 0.0
    kl_mean: float = float("nan")    # NaN without a reference model
    grad_norm: float = 0.0
    rollout_is: dict = field(default_factory=dict)  # server rollouts: is_ratio_mean/min/max, is_capped_frac


@torch.no_grad()
def score_logprobs(policy, batch: TrainBatch, micro: list, temperature: float) -> torch.Tensor:
    """log-probs [N, T] of the batch's targets under `policy` at the sampling temperature,
    micro-batch by micro-batch in the batch's layout (an empty entry runs an empty forward:
    under FSDP the other ranks' all-gathers need it)."""
    out = torch.zeros_like(batch.mask)
    for idx in micro:
        if idx is None:
            empty = torch.zeros(1, 1, dtype=torch.int64, device=batch.mask.device)
            ops.fused_logprobs(policy.hidden_states(empty), policy.lm_head_weight, empty, temperature=temperature)
            continue
        idx = idx.to(out.device)
        hidden = batch.hidden(policy.decoder, idx)                                    # [b, T, H]
        out[idx] = ops.fused_logprobs(hidden, policy.lm_head_weight, batch.targets[idx], temperature=temperature)
    return out


def apply_rollout_is(batch: TrainBatch, cfg, dist) -> dict:
    """Scales batch.advantages by the truncated importance weights (rollout_is) of the old policy
    against the server's log-probs; returns the raw ratios' global mean, min and max over
    completion tokens, and the share capped."""
    mask = batch.mask
    w, ratio = rollout_is_weights(batch.old_logp, batch.server_logp, mask, cfg.rollout_is, cfg.rollout_is_cap)
    adv = batch.advantages
    batch.advantages = (adv[:, None] if adv.dim() == 1 else adv) * w
    on = mask > 0
    r = ratio[on].double()
    total, count, capped = dist.sum([float(r.sum()), float(on.sum()), float((r > cfg.rollout_is_cap).sum())])
    lo_hi = dist.all_gather_floats([float(r.min()) if r.numel() else math.inf,
                                    float(r.max()) if r.numel() else -math.inf])
    return {"is_ratio_mean": total / max(count, 1.0), "is_ratio_min": min(lo_hi[0::2]),
            "is_ratio_max": max(lo_hi[1::2]), "is_capped_frac": capped / max(count, 1.0)}


def _epoch_order(cfg, step: int, epoch: int, n: int, device) -> torch.Tensor:
    """The epoch's row order, a pure function of (seed, step, epoch): resume retraces it."""
    gen = torch.Generator().manual_seed(int(mix_seeds(mix_seeds(cfg.seed, step), 1000 + epoch)) & _POS)
    return torch.randperm(n, generator=gen).to(device)


def update(policy, batch: TrainBatch, cfg, optim: Optim, parallel, step: int, reference=None) -> UpdateStats:
    """mu epochs of micro-batched fused-loss updates on `batch` (module docstring). `step` is
    the training step (0-based) this update belongs to; `reference` the KL term's model."""
    dist = parallel.dist
    n = batch.n
    n_global, tok_global = dist.sum([float(n), float(batch.mask.sum())])
    stats = UpdateStats(lr=optim.scheduler.get_last_lr()[0])
    if n_global == 0:  # nothing to learn from (all groups filtered)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
            warnings.simplefilter("ignore", UserWarning)
            optim.scheduler.step()  # the schedule follows the step count, updates or not
        return stats
    parallel.model.train()
    micro = parallel.micro_batches(batch.micro_batches(cfg.micro_batch_size, cfg.micro_batch_tokens))
    # external rollouts or recompute_old_logp: the rollout policy's log-probs, now, before any step
    if parallel.forwards_agree(batch.old_logp is None):
        old = score_logprobs(policy, batch, micro, cfg.temperature)
        batch.old_logp = old if batch.old_logp is None else batch.old_logp
    if dist.all(batch.server_logp is not None):  # an external server sampled: correct toward the old policy
        stats.rollout_is = apply_rollout_is(batch, cfg, dist)
    ref_logp = score_logprobs(reference, batch, micro, cfg.temperature) if reference is not None else None
    token_norm = cfg.loss_type in TOKEN_NORMALIZED
    loss_type = "dapo" if cfg.loss_type in ("dapo", "bnpo") else cfg.loss_type
    sums = dict(loss=0.0, clip_ratio_low=0.0, clip_ratio_high=0.0, kl_mean=0.0)
    for epoch in range(cfg.mu):
        order = _epoch_order(cfg, step, epoch, n, batch.mask.device)
        optim.optimizer.zero_grad(set_to_none=True)
        for j, idx in enumerate(micro):
            with parallel.backward(last=j == len(micro) - 1):
                if idx is None:  # an empty micro-batch: this rank joins the others' collectives
                    parallel.empty_backward()
                    continue
                rows = batch.epoch_rows(idx, order)
                hidden = batch.hidden(parallel.model, rows)                               # [b, T, H]
                loss, met = ops.fused_policy_loss(
                    hidden, parallel.lm_head_weight(policy), batch.targets[rows], batch.mask[rows],
                    batch.advantages[rows], old_logp=batch.old_logp[rows],
                    ref_logp=None if ref_logp is None else ref_logp[rows], beta=cfg.beta,
                    eps_low=cfg.eps_low, eps_high=cfg.eps_high, delta=cfg.delta,
                    sapo_temperature_pos=cfg.sapo_temperature_pos, sapo_temperature_neg=cfg.sapo_temperature_neg,
                    use_bias_correction_kl=cfg.use_bias_correction_kl, loss_type=loss_type,
                    importance_sampling_level=cfg.importance_sampling_level, temperature=cfg.temperature,
                    max_completion_length=cfg.max_new_tokens,
                    num_items_in_batch=tok_global if token_norm else None)
                share = 1.0 if token_norm else len(rows) / n_global
                (loss * (share * dist.world)).backward()
            if epoch == cfg.mu - 1:
                t = float(batch.mask[rows].sum())
                sums["loss"] += float(loss.detach()) * share
                for k in ("clip_ratio_low", "clip_ratio_high", "kl_mean"):
                    if k in met:
                        sums[k] += float(met[k]) * t
        # max_grad_norm 0 means no clipping (as in transformers), not zeroed gradients
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                              cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        optim.optimizer.step()
        stats.grad_norm = parallel.grad_norm(norm)
    optim.scheduler.step()
    loss, low, high, kl = dist.sum([sums["loss"], sums["clip_ratio_low"], sums["clip_ratio_high"], sums["kl_mean"]])
    stats.loss = loss
    stats.clip_ratio_low, stats.clip_ratio_high = low / max(tok_global, 1.0), high / max(tok_global, 1.0)
    if reference is not None:
        stats.kl_mean = kl / max(tok_global, 1.0)
    return stats
