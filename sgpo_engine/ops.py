"""The Python face of the fused ops (contracts: docs/design.md section 3).

Each function turns Python conveniences into the op's arguments (numbers
into per-row tensors, lists into tensors) and calls the extension op
`torch.ops.sgpo.*` (C++ on CPU, CUDA on GPU). The C++ boundary checks every
argument (csrc/entry.h) and raises ValueError naming it.

Without the compiled extension, the functions fall back to the plain-PyTorch
reference in `sgpo_engine.reference` after a one-time warning; the reference
assumes valid input, so the fallback path makes the checks it needs here.

Next to each wrapper: its op's fake implementation (so torch.compile can
trace it) and, for the losses, its autograd formula. The long schemas'
argument order is spelled once, as a NamedTuple (_GroupAdvantagesArgs,
_PolicyLossArgs) checked against the registered schema at import, which the
wrapper, the fallback and the fake share.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import NamedTuple, Optional

import torch

from . import reference
from .options import CREDIT, CREDITS, IS_LEVELS, LOSS_TYPES, SCALES, SCOPES, CreditConfig, check_choice

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


def _is_fake(t) -> bool:
    try:
        from torch._subclasses.fake_tensor import is_fake
        return is_fake(t)
    except ImportError:  # pragma: no cover - older torch
        return False


def _acc(t):
    """The ops' accumulation (and float output) dtype: fp64 for fp64 inputs, else fp32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _first_bad(name, bad, values, what):
    """ValueError naming `name` at the first True of `bad` (fallback checks)."""
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}: {what}, got {values[i].item()} at index {i}")


def _check_schema_order(op_name, args_type):
    """RuntimeError unless the fields of args_type (a NamedTuple) are the
    arguments of torch.ops.sgpo.<op_name>'s schema, by name and in order: the
    NamedTuple is then the one spelling of that order in Python."""
    schema = tuple(a.name for a in getattr(torch.ops.sgpo, op_name).default._schema.arguments)
    if schema != args_type._fields:
        raise RuntimeError(f"sgpo_engine.ops.{args_type.__name__} {args_type._fields} does not match the "
                           f"schema of torch.ops.sgpo.{op_name} {schema} (csrc/registration.cpp)")


# --------------------------------------------------------------------------
# group_advantages
# --------------------------------------------------------------------------
class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor   # [N]
    rewards: torch.Tensor      # [N] the rewards actually used (credit applied)
    group_mean: torch.Tensor   # [P]
    group_std: torch.Tensor    # [P] unbiased, 0 for a group of one
    all_negative: torch.Tensor  # [P] bool: no response of the group is correct


# group_advantages's settings are named after CreditConfig's fields; the
# reference takes exactly those of its arguments.
_CREDIT_FIELDS = frozenset(f.name for f in dataclasses.fields(CreditConfig))


def _fixed_size(group_offsets, n) -> Optional[int]:
    """The common size of valid, equal-size groups (the kernels' faster
    fixed-size path gives the same results), else None (invalid offsets are
    left for the op's own check)."""
    o = group_offsets.tolist()
    sizes = {b - a for a, b in zip(o, o[1:])}
    ok = len(o) >= 2 and o[0] == 0 and o[-1] == n and len(sizes) == 1
    return sizes.pop() if ok and min(sizes) > 0 else None


class _GroupAdvantagesArgs(NamedTuple):
    """torch.ops.sgpo.group_advantages's arguments in its schema's order
    (checked at import): what the wrapper passes, the fallback and the fake take."""
    rewards: torch.Tensor            # [N] float
    group_size: int                  # > 0, or 0 with offsets
    offsets: Optional[torch.Tensor]  # [P+1] int64 (the public group_offsets)
    correct: Optional[torch.Tensor]  # [N]
    rts: Optional[torch.Tensor]      # [N] float, NaN = not judged
    scope: str
    credit: str
    credit_beta: float
    credit_gamma: float
    credit_scale: float
    scale: str
    eps: float
    credited_std_floor: float = 0.0  # the schema's default (callers may leave it out)


