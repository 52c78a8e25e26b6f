"""The Python face of the fused ops (DESIGN.md section 3).

Each function checks its arguments (ValueError naming the argument), then
calls the extension op `torch.ops.sgpo.*` (C++ on CPU, CUDA on GPU), or, when
the extension is not built, the plain-PyTorch reference in
`sgpo_engine.reference` after a one-time warning.

The ops are registered with fake implementations (so torch.compile can trace
them) and, for the losses, with autograd formulas.
"""
from __future__ import annotations

import math
import numbers
import re
import warnings
from typing import NamedTuple, Optional

import torch

from . import reference

try:
    from . import _C  # noqa: F401  (loading it registers torch.ops.sgpo.*)
    HAS_EXTENSION = True
    _IMPORT_ERROR: Optional[BaseException] = None
except ImportError as e:  # pragma: no cover - exercised by the fallback test in a subprocess
    HAS_EXTENSION = False
    _IMPORT_ERROR = e

_warned = False


def _use_extension() -> bool:
    global _warned
    if HAS_EXTENSION:
        return True
    if not _warned:
        warnings.warn(
            f"sgpo_engine._C is not built ({_IMPORT_ERROR}); falling back to the plain-PyTorch "
            "reference ops, which materialize full logits. Build it with "
            "`pip install --no-build-isolation -e .`", RuntimeWarning, stacklevel=3)
        _warned = True
    return False


_ARG_ERROR = re.compile(r"^[a-z_]+(, [a-z_]+)*(/[a-z_]+)*: ")


def _call(op, *args):
    """Runs an extension op; a C++ argument check (a message that starts with
    the argument's name) surfaces as ValueError, like the Python checks."""
    try:
        return op(*args)
    except RuntimeError as e:
        first = str(e).split("\n")[0]
        if _ARG_ERROR.match(first):
            raise ValueError(first) from None
        raise


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def _tensor(name, t, *, dim=None, shape=None, floating=False, device=None):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() not in ((dim,) if isinstance(dim, int) else dim):
        raise ValueError(f"{name}: expected {dim} dimension(s), got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")


def _number(name, x, *, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(x, torch.Tensor):
        x = x.item()
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x!r}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{name}: expected {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise ValueError(f"{name}: expected {'<' if hi_open else '<='} {hi}, got {x}")
    return float(x)


# --------------------------------------------------------------------------
# group_advantages
# --------------------------------------------------------------------------
def _check_values(rewards, rts):
    finite = torch.isfinite(rewards)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise ValueError(f"rewards: non-finite value {float(rewards[i])} at index {i}")
    if rts is not None:
        bad = ~torch.isnan(rts) & ((rts < 0) | (rts > 1))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"rts: expected values in [0, 1] or NaN (not judged), got {float(rts[i])} at index {i}")


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor   # [N]
    rewards: torch.Tensor      # [N] the rewards actually used (credit applied)
    group_mean: torch.Tensor   # [P]
    group_std: torch.Tensor    # [P] unbiased, 0 for a group of one
    all_negative: torch.Tensor  # [P] bool: no response of the group is correct


