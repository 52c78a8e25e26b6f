"""Plain-PyTorch versions of every op: the executable spec.

Each function here computes exactly what docs/design.md section 3 says, in the
most direct way (full logits, sorts, Python-level group loops where that is
clearest). The extension's kernels are tested against these in float64, and
`sgpo_engine.ops` falls back to them when the extension is not built.

Argument checking lives in `sgpo_engine.ops`; these functions assume valid,
already-normalized input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import LOSS_TYPES


# --------------------------------------------------------------------------
# group_advantages
# --------------------------------------------------------------------------
def _shifted_moments(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of a 1-D group, shifted by its first element so
    equal values give exactly (value, 0)."""
    d = r - r[0]
    dmean = d.sum() / r.numel()
    mean = r[0] + dmean
    if r.numel() < 2:
        return mean, torch.zeros((), dtype=r.dtype)
    std = (((d - dmean) ** 2).sum() / (r.numel() - 1)).sqrt()
    return mean, std


def group_advantages(rewards, offsets, correct=None, rts=None, *, scope, credit, credit_beta, credit_gamma,
                     credit_scale, scale, eps, credited_std_floor):
    """rewards [N] float, offsets [P+1] int64 (contiguous, non-empty groups),
    correct [N] bool or None, rts [N] float (NaN = not judged) or None.
    The settings (named as options.CreditConfig's fields) are all required:
    their defaults live in options.CREDIT alone.
    scale "group" divides a group with partial credit by max(std, credited_std_floor) + eps.
    Returns (advantages [N], used_rewards [N], group_mean [P], group_std [P],
    all_negative [P] bool)."""
    dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.to(dtype)
    offs = offsets.tolist()
    P = len(offs) - 1
    # Without `correct`, a reward > 0 counts as correct (binary-reward convention).
    is_correct = correct.bool() if correct is not None else r > 0
    used = r.clone()
    means = torch.empty(P, dtype=dtype)
    stds = torch.empty(P, dtype=dtype)
    all_neg = torch.empty(P, dtype=torch.bool)
    credited = torch.zeros(P, dtype=torch.bool)
    for g in range(P):
        a, b = offs[g], offs[g + 1]
        all_neg[g] = not bool(is_correct[a:b].any())
        if correct is not None and rts is not None and scope != "off":
            s = rts[a:b].to(dtype)
            if credit == "sigmoid":
                c = torch.sigmoid(credit_beta * (s - credit_gamma))
            else:
                c = credit_scale * s
            admit = (~is_correct[a:b]) & ~torch.isnan(s)
            if scope == "all_negative":
                admit &= bool(all_neg[g])
            used[a:b] = torch.where(admit, c, used[a:b])
            credited[g] = bool(admit.any())
        means[g], stds[g] = _shifted_moments(used[a:b])
    sizes = torch.tensor([offs[g + 1] - offs[g] for g in range(P)])
    mean_per = means.repeat_interleave(sizes)
    if scale == "group":
        floored = torch.where(credited & (stds < credited_std_floor), torch.full_like(stds, credited_std_floor), stds)
        den = floored.repeat_interleave(sizes) + eps
    elif scale == "batch":
        den = (used.std() if used.numel() > 1 else torch.zeros((), dtype=dtype)) + eps
    else:
        den = torch.ones((), dtype=dtype)
    num = used - mean_per
    # 0 / 0 = 0: with eps = 0 a group of equal rewards gets advantages 0, not NaN.
    adv = torch.where(den != 0, num / torch.where(den != 0, den, 1), torch.zeros_like(num))
    return adv, used, means, stds, all_neg


# --------------------------------------------------------------------------
# fused_logprobs / fused_policy_loss (logits materialized)
# --------------------------------------------------------------------------
def logits_and_logprobs(hidden, weight, targets, bias=None, temperature=1.0):
    """hidden [B, T, H], weight [V, H], targets [B, T] -> (log_softmax [B, T, V],
    logp of targets [B, T]). Computed in the inputs' dtype, like eager training."""
    logits = hidden @ weight.t()  # [B, T, V]
    if bias is not None:
        logits = logits + bias
    logits = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
    logsm = F.log_softmax(logits / temperature, dim=-1)
    return logsm, logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def fused_logprobs(hidden, weight, targets, bias=None, temperature=1.0, return_entropy=False):
    logsm, logp = logits_and_logprobs(hidden, weight, targets, bias, temperature)
    if not return_entropy:
        return logp
    entropy = -(logsm.exp() * logsm).sum(-1)
    return logp, entropy