def group_advantages(rewards, *, group_size=None, group_offsets=None, correct=None, rts=None,
                     scope=CREDIT.scope, credit=CREDIT.credit, credit_beta=CREDIT.credit_beta,
                     credit_gamma=CREDIT.credit_gamma, credit_scale=CREDIT.credit_scale, scale=CREDIT.scale,
                     eps=CREDIT.eps, credited_std_floor=CREDIT.credited_std_floor) -> GroupAdvantages:
    """SGPO rewards and group-normalized advantages in one pass.

    rewards [N] outcome rewards, in contiguous groups of `group_size` or given
    by `group_offsets` [P+1]; correct [N] bool and rts [N] (NaN = not judged)
    turn the rewards of incorrect responses in scope into partial credit
    (sigmoid(credit_beta * (rts - credit_gamma)) or credit_scale * rts).
    Without `correct`, a reward > 0 counts as correct for `all_negative`.
    credited_std_floor > 0 (scale "group"): a group with partial credit
    divides by max(std, floor) + eps, so nearly equal credits do not become
    unit-scale advantages. The defaults are options.CREDIT's (published SGPO).
    """
    if group_offsets is not None:
        group_offsets = torch.as_tensor(group_offsets, device=getattr(rewards, "device", None))
        if group_offsets.dtype == torch.int32:
            group_offsets = group_offsets.long()
        if group_size is None and group_offsets.dtype == torch.int64 and group_offsets.dim() == 1:
            fixed = _fixed_size(group_offsets, rewards.shape[0] if rewards.dim() == 1 else -1)
            if fixed is not None:
                group_size, group_offsets = fixed, None
    if isinstance(group_size, bool) or (group_size is not None and not isinstance(group_size, numbers.Integral)):
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    args = _GroupAdvantagesArgs(
        rewards=rewards, group_size=int(group_size or 0), offsets=group_offsets, correct=correct, rts=rts,
        scope=scope, credit=credit, credit_beta=float(credit_beta), credit_gamma=float(credit_gamma),
        credit_scale=float(credit_scale), scale=scale, eps=float(eps), credited_std_floor=float(credited_std_floor))
    if _use_extension():
        return GroupAdvantages(*torch.ops.sgpo.group_advantages(*args))
    return GroupAdvantages(*_group_advantages_fallback(args))


def _group_advantages_fallback(args: _GroupAdvantagesArgs):
    """The reference, after the checks it needs (csrc/entry.h makes them for the op)."""
    rewards, group_size, group_offsets = args.rewards, args.group_size, args.offsets
    correct, rts = args.correct, args.rts
    for name, options in (("scope", SCOPES), ("credit", CREDITS), ("scale", SCALES)):
        check_choice(name, getattr(args, name), options)
    if rewards.dim() != 1 or not rewards.is_floating_point() or rewards.numel() == 0:
        raise ValueError(f"rewards: expected a non-empty 1-D float tensor, got {rewards.dtype} {tuple(rewards.shape)}")
    N = rewards.shape[0]
    if (group_size > 0) == (group_offsets is not None):
        raise ValueError("group_size: give exactly one of group_size and group_offsets")
    if group_offsets is None:
        if N % group_size:
            raise ValueError(f"group_size: N = {N} rewards are not divisible by group_size = {group_size}")
        group_offsets = torch.arange(0, N + 1, group_size)
    o = group_offsets.tolist()
    if group_offsets.is_floating_point() or o[0] != 0 or o[-1] != N or any(b <= a for a, b in zip(o, o[1:])):
        raise ValueError(f"group_offsets: expected int64 0 = o_0 < ... < o_P = N = {N}, got {o}")
    for name, t in (("correct", correct), ("rts", rts)):
        if t is not None and tuple(t.shape) != (N,):
            raise ValueError(f"{name}: expected shape ({N},), got {tuple(t.shape)}")
    _first_bad("rewards", ~torch.isfinite(rewards), rewards, "non-finite value")
    if rts is not None:
        _first_bad("rts", ~torch.isnan(rts) & ((rts < 0) | (rts > 1)), rts, "expected values in [0, 1] or NaN")
    if args.eps < 0:
        raise ValueError(f"eps: expected >= 0, got {args.eps}")
    if not 0 <= args.credited_std_floor < math.inf:
        raise ValueError(f"credited_std_floor: expected a finite number >= 0, got {args.credited_std_floor}")
    dev = rewards.device
    cpu = lambda t: None if t is None else t.cpu()
    settings = {name: value for name, value in args._asdict().items() if name in _CREDIT_FIELDS}
    out = reference.group_advantages(rewards.cpu(), group_offsets.cpu(), cpu(None if correct is None else correct.bool()),
                                     cpu(rts), **settings)
    return [t.to(dev) for t in out]


if HAS_EXTENSION:
    _check_schema_order("group_advantages", _GroupAdvantagesArgs)

    @torch.library.register_fake("sgpo::group_advantages")
    def _(*args):  # the schema's arguments (a trailing default may be left out)
        a = _GroupAdvantagesArgs(*args)
        N = a.rewards.shape[0]
        P = a.offsets.shape[0] - 1 if a.offsets is not None else N // a.group_size
        f, acc = a.rewards.new_empty, _acc(a.rewards)
        return f(N, dtype=acc), f(N, dtype=acc), f(P, dtype=acc), f(P, dtype=acc), f(P, dtype=torch.bool)