def group_advantages(rewards, *, group_size=None, group_offsets=None, correct=None, rts=None,
                     scope="all_negative", credit="sigmoid", beta=5.0, gamma=0.5,
                     credit_scale=0.5, scale="group", eps=1e-4) -> GroupAdvantages:
    """SGPO rewards and group-normalized advantages in one pass.

    rewards [N] outcome rewards, in contiguous groups of `group_size` or given
    by `group_offsets` [P+1]; correct [N] bool and rts [N] (NaN = not judged)
    turn the rewards of incorrect responses in scope into partial credit
    (sigmoid(beta * (rts - gamma)) or credit_scale * rts). Without `correct`,
    a reward > 0 counts as correct for `all_negative`.
    """
    _tensor("rewards", rewards, dim=1, floating=True)
    N = rewards.shape[0]
    if N == 0:
        raise ValueError("rewards: expected at least one reward")
    dev = rewards.device
    if (group_size is None) == (group_offsets is None):
        raise ValueError("group_size / group_offsets: give exactly one of them")
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size <= 0:
            raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
        if N % group_size:
            raise ValueError(f"group_size: N = {N} rewards are not divisible by group_size = {group_size}")
    else:
        group_offsets = torch.as_tensor(group_offsets, device=dev)
        _tensor("group_offsets", group_offsets, dim=1)
        if group_offsets.dtype not in (torch.int32, torch.int64) or group_offsets.numel() < 2:
            raise ValueError(f"group_offsets: expected int [P+1] with P >= 1, got {group_offsets.dtype} "
                             f"shape {tuple(group_offsets.shape)}")
        o = group_offsets.tolist()
        if o[0] != 0 or o[-1] != N:
            raise ValueError(f"group_offsets: must start at 0 and end at N = {N}, got {o[0]} and {o[-1]}")
        bad = [g for g in range(len(o) - 1) if o[g + 1] <= o[g]]
        if bad:
            raise ValueError(f"group_offsets: group {bad[0]} is empty or reversed ({o[bad[0]]} -> {o[bad[0] + 1]})")
        sizes = {o[g + 1] - o[g] for g in range(len(o) - 1)}
        if len(sizes) == 1:  # equal groups: the kernels' fixed-size path (the same results, faster)
            group_size, group_offsets = sizes.pop(), None
        else:
            group_offsets = group_offsets.long()
    if correct is not None:
        _tensor("correct", correct, shape=(N,), device=dev)
        correct = correct.bool()
    if rts is not None:
        _tensor("rts", rts, shape=(N,), floating=True, device=dev)
    _choice("scope", scope, reference.SCOPES)
    _choice("credit", credit, reference.CREDITS)
    _choice("scale", scale, reference.SCALES)
    beta, gamma = _number("beta", beta), _number("gamma", gamma)
    credit_scale, eps = _number("credit_scale", credit_scale), _number("eps", eps, lo=0)
    # Value checks: the CPU kernel makes them in its single pass (RuntimeError
    # naming the tensor); elsewhere they cost extra passes, made here.
    if not (HAS_EXTENSION and dev.type == "cpu"):
        _check_values(rewards, rts)

    if _use_extension():
        out = _call(
            torch.ops.sgpo.group_advantages, rewards, group_size or 0, group_offsets, correct, rts, scope, credit,
            beta, gamma, credit_scale, scale, eps)
    else:
        offsets = group_offsets if group_offsets is not None else torch.arange(0, N + 1, group_size)
        out = reference.group_advantages(rewards.cpu(), offsets.cpu(), None if correct is None else correct.cpu(),
                                         None if rts is None else rts.cpu(), scope=scope, credit=credit,
                                         beta=beta, gamma=gamma, credit_scale=credit_scale, scale=scale, eps=eps)
        out = [t.to(dev) for t in out]
    return GroupAdvantages(*out)