def aggregation_weights(mask, loss_type, max_completion_length=None, num_items_in_batch=None):
    """Per-token weight w [B, T] such that loss = sum(w * per_token)."""
    B, T = mask.shape
    if loss_type in ("grpo", "sapo"):
        return mask / (B * mask.sum(-1, keepdim=True).clamp(min=1.0))
    if loss_type == "bnpo":
        return mask / mask.sum().clamp(min=1.0)
    if loss_type in ("dapo", "cispo"):
        n = mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch
        return mask / n
    if loss_type == "dr_grpo":
        L = T if max_completion_length is None else max_completion_length
        return mask / (B * L)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def policy_loss_from_logprobs(logp, targets_mask, advantages, old_logp=None, ref_logp=None,
                              beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                              loss_type="dapo", importance_sampling_level="token",
                              max_completion_length=None, num_items_in_batch=None,
                              sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
                              use_bias_correction_kl=False):
    """TRL GRPOTrainer's policy loss given per-token log-probs logp [B, T]
    (differentiable). Returns (loss, metrics dict of 0-d tensors)."""
    mask = targets_mask.to(logp.dtype)
    old = logp.detach() if old_logp is None else old_logp.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    if importance_sampling_level == "token":
        log_ratio = logp - old
    else:
        seq = (mask * (logp - old)).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_ratio = seq.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(log_ratio)
    if loss_type == "cispo":  # REINFORCE weighted by the detached, capped ratio
        per_token = -torch.clamp(ratio, max=eps_high).detach() * adv * logp
    elif loss_type == "sapo":  # a sigmoid gate in place of the clip
        tau = torch.where(adv > 0, adv.new_tensor(sapo_temperature_pos), adv.new_tensor(sapo_temperature_neg))
        per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
    else:
        r1 = ratio if delta is None else torch.clamp(ratio, max=delta)
        l1 = r1 * adv
        l2 = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv
        per_token = -torch.min(l1, l2)
    n_mask = mask.sum().clamp(min=1.0)
    metrics = {}
    if ref_logp is not None:
        d = ref_logp.to(logp.dtype) - logp
        kl = torch.exp(d) - d - 1
        if use_bias_correction_kl:  # the differentiable ratio reweights the KL (TRL's option)
            kl = kl * ratio
        if beta != 0.0:
            per_token = per_token + beta * kl
        metrics["kl_mean"] = ((kl * mask).sum() / n_mask).detach()
    w = aggregation_weights(mask, loss_type, max_completion_length, num_items_in_batch)
    loss = (per_token * w).sum()
    with torch.no_grad():
        if loss_type == "cispo":  # the tokens whose ratio was capped (TRL's cispo_clip_ratio)
            low, high = torch.zeros_like(ratio), ((ratio > eps_high) & (adv > 0)).to(logp.dtype)
        elif loss_type == "sapo":  # nothing is clipped
            low = high = torch.zeros_like(ratio)
        else:
            low = ((ratio < 1 - eps_low) & (adv < 0)).to(logp.dtype)
            high = ((ratio > 1 + eps_high) & (adv > 0)).to(logp.dtype)
        metrics["clip_ratio_low"] = (low * mask).sum() / n_mask
        metrics["clip_ratio_high"] = (high * mask).sum() / n_mask
    return loss, metrics


def fused_policy_loss(hidden, weight, targets, mask, advantages, bias=None, old_logp=None,
                      ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                      loss_type="dapo", importance_sampling_level="token", temperature=1.0,
                      max_completion_length=None, num_items_in_batch=None,
                      sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, use_bias_correction_kl=False):
    """TRL-style eager loss: materializes [B, T, V] logits. Returns (loss, metrics)."""
    _, logp = logits_and_logprobs(hidden, weight, targets, bias, temperature)
    return policy_loss_from_logprobs(
        logp, mask, advantages, old_logp, ref_logp, beta, eps_low, eps_high, delta,
        loss_type, importance_sampling_level, max_completion_length, num_items_in_batch,
        sapo_temperature_pos, sapo_temperature_neg, use_bias_correction_kl)