# --------------------------------------------------------------------------
# fused_policy_loss
# --------------------------------------------------------------------------
# The metrics output [3], in the order of PolicyLossMetric (csrc/lm_head.h).
POLICY_LOSS_METRICS = ("clip_ratio_low", "clip_ratio_high", "kl_mean")


class _PolicyLossArgs(NamedTuple):
    """torch.ops.sgpo.fused_policy_loss's arguments in its schema's order
    (checked at import): what the wrapper passes, the fallback, the fake and
    the autograd formula take. Every field is named as the public argument."""
    hidden: torch.Tensor                # [B, T, H]
    weight: torch.Tensor                # [V, H]
    bias: Optional[torch.Tensor]        # [V]
    targets: torch.Tensor               # [B, T] int64 / int32
    mask: torch.Tensor                  # [B, T]
    advantages: torch.Tensor            # [B] or [B, T]
    old_logp: Optional[torch.Tensor]    # [B, T]
    ref_logp: Optional[torch.Tensor]    # [B, T]
    beta: float
    eps_low: float
    eps_high: float
    delta: Optional[float]
    sapo_temperature_pos: float
    sapo_temperature_neg: float
    use_bias_correction_kl: bool
    loss_type: str
    importance_sampling_level: str
    temperature: float
    max_completion_length: Optional[int]
    num_items_in_batch: Optional[float]
    chunk_size: Optional[int]
    grad_hidden: bool                   # which gradients the forward computes
    grad_weight: bool
    grad_bias: bool


# The arguments the reference does not take: the chunking and the gradients
# asked of the forward (the reference's autograd gives them).
_NOT_IN_REFERENCE = ("chunk_size", "grad_hidden", "grad_weight", "grad_bias")


def _needs_grad(t) -> bool:
    return t is not None and t.requires_grad and torch.is_grad_enabled()


def _optional_int(name, x):
    if x is not None and (isinstance(x, bool) or not isinstance(x, numbers.Integral)):
        raise ValueError(f"{name}: expected an int, got {x!r}")
    return None if x is None else int(x)


def fused_policy_loss(hidden, weight, targets, mask, advantages, *, bias=None, old_logp=None,
                      ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                      sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, use_bias_correction_kl=False,
                      loss_type="dapo", importance_sampling_level="token", temperature=1.0,
                      max_completion_length=None, num_items_in_batch=None, chunk_size=None):
    """The policy loss of TRL's GRPOTrainer fused with the LM head; never builds [B*T, V] logits.

    hidden [B, T, H], weight [V, H], targets [B, T] int64, mask [B, T] (1 =
    completion token), advantages [B] or [B, T], old_logp / ref_logp [B, T].
    loss_type: grpo, bnpo, dapo, dr_grpo (clipped ratio, four aggregations),
    cispo (eps_high caps the detached ratio) or sapo (the sapo_temperature_*
    gates); their per-token formulas are in docs/design.md section 3.
    use_bias_correction_kl: the KL term is k3 * ratio (TRL's option of that
    name, its default; unbiased reverse-KL gradient), else k3.
    Returns (loss, metrics) with metrics a dict of 0-d tensors:
    clip_ratio_low, clip_ratio_high (for cispo: the share of tokens whose ratio
    was capped), and kl_mean when ref_logp is given.
    Gradients flow to hidden, weight and bias.
    """
    args = _PolicyLossArgs(
        hidden=hidden, weight=weight, bias=bias, targets=targets, mask=mask, advantages=advantages,
        old_logp=old_logp, ref_logp=ref_logp, beta=float(beta), eps_low=float(eps_low), eps_high=float(eps_high),
        delta=None if delta is None else float(delta), sapo_temperature_pos=float(sapo_temperature_pos),
        sapo_temperature_neg=float(sapo_temperature_neg), use_bias_correction_kl=bool(use_bias_correction_kl),
        loss_type=loss_type, importance_sampling_level=importance_sampling_level, temperature=float(temperature),
        max_completion_length=_optional_int("max_completion_length", max_completion_length),
        num_items_in_batch=None if num_items_in_batch is None else float(num_items_in_batch),
        chunk_size=_optional_int("chunk_size", chunk_size),
        grad_hidden=_needs_grad(hidden), grad_weight=_needs_grad(weight), grad_bias=_needs_grad(bias))
    if not _use_extension():
        return _policy_loss_fallback(args)
    loss, metrics, _logp, _, _, _ = torch.ops.sgpo.fused_policy_loss(*args)
    out = dict(zip(POLICY_LOSS_METRICS, metrics.unbind()))
    if ref_logp is None:  # the op's kl_mean is NaN then
        del out["kl_mean"]
    return loss, out