# --------------------------------------------------------------------------
# fused_policy_loss / fused_logprobs
# --------------------------------------------------------------------------
def _check_lm_head(hidden, weight, targets, bias, temperature, chunk_size):
    _tensor("hidden", hidden, floating=True)
    _tensor("weight", weight, dim=2, floating=True, device=hidden.device)
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight: expected [V, H] with H = {hidden.shape[-1]} (hidden's last dim), "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight: dtype {weight.dtype} differs from hidden's {hidden.dtype}")
    _tensor("targets", targets, shape=hidden.shape[:-1], device=hidden.device)
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets: expected int64 token ids, got {targets.dtype}")
    if bias is not None:
        _tensor("bias", bias, shape=(weight.shape[0],), device=hidden.device)
        if bias.dtype != hidden.dtype:
            raise ValueError(f"bias: dtype {bias.dtype} differs from hidden's {hidden.dtype}")
    _number("temperature", temperature, lo=0, lo_open=True)
    if chunk_size is not None and (not isinstance(chunk_size, numbers.Integral) or chunk_size <= 0):
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")


def _needs_grad(*tensors):
    return [t is not None and t.requires_grad and torch.is_grad_enabled() for t in tensors]


def fused_policy_loss(hidden, weight, targets, mask, advantages, *, bias=None, old_logp=None,
                      ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                      loss_type="dapo", importance_sampling_level="token", temperature=1.0,
                      max_completion_length=None, num_items_in_batch=None, chunk_size=None):
    """Clipped-ratio policy loss fused with the LM head; never builds [B*T, V] logits.

    hidden [B, T, H], weight [V, H], targets [B, T] int64, mask [B, T] (1 =
    completion token), advantages [B] or [B, T], old_logp / ref_logp [B, T].
    Returns (loss, metrics) with metrics a dict of 0-d tensors:
    clip_ratio_low, clip_ratio_high, and kl_mean when ref_logp is given.
    Gradients flow to hidden, weight and bias.
    """
    _check_lm_head(hidden, weight, targets, bias, temperature, chunk_size)
    if hidden.dim() != 3:
        raise ValueError(f"hidden: expected [B, T, H], got shape {tuple(hidden.shape)}")
    B, T = targets.shape
    _tensor("mask", mask, shape=(B, T), device=hidden.device)
    _tensor("advantages", advantages, floating=True, device=hidden.device)
    if tuple(advantages.shape) not in ((B,), (B, T)):
        raise ValueError(f"advantages: expected [B] = [{B}] or [B, T] = [{B}, {T}], got {tuple(advantages.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if t is not None:
            _tensor(name, t, shape=(B, T), floating=True, device=hidden.device)
    _choice("loss_type", loss_type, reference.LOSS_TYPES)
    _choice("importance_sampling_level", importance_sampling_level, reference.IS_LEVELS)
    beta = _number("beta", beta, lo=0)
    eps_low, eps_high = _number("eps_low", eps_low, lo=0), _number("eps_high", eps_high, lo=0)
    delta = None if delta is None else _number("delta", delta, lo=0, lo_open=True)
    if max_completion_length is not None and (not isinstance(max_completion_length, numbers.Integral)
                                              or max_completion_length <= 0):
        raise ValueError(f"max_completion_length: expected a positive int, got {max_completion_length!r}")
    if num_items_in_batch is not None:
        num_items_in_batch = _number("num_items_in_batch", num_items_in_batch, lo=0, lo_open=True)

    if not _use_extension():
        return reference.fused_policy_loss(
            hidden, weight, targets, mask, advantages, bias, old_logp, ref_logp, beta, eps_low, eps_high,
            delta, loss_type, importance_sampling_level, temperature, max_completion_length,
            num_items_in_batch)
    gh, gw, gb = _needs_grad(hidden, weight, bias)
    loss, metrics, _logp, _, _, _ = _call(
        torch.ops.sgpo.fused_policy_loss, hidden, weight, bias, targets, mask, advantages, old_logp, ref_logp, beta, eps_low, eps_high, delta,
        loss_type, importance_sampling_level, float(temperature), max_completion_length, num_items_in_batch,
        chunk_size, gh, gw, gb)
    out = {"clip_ratio_low": metrics[0], "clip_ratio_high": metrics[1]}
    if ref_logp is not None:
        out["kl_mean"] = metrics[2]
    return loss, out


def fused_logprobs(hidden, weight, targets, *, bias=None, temperature=1.0, chunk_size=None,
                   return_entropy=False):
    """log_softmax((hidden @ weight.T + bias) / temperature)[targets] without full logits.

    hidden [..., H], weight [V, H], targets [...] -> logp [...] (fp32; fp64 for
    fp64 inputs), and the entropy [...] with return_entropy. logp is
    differentiable (to hidden, weight, bias); the entropy is not.
    """
    _check_lm_head(hidden, weight, targets, bias, temperature, chunk_size)
    if not _use_extension():
        return reference.fused_logprobs(hidden, weight, targets, bias, temperature, return_entropy)
    logp, entropy = _call(torch.ops.sgpo.fused_logprobs, hidden, weight, bias, targets, float(temperature),
                          chunk_size, return_entropy)
    return (logp, entropy) if return_entropy else logp


# --------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------
def _per_row(name, value, B, device, dtype, check):
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        _tensor(name, value, shape=(B,), device=device)
        if value.device.type == "cpu":  # checking a CUDA tensor would cost a host sync per step
            bad = ~check(value)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"{name}: invalid value {value[i].item()} at row {i}")
        return value.to(dtype)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if dtype == torch.int64 and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ValueError(f"{name}: expected an int, got {value!r}")
    if not bool(check(torch.tensor(value, dtype=torch.float64))):
        raise ValueError(f"{name}: invalid value {value!r}")
    return torch.full((B,), value, dtype=dtype, device=device)


def sample(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, generator=None, uniform=None):
    """Fused temperature / top-k / top-p / min-p sampling, one token per row.

    logits [B, V]; each parameter is a number or a [B] tensor. temperature 0
    is greedy. Returns (tokens [B] int64, logprobs [B] float32): the log-prob
    of the token under log_softmax(logits / temperature) over the full
    vocabulary (temperature 1 when greedy). The same generator state gives
    the same tokens. `uniform` [B] in [0, 1) replaces the generator's draws
    (for counter-based randomness). CUDA [B] parameter tensors are not
    range-checked (that would synchronize the host every decoding step).
    """
    _tensor("logits", logits, dim=2, floating=True)
    B, V = logits.shape
    if V == 0:
        raise ValueError("logits: expected V > 0")
    dev = logits.device
    f64 = torch.float64
    t = _per_row("temperature", temperature, B, dev, f64, lambda x: torch.isfinite(x) & (x >= 0))
    k = _per_row("top_k", top_k, B, dev, torch.int64, lambda x: x >= 0)
    p = _per_row("top_p", top_p, B, dev, f64, lambda x: (x > 0) & (x <= 1))
    m = _per_row("min_p", min_p, B, dev, f64, lambda x: (x >= 0) & (x <= 1))
    if uniform is None:
        u = torch.rand(B, generator=generator, device=dev, dtype=f64)
    else:
        _tensor("uniform", uniform, shape=(B,), device=dev)
        u = uniform.to(f64)
    if _use_extension():
        return _call(torch.ops.sgpo.sample, logits, t, k, p, m, u)
    tok, lp = reference.sample(logits.cpu(), t.cpu(), k.cpu(), p.cpu(), m.cpu(), u.cpu())
    return tok.to(dev), lp.to(dev)


# --------------------------------------------------------------------------
# decode_attention
# --------------------------------------------------------------------------
def decode_attention(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v, suffix_len, slot,
                     scale=None, window=0):
    """One decoding step of attention over a shared-prefix KV cache.

    q [S, Hq, D]; prefix_k/v [P, Hkv, Lp, D] (each prompt's KV, shared by its
    samples); prefix_len [P]; prefix_of [S] (each row's prompt); suffix_k/v
    [C, Hkv, Ls, D] (each sample's own KV); suffix_len [S] (valid positions,
    current token included); slot [S] (each row's cache slot). window > 0 is a
    sliding window (keys within the last `window` positions). -> [S, Hq, D].
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not _use_extension():
        return reference.decode_attention(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v,
                                          suffix_len, slot, scale, window)
    return _call(torch.ops.sgpo.decode_attention, q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k,
                 suffix_v, suffix_len, slot, scale, int(window))


# --------------------------------------------------------------------------
# fake implementations (torch.compile) and autograd
# --------------------------------------------------------------------------
def _is_fake(t) -> bool:
    try:
        from torch._subclasses.fake_tensor import is_fake
        return is_fake(t)
    except ImportError:  # pragma: no cover - older torch
        return False


def _acc(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


if HAS_EXTENSION:
    @torch.library.register_fake("sgpo::group_advantages")
    def _(rewards, group_size, offsets, correct, rts, scope, credit, beta, gamma, credit_scale, scale, eps):
        N = rewards.shape[0]
        P = offsets.shape[0] - 1 if offsets is not None else N // group_size
        f = rewards.new_empty
        return (f(N, dtype=_acc(rewards)), f(N, dtype=_acc(rewards)), f(P, dtype=_acc(rewards)),
                f(P, dtype=_acc(rewards)), f(P, dtype=torch.bool))

    @torch.library.register_fake("sgpo::decode_attention")
    def _(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v, suffix_len, slot, scale, window):
        return torch.empty_like(q)

    @torch.library.register_fake("sgpo::sample")
    def _(logits, temperature, top_k, top_p, min_p, uniform):
        B = logits.shape[0]
        return logits.new_empty(B, dtype=torch.int64), logits.new_empty(B, dtype=_acc(logits))

    def _grad_like(t, wanted):
        return torch.empty_like(t) if wanted else t.new_empty(0)

    @torch.library.register_fake("sgpo::fused_policy_loss")
    def _(hidden, weight, bias, targets, mask, advantages, old_logp, ref_logp, beta, eps_low, eps_high,
          delta, loss_type, level, temperature, max_completion_length, num_items_in_batch, chunk_size,
          grad_hidden, grad_weight, grad_bias):
        acc = _acc(hidden)
        return (hidden.new_empty((), dtype=acc), hidden.new_empty(3, dtype=acc),
                hidden.new_empty(targets.shape, dtype=acc), _grad_like(hidden, grad_hidden),
                _grad_like(weight, grad_weight),
                _grad_like(bias, grad_bias) if bias is not None else weight.new_empty(0))

    @torch.library.register_fake("sgpo::fused_logprobs")
    def _(hidden, weight, bias, targets, temperature, chunk_size, return_entropy):
        acc = _acc(hidden)
        ent = hidden.new_empty(targets.shape, dtype=acc) if return_entropy else hidden.new_empty(0, dtype=acc)
        return hidden.new_empty(targets.shape, dtype=acc), ent

    @torch.library.register_fake("sgpo::fused_logprobs_backward")
    def _(grad_logp, hidden, weight, bias, targets, temperature, chunk_size, grad_hidden, grad_weight,
          grad_bias):
        return (_grad_like(hidden, grad_hidden), _grad_like(weight, grad_weight),
                _grad_like(bias, grad_bias) if bias is not None else weight.new_empty(0))

    # fused_policy_loss computes its gradients in the forward pass (the logits
    # are in hand there; a separate backward would redo the largest GEMM), so
    # the backward only scales them by the incoming gradient of the loss. With
    # loss.backward() that gradient is 1: the saved gradients are returned as
    # they are, and since autograd frees saved tensors right after this node
    # runs, .grad adopts them without a copy (a copy would double the op's
    # peak memory). With retain_graph, autograd copies them instead.
    def _policy_loss_setup(ctx, inputs, output):
        _, metrics, logp, gh, gw, gb = output
        ctx.mark_non_differentiable(metrics, logp)
        ctx.save_for_backward(gh, gw, gb)
        ctx.has_bias = inputs[2] is not None

    def _policy_loss_backward(ctx, g_loss, *_unused):
        grads = ctx.saved_tensors
        unit = not _is_fake(g_loss) and bool(g_loss == 1)  # traced: no data-dependent branch
        out = [None] * 21
        for i, grad in enumerate(grads):
            if grad.numel() and (i < 2 or ctx.has_bias):
                out[i] = grad if unit else grad * g_loss.to(grad.dtype)
        return tuple(out)

    torch.library.register_autograd("sgpo::fused_policy_loss", _policy_loss_backward,
                                    setup_context=_policy_loss_setup)

    def _logprobs_setup(ctx, inputs, output):
        hidden, weight, bias, targets, temperature, chunk_size, _ = inputs
        ctx.mark_non_differentiable(output[1])  # the entropy
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size

    def _logprobs_backward(ctx, g_logp, _g_entropy):
        hidden, weight, bias, targets = ctx.saved_tensors
        gh, gw, gb = ctx.needs_input_grad[:3]
        dh, dw, db = torch.ops.sgpo.fused_logprobs_backward(
            g_logp, hidden, weight, bias, targets, ctx.temperature, ctx.chunk_size, gh, gw,
            gb and bias is not None)
        some = lambda t, wanted: t if wanted else None
        return some(dh, gh), some(dw, gw), some(db, gb and bias is not None), None, None, None, None

    torch.library.register_autograd("sgpo::fused_logprobs", _logprobs_backward, setup_context=_logprobs_setup)