# --------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------
def kept_weights(x, top_k, top_p, min_p):
    """x [V] float64 = logits / temperature -> weights exp(x - max x) of the kept
    tokens, 0 elsewhere (the unnormalized filtered distribution)."""
    e = torch.exp(x - x.max())  # max weight is 1
    V = e.numel()
    cut = torch.zeros((), dtype=torch.float64)
    if 0 < top_k < V:  # k-th largest weight; ties at the boundary are kept
        cut = torch.maximum(cut, torch.topk(e, top_k).values[-1])
    if top_p < 1.0:  # shortest descending prefix reaching top_p of the top-k mass
        srt = torch.sort(torch.where(e >= cut, e, torch.zeros_like(e)), descending=True).values
        cum = torch.cumsum(srt, 0)
        reach = torch.nonzero(cum >= top_p * cum[-1])
        cut = torch.maximum(cut, srt[int(reach[0]) if reach.numel() else V - 1])
    cut = torch.maximum(cut, torch.tensor(float(min_p), dtype=torch.float64))
    return torch.where(e >= cut, e, torch.zeros_like(e))


def filtered_distribution(logits, temperature, top_k, top_p, min_p):
    """Exact sampling distribution of one row [V] (float64), for statistical tests."""
    w = kept_weights(logits.to(torch.float64) / temperature, top_k, top_p, min_p)
    return w / w.sum()


def sample(logits, temperature, top_k, top_p, min_p, uniform):
    """logits [B, V]; temperature, top_k, top_p, min_p, uniform: [B] tensors.
    Returns (tokens [B] int64, logprobs [B] float32, float64 for float64 logits).
    The token is the first v whose running kept weight exceeds u * (kept mass)."""
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    B, V = logits.shape
    tokens = torch.empty(B, dtype=torch.int64)
    logprobs = torch.empty(B, dtype=out_dtype)
    for b in range(B):
        t = float(temperature[b])
        x = logits[b].to(torch.float64)
        if t == 0.0:  # greedy; the log-prob is under the temperature-1 distribution
            tok = int(torch.argmax(x))
        else:
            x = x / t
            w = kept_weights(x, int(top_k[b]), float(top_p[b]), float(min_p[b]))
            cum = torch.cumsum(w, 0)
            tok = min(int(torch.searchsorted(cum, float(uniform[b]) * cum[-1], right=True)), V - 1)
            while w[tok] == 0:  # rounding at the very end of the CDF: back to a kept token
                tok -= 1
        tokens[b] = tok
        logprobs[b] = torch.log_softmax(x, -1)[tok]
    return tokens, logprobs


# --------------------------------------------------------------------------
# decode_attention
# --------------------------------------------------------------------------
def decode_attention(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v, suffix_len, slot,
                     scale, window=0):
    """q [S, Hq, D]; prefix_k/v [P, Hkv, Lp, D]; suffix_k/v [C, Hkv, Ls, D]; index
    tensors [S] / [P] int64 (see csrc/ops.h). Row s attends to the first
    prefix_len[prefix_of[s]] prompt positions, then the first suffix_len[s] of
    its own cache slot; with window > 0, only keys at absolute positions
    > (prefix_len + suffix_len - 1) - window. Returns [S, Hq, D] (zeros for a
    row with no keys).
    Vectorized (it is also the no-extension fallback): gathers the prefix KV."""
    S, Hq, D = q.shape
    Hkv, Lp, Ls = prefix_k.shape[1], prefix_k.shape[2], suffix_k.shape[2]
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = torch.cat([prefix_k[prefix_of], suffix_k[slot]], 2).to(cdt)  # [S, Hkv, Lp + Ls, D]
    v = torch.cat([prefix_v[prefix_of], suffix_v[slot]], 2).to(cdt)
    pos = torch.arange(Lp + Ls, device=q.device)
    valid = torch.where(pos < Lp, pos < prefix_len[prefix_of][:, None],
                        pos - Lp < suffix_len[:, None])  # [S, Lp + Ls]
    if window > 0:
        n_p = prefix_len[prefix_of][:, None]
        absolute = torch.where(pos < Lp, pos, n_p + pos - Lp)
        valid &= absolute > n_p + suffix_len[:, None] - 1 - window
    qg = q.view(S, Hkv, Hq // Hkv, D).to(cdt)
    scores = torch.einsum("shgd,shld->shgl", qg, k) * scale  # [S, Hkv, group, L]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    w = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)  # a row with no keys -> zeros
    return torch.einsum("shgl,shld->shgd", w, v).reshape(S, Hq, D).to(q.dtype)