def _policy_loss_fallback(args: _PolicyLossArgs):
    """The reference, after the checks it needs (csrc/entry.h makes them for the op)."""
    check_choice("loss_type", args.loss_type, LOSS_TYPES)
    check_choice("importance_sampling_level", args.importance_sampling_level, IS_LEVELS)
    for name in ("beta", "eps_low", "eps_high"):
        x = getattr(args, name)
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"{name}: expected a finite number >= 0, got {x}")
    for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
        x = getattr(args, name)
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {x}")
    _lm_head_fallback_checks(args.hidden, args.weight, args.targets, args.temperature)
    B, T = args.targets.shape
    if tuple(args.advantages.shape) not in ((B,), (B, T)):
        raise ValueError(f"advantages: expected [B] = [{B}] or [B, T] = [{B}, {T}], "
                         f"got {tuple(args.advantages.shape)}")
    for name in ("mask", "old_logp", "ref_logp"):
        t = getattr(args, name)
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name}: expected shape ({B}, {T}), got {tuple(t.shape)}")
    kwargs = {name: value for name, value in args._asdict().items() if name not in _NOT_IN_REFERENCE}
    return reference.fused_policy_loss(**kwargs)


def _lm_head_fallback_checks(hidden, weight, targets, temperature):
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if targets.numel() and not (0 <= int(targets.min()) and int(targets.max()) < weight.shape[0]):
        raise ValueError(f"targets: token ids must lie in [0, V = {weight.shape[0]})")


if HAS_EXTENSION:
    _check_schema_order("fused_policy_loss", _PolicyLossArgs)

    def _grad_like(t, wanted):
        return torch.empty_like(t) if wanted else t.new_empty(0)

    @torch.library.register_fake("sgpo::fused_policy_loss")
    def _(*args):  # the schema's arguments
        a = _PolicyLossArgs(*args)
        acc = _acc(a.hidden)
        return (a.hidden.new_empty((), dtype=acc), a.hidden.new_empty(len(POLICY_LOSS_METRICS), dtype=acc),
                a.hidden.new_empty(a.targets.shape, dtype=acc), _grad_like(a.hidden, a.grad_hidden),
                _grad_like(a.weight, a.grad_weight),
                _grad_like(a.bias, a.grad_bias) if a.bias is not None else a.weight.new_empty(0))

    # The op computes its gradients in the forward pass (the logits are in
    # hand there; a separate backward would redo the largest GEMM), so the
    # backward only scales them by the incoming gradient of the loss. With
    # loss.backward() that gradient is 1: the saved gradients are returned as
    # they are, and since autograd frees saved tensors right after this node
    # runs, .grad adopts them without a copy (a copy would double the op's
    # peak memory). With retain_graph, autograd copies them instead.
    def _policy_loss_setup(ctx, inputs, output):
        _, metrics, logp, gh, gw, gb = output
        ctx.mark_non_differentiable(metrics, logp, gh, gw, gb)
        # The gradients computed in the forward are outputs too; with the
        # default, autograd would hand the backward a zero "gradient" of each
        # ([V, H] for gw), doubling the op's extra memory. Only the loss's counts.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(gh, gw, gb)
        ctx.has_bias = _PolicyLossArgs(*inputs).bias is not None

    def _policy_loss_backward(ctx, g_loss, *_unused):
        grads = dict.fromkeys(_PolicyLossArgs._fields)  # None: no gradient, for every input but three
        if g_loss is not None:  # None: the loss is not part of what is differentiated
            unit = not _is_fake(g_loss) and bool(g_loss == 1)  # traced: no data-dependent branch
            for name, grad in zip(("hidden", "weight", "bias"), ctx.saved_tensors):
                if grad.numel() and (name != "bias" or ctx.has_bias):
                    grads[name] = grad if unit else grad * g_loss.to(grad.dtype)
        return tuple(_PolicyLossArgs(**grads))

    torch.library.register_autograd("sgpo::fused_policy_loss", _policy_loss_backward,
                                    setup_context=_policy_loss_setup)


# --------------------------------------------------------------------------
# fused_logprobs (and its backward op)
# --------------------------------------------------------------------------
def fused_logprobs(hidden, weight, targets, *, bias=None, temperature=1.0, chunk_size=None,
                   return_entropy=False):
    """log_softmax((hidden @ weight.T + bias) / temperature)[targets] without full logits.

    hidden [..., H], weight [V, H], targets [...] -> logp [...] (fp32; fp64 for
    fp64 inputs), and the entropy [...] with return_entropy. logp is
    differentiable (to hidden, weight, bias); the entropy is not.
    """
    if not _use_extension():
        _lm_head_fallback_checks(hidden, weight, targets, float(temperature))
        return reference.fused_logprobs(hidden, weight, targets, bias, temperature, return_entropy)
    logp, entropy = torch.ops.sgpo.fused_logprobs(hidden, weight, bias, targets, float(temperature), chunk_size,
                                                  return_entropy)
    return (logp, entropy) if return_entropy else logp


if HAS_EXTENSION:
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

    def _logprobs_setup(ctx, inputs, output):
        hidden, weight, bias, targets, temperature, chunk_size, _ = inputs
        ctx.mark_non_differentiable(output[1])  # the entropy
        ctx.set_materialize_grads(False)  # no zero [..] "gradient" of the entropy
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size

    def _logprobs_backward(ctx, g_logp, _g_entropy):
        if g_logp is None:
            return (None,) * 7
        hidden, weight, bias, targets = ctx.saved_tensors
        gh, gw, gb = ctx.needs_input_grad[:3]
        gb = gb and bias is not None
        dh, dw, db = torch.ops.sgpo.fused_logprobs_backward(
            g_logp, hidden, weight, bias, targets, ctx.temperature, ctx.chunk_size, gh, gw, gb)
        some = lambda t, wanted: t if wanted else None
        return some(dh, gh), some(dw, gw), some(db, gb), None, None, None, None

    torch.library.register_autograd("sgpo::fused_logprobs", _logprobs_backward, setup_context=_logprobs_setup)


# --------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------
# Valid values of the per-row parameters. The C++ entry checks tensors on CPU
# (csrc/entry.h check_sample_values); numbers are checked here, where they
# become tensors (on CUDA no tensor check runs: it would sync every step).
_SAMPLE_RULES = {
    "temperature": (lambda x: math.isfinite(x) and x >= 0, ">= 0"),
    "top_k": (lambda x: x >= 0, ">= 0"),
    "top_p": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "min_p": (lambda x: 0 <= x <= 1, "in [0, 1]"),
}


def _per_row(name, value, B, device, dtype):
    """A number or a [B] tensor -> a [B] tensor of `dtype` on `device`."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if dtype == torch.int64 and (value.is_floating_point() or value.is_complex()):
            raise ValueError(f"{name}: expected an integer tensor, got {value.dtype}")
        if not _use_extension():  # the op checks tensors itself
            ok, what = _SAMPLE_RULES[name]
            _first_bad(name, torch.tensor([not ok(x) for x in value.tolist()]), value, f"expected {what}")
        return value.to(dtype)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if dtype == torch.int64 and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ValueError(f"{name}: expected an int, got {value!r}")
    ok, what = _SAMPLE_RULES[name]
    if not isinstance(value, numbers.Real) or not ok(value):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
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
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits: expected a [B, V] tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    B, dev, f64 = logits.shape[0], logits.device, torch.float64
    t = _per_row("temperature", temperature, B, dev, f64)
    k = _per_row("top_k", top_k, B, dev, torch.int64)
    p = _per_row("top_p", top_p, B, dev, f64)
    m = _per_row("min_p", min_p, B, dev, f64)
    u = torch.rand(B, generator=generator, device=dev, dtype=f64) if uniform is None else uniform.to(f64)
    if _use_extension():
        return torch.ops.sgpo.sample(logits, t, k, p, m, u)
    if logits.shape[1] == 0 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float [B, V] tensor with V > 0, got {logits.dtype} {tuple(logits.shape)}")
    tok, lp = reference.sample(logits.cpu(), t.cpu(), k.cpu(), p.cpu(), m.cpu(), u.cpu())
    return tok.to(dev), lp.to(dev)


if HAS_EXTENSION:
    @torch.library.register_fake("sgpo::sample")
    def _(logits, temperature, top_k, top_p, min_p, uniform):
        B = logits.shape[0]
        return logits.new_empty(B, dtype=torch.int64), logits.new_empty(B, dtype=_acc(logits))


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
    return torch.ops.sgpo.decode_attention(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v,
                                           suffix_len, slot, scale, int(window))


if HAS_EXTENSION:
    @torch.library.register_fake("sgpo::decode_attention")
    def _(q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v, suffix_len, slot, scale, window):
        return torch.empty_like(q)
