"""Checks and helpers of the op tests, imported by name (from op_checks import ...).

Every check here is device-agnostic: the CPU test files and tests/test_cuda.py
call the same functions with a different `device`, so the CUDA tests are the
CPU tests on other tensors, not a copy of them.

Conventions (docs/design.md section 5): the plain-PyTorch reference
(sgpo_engine.reference) is the spec; ops are compared with it in float64 on
fresh random inputs; in float32 / bfloat16 the op's error against the float64
reference must be at most about twice the error of the reference run in that
dtype, plus a small absolute slack.

Randomness: one generator per test (conftest.py's `gen` fixture), seeded by the
test id (`seed_of`), so every parametrization draws different data and every
run draws the same data.
"""
from __future__ import annotations

import inspect
import math
import shutil
import zlib

import torch

from sgpo_engine import ops, reference
from sgpo_engine.options import CREDIT

F64 = torch.float64


# --------------------------------------------------------------------------
# randomness
# --------------------------------------------------------------------------
def seed_of(text: str) -> int:
    return zlib.crc32(text.encode())


def randn(g, *shape, dtype=F64, scale=1.0, device="cpu"):
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(device=device, dtype=dtype)


def rand(g, *shape, dtype=F64, device="cpu"):
    return torch.rand(*shape, generator=g, dtype=F64).to(device=device, dtype=dtype)


def randint(g, lo, hi, *shape, device="cpu"):
    return torch.randint(lo, hi, shape, generator=g).to(device)


def choice(g, options):
    return options[int(torch.randint(len(options), (1,), generator=g))]


def has_cxx_compiler() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


# --------------------------------------------------------------------------
# error bounds for low-precision runs
# --------------------------------------------------------------------------
# Absolute slack, as a fraction of the magnitude of the float64 value (about
# 8 units in the last place for float32, half a unit for bfloat16), added to
# 2 x the reference's own error: guards against a reference that happens to be
# (nearly) exact in low precision.
SLACK = {torch.float32: 1e-6, torch.bfloat16: 2e-3, torch.float16: 5e-4}


def max_err(x, x64) -> float:
    return float((x.detach().to(device="cpu", dtype=F64) - x64.detach().to(device="cpu", dtype=F64)).abs().max())


class ErrorTally:
    """Accumulates, per quantity and over several random trials, the max-abs
    error against float64 of the op and of the reference run in `dtype`;
    check() asserts  sum(op errors) <= factor * sum(reference errors) + slack.
    Summing over trials keeps one lucky, nearly exact reference value (a
    scalar loss, say) from making the bound meaningless or flaky."""

    def __init__(self, dtype, factor=2.0):
        self.dtype, self.factor, self.rows = dtype, factor, {}

    def add(self, name, op_val, ref_lowp, ref64, scale=None):
        """scale: the magnitude of the terms behind the value (default max |ref64|)."""
        e_op, e_ref = max_err(op_val, ref64), max_err(ref_lowp, ref64)
        assert math.isfinite(e_op), f"{name}: op value is not finite"
        if scale is None:
            scale = float(ref64.detach().abs().max()) if ref64.numel() else 0.0
        row = self.rows.setdefault(name, [0.0, 0.0, 0.0, 0])
        row[0] += e_op
        row[1] += e_ref
        row[2] += max(scale, 1e-3)
        row[3] += 1

    def check(self):
        bad = []
        for name, (e_op, e_ref, scale, n) in self.rows.items():
            bound = self.factor * e_ref + SLACK[self.dtype] * scale
            if not e_op <= bound:
                bad.append(f"{name} ({self.dtype}, {n} trials): op error {e_op:.3e} > bound {bound:.3e} "
                           f"(reference error {e_ref:.3e}, magnitude {scale:.3e})")
        assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------
# group_advantages
# --------------------------------------------------------------------------
def offsets_of(sizes):
    """Group sizes -> group_offsets [P+1] int64."""
    return torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist(), dtype=torch.int64)


def random_group_inputs(g, sizes, *, correct=True, rts=True, nan_share=0.3, dtype=F64, device="cpu"):
    """Rewards in groups of the given sizes: about a third of the groups are
    all-incorrect; rewards are the outcome (1 correct / 0 not) plus noise, and
    one group in four has identical rewards. Returns (rewards, correct, rts)."""
    N = sum(sizes)
    corr = torch.rand(N, generator=g) < 0.45
    r = torch.empty(N, dtype=F64)
    start = 0
    for k, n in enumerate(sizes):
        kind = int(torch.randint(4, (1,), generator=g))
        sl = slice(start, start + n)
        if kind == 0:
            corr[sl] = False
        if kind == 1:  # identical rewards inside the group
            r[sl] = float(torch.randn(1, generator=g, dtype=F64))
        else:
            r[sl] = corr[sl].to(F64) + 0.3 * torch.randn(n, generator=g, dtype=F64)
        start += n
    s = torch.rand(N, generator=g, dtype=F64)
    s[torch.rand(N, generator=g) < nan_share] = float("nan")
    return (r.to(device=device, dtype=dtype),
            corr.to(device) if correct else None,
            s.to(device) if rts else None)


def credit_settings(**overrides):
    """Every setting reference.group_advantages requires (its keyword-only
    arguments), at options.CREDIT's defaults (the wrapper's) unless overridden."""
    names = [p.name for p in inspect.signature(reference.group_advantages).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return {**{name: getattr(CREDIT, name) for name in names}, **overrides}


def reference_group_advantages(rewards, offsets, correct, rts, **kw):
    """The reference on the float64 upcast of (possibly low-precision) inputs;
    kw: the settings given to the op (the rest at their defaults)."""
    return reference.group_advantages(
        rewards.cpu().to(F64), offsets.cpu(), None if correct is None else correct.cpu(),
        None if rts is None else rts.cpu().to(F64), **credit_settings(**kw))


def check_group_advantages(rewards, *, group_size=None, sizes=None, correct=None, rts=None,
                           rtol=1e-10, atol=1e-10, **kw):
    """ops.group_advantages against the float64 reference (every output)."""
    if group_size is not None:
        offs = torch.arange(0, rewards.shape[0] + 1, group_size)
        out = ops.group_advantages(rewards, group_size=group_size, correct=correct, rts=rts, **kw)
    else:
        offs = offsets_of(sizes)
        out = ops.group_advantages(rewards, group_offsets=offs.to(rewards.device), correct=correct, rts=rts, **kw)
    ref = reference_group_advantages(rewards, offs, correct, rts, **kw)
    want = F64 if rewards.dtype == F64 else torch.float32
    for name, got, exp in zip(out._fields, out, ref):
        assert got.device == rewards.device, name
        if name == "all_negative":
            assert got.dtype == torch.bool
            assert torch.equal(got.cpu(), exp), f"{name}: {got} vs {exp}"
            continue
        assert got.dtype == want, f"{name}: dtype {got.dtype}, expected {want}"
        assert not torch.isnan(got).any(), name
        torch.testing.assert_close(got.cpu().to(F64), exp.to(F64), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    return out, ref


# --------------------------------------------------------------------------
# fused LM-head ops
# --------------------------------------------------------------------------
def lm_inputs(g, B, T, H, V, *, dtype=F64, bias=False, device="cpu", hidden_scale=1.0):
    """hidden [B, T, H] (or [N, H] with B=None), weight [V, H], bias [V]?,
    targets [B, T]; logits come out at a scale of a few units."""
    shape = (T,) if B is None else (B, T)
    hidden = randn(g, *shape, H, dtype=dtype, device=device, scale=hidden_scale)
    weight = randn(g, V, H, dtype=dtype, device=device, scale=1.5 / math.sqrt(H))
    b = randn(g, V, dtype=dtype, device=device, scale=0.5) if bias else None
    targets = randint(g, 0, V, *shape, device=device)
    return hidden, weight, b, targets


def _grad_inputs(hidden, weight, bias):
    leaves = [hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())
    return leaves


def run_policy_loss(fn, hidden, weight, bias, targets, mask, advantages, **kw):
    """fn = ops.fused_policy_loss or a reference adapter. Returns (loss,
    metrics, grads) with grads to (hidden, weight[, bias]) by autograd."""
    leaves = _grad_inputs(hidden, weight, bias)
    b = leaves[2] if bias is not None else None
    loss, metrics = fn(leaves[0], leaves[1], targets, mask, advantages, bias=b, **kw)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads)]
    return loss.detach(), {k: v.detach() for k, v in metrics.items()}, grads


def ref_policy_loss(hidden, weight, targets, mask, advantages, *, bias=None, chunk_size=None, **kw):
    """reference.fused_policy_loss with the op's keyword signature (it has no chunking)."""
    return reference.fused_policy_loss(hidden, weight, targets, mask, advantages, bias=bias, **kw)


def to64(*ts):
    return [None if t is None else (t.detach().cpu().to(F64) if t.is_floating_point() else t.cpu()) for t in ts]


def check_policy_loss(inputs, kw, *, rtol=1e-9, atol=1e-11, check_metrics=True):
    """ops.fused_policy_loss against the reference in float64: loss, metrics, grads."""
    hidden, weight, bias, targets, mask, adv = inputs
    loss, met, grads = run_policy_loss(ops.fused_policy_loss, *inputs, **kw)
    rkw = {k: (to64(v)[0] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    rloss, rmet, rgrads = run_policy_loss(ref_policy_loss, *to64(*inputs), **rkw)
    assert loss.device == hidden.device
    torch.testing.assert_close(loss.cpu().to(F64), rloss, rtol=rtol, atol=atol, msg=lambda m: f"loss: {m}")
    for name, gr, rg in zip(("hidden", "weight", "bias"), grads, rgrads):
        assert gr.shape == rg.shape and gr.dtype == hidden.dtype, name
        torch.testing.assert_close(gr.cpu().to(F64), rg, rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad {n}: {m}")
    if check_metrics:
        assert set(met) == set(rmet), (sorted(met), sorted(rmet))
        for k in sorted(rmet):
            torch.testing.assert_close(met[k].cpu().to(F64), rmet[k], rtol=rtol, atol=atol,
                                       msg=lambda m, k=k: f"metric {k}: {m}")
    return (loss, met, grads), (rloss, rmet, rgrads)


def policy_case(g, B, T, H, V, *, dtype=F64, device="cpu", bias=False, adv_2d=False, off_policy=False,
                noise=0.3, ref=False, mask="random"):
    """Inputs (hidden, weight, bias, targets, mask, advantages) and the
    old_logp / ref_logp keyword arguments of one random policy-loss case.
    Off-policy old_logp = reference logp + noise, so ratios spread across the
    clip range."""
    hidden, weight, b, targets = lm_inputs(g, B, T, H, V, dtype=dtype, bias=bias, device=device)
    if mask == "random":
        m = (torch.rand(B, T, generator=g) < 0.75).to(F64)
        m[0, 0] = 1.0  # at least one completion token
    elif mask == "float":
        m = torch.rand(B, T, generator=g, dtype=F64) * (torch.rand(B, T, generator=g) < 0.8)
        m[0, 0] = 0.6
    else:
        m = torch.ones(B, T, dtype=F64)
    m = m.to(device=device, dtype=dtype)
    adv = randn(g, *((B, T) if adv_2d else (B,)), dtype=dtype, device=device)
    kw = {}
    if off_policy or ref:
        logp64 = reference.fused_logprobs(*to64(hidden, weight, targets), bias=to64(b)[0])
    if off_policy:
        kw["old_logp"] = (logp64 + noise * torch.randn(B, T, generator=g, dtype=F64)).to(device=device, dtype=dtype)
    if ref:
        kw["ref_logp"] = (logp64 + 0.5 * torch.randn(B, T, generator=g, dtype=F64)).to(device=device, dtype=dtype)
    return (hidden, weight, b, targets, m, adv), kw


def check_policy_loss_lowp(tally, inputs64, kw64, device="cpu", aux_dtype=None):
    """Run op and reference in tally.dtype and add their errors against the
    float64 reference to `tally`: loss, kl_mean and grads. hidden / weight /
    bias are in tally.dtype; mask, advantages, old_logp and ref_logp in
    aux_dtype (default: the same; float32 is what fused_logprobs returns)."""
    dtype, aux = tally.dtype, aux_dtype or tally.dtype
    to = lambda t, d: None if t is None else (t.to(device=device, dtype=d) if t.is_floating_point() else t.to(device))
    low_in = [to(t, dtype if i < 3 else aux) for i, t in enumerate(inputs64)]
    low_kw = {k: to(v, aux) if isinstance(v, torch.Tensor) else v for k, v in kw64.items()}
    # the float64 reference sees exactly the low-precision values, upcast
    in64 = to64(*low_in)
    k64 = {k: to64(v)[0] if isinstance(v, torch.Tensor) else v for k, v in low_kw.items()}
    loss, met, grads = run_policy_loss(ops.fused_policy_loss, *low_in, **low_kw)
    rl, rm, rg = run_policy_loss(ref_policy_loss, *low_in, **low_kw)
    l64, m64, g64 = run_policy_loss(ref_policy_loss, *in64, **k64)
    assert loss.dtype == torch.float32, loss.dtype
    # the loss is a weighted mean of per-token terms of size about |A|
    tally.add("loss", loss, rl, l64, scale=float(in64[5].abs().max()))
    if "kl_mean" in m64:
        tally.add("kl_mean", met["kl_mean"], rm["kl_mean"], m64["kl_mean"])
    for name, a, b, c in zip(("hidden", "weight", "bias"), grads, rg, g64):
        assert a.dtype == dtype, (name, a.dtype)
        tally.add(f"grad {name}", a, b, c)


def lowp_policy_case(g, dtype, level, B=3, T=7, H=32, V=101, temperature=0.9):
    """A float64 policy-loss case for a low-precision comparison. old_logp sits
    at |log ratio| in {0.05, 0.5} from the log-probs of the dtype-rounded
    inputs (per sequence for sequence level), away from the clip edges
    (log 0.8, log 1.2), so rounding cannot flip a token's clip branch."""
    inputs, _ = policy_case(g, B, T, H, V, bias=True, adv_2d=True)
    hidden, weight, b, targets, mask, adv = inputs
    r = lambda t: t.to(dtype).to(F64)
    logp = reference.fused_logprobs(r(hidden), r(weight), targets, r(b), temperature=temperature)
    mag = torch.where(torch.rand(B, T, generator=g) < 0.5, 0.05, 0.5).to(F64)
    sign = torch.where(torch.rand(B, T, generator=g) < 0.5, -1.0, 1.0).to(F64)
    if level == "sequence":
        mag, sign = mag[:, :1].expand(B, T), sign[:, :1].expand(B, T)
    kw = dict(old_logp=logp + mag * sign, ref_logp=logp + 0.3 * randn(g, B, T), beta=0.05,
              importance_sampling_level=level, chunk_size=5, temperature=temperature)
    return inputs, kw


def check_logprobs(hidden, weight, targets, bias=None, *, temperature=1.0, chunk_size=None, g=None, rtol=1e-10,
                   atol=1e-11):
    """ops.fused_logprobs (logp, entropy, and the logp gradient under a random
    cotangent drawn from g) against the reference, float64 inputs."""
    assert hidden.dtype == F64, "float64 check; see check_logprobs_lowp"
    lp, ent = ops.fused_logprobs(hidden, weight, targets, bias=bias, temperature=temperature,
                                 chunk_size=chunk_size, return_entropy=True)
    lp_only = ops.fused_logprobs(hidden, weight, targets, bias=bias, temperature=temperature, chunk_size=chunk_size)
    h64, w64, b64, t64 = to64(hidden, weight, bias, targets)
    rlp, rent = reference.fused_logprobs(h64, w64, t64, b64, temperature, return_entropy=True)
    want = F64 if hidden.dtype == F64 else torch.float32
    assert lp.dtype == want and ent.dtype == want and lp.shape == targets.shape and ent.shape == targets.shape
    torch.testing.assert_close(lp.cpu().to(F64), rlp, rtol=rtol, atol=atol)
    torch.testing.assert_close(lp_only.cpu().to(F64), rlp, rtol=rtol, atol=atol)
    torch.testing.assert_close(ent.cpu().to(F64), rent, rtol=rtol, atol=atol)
    # gradient of <cotangent, logp> to hidden, weight, bias
    cot = torch.randn(targets.shape, generator=g if g is not None else torch.Generator().manual_seed(0), dtype=F64)
    leaves = _grad_inputs(hidden, weight, bias)
    out = ops.fused_logprobs(leaves[0], leaves[1], targets, bias=leaves[2] if bias is not None else None,
                             temperature=temperature, chunk_size=chunk_size)
    grads = torch.autograd.grad((out.to(F64) * cot.to(out.device)).sum(), leaves)
    rleaves = _grad_inputs(h64, w64, b64)
    rout = reference.fused_logprobs(rleaves[0], rleaves[1], t64, rleaves[2] if bias is not None else None,
                                    temperature)
    rgrads = torch.autograd.grad((rout * cot).sum(), rleaves)
    for name, a, b in zip(("hidden", "weight", "bias"), grads, rgrads):
        assert a.dtype == F64, name
        torch.testing.assert_close(a.cpu(), b, rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad {n}: {m}")
    return (lp, ent, grads), (rlp, rent, rgrads)


def check_logprobs_lowp(tally, g, device="cpu", B=3, T=7, H=32, V=101, temperature=0.8, chunk_size=4):
    """fused_logprobs in tally.dtype: logp, entropy and the logp gradients,
    errors against float64 added to `tally`."""
    dtype = tally.dtype
    low = [t.to(device=device, dtype=dtype) for t in lm_inputs(g, B, T, H, V, bias=True)[:3]]
    targets = randint(g, 0, V, B, T, device=device)
    cot = randn(g, B, T, device=device)
    lp, ent = ops.fused_logprobs(*low[:2], targets, bias=low[2], temperature=temperature, chunk_size=chunk_size,
                                 return_entropy=True)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    rlp, rent = reference.fused_logprobs(*low[:2], targets, low[2], temperature, return_entropy=True)
    in64 = to64(*low)
    lp64, ent64 = reference.fused_logprobs(*in64[:2], targets.cpu(), in64[2], temperature, return_entropy=True)
    tally.add("logp", lp, rlp, lp64)
    tally.add("entropy", ent, rent, ent64)

    def grads(fn, leaves, tg):
        leaves = [t.detach().clone().requires_grad_() for t in leaves]
        out = fn(leaves[0], leaves[1], tg, leaves[2])
        return torch.autograd.grad((out.to(F64) * cot.to(out.device)).sum(), leaves)

    g_op = grads(lambda h, w, t, b: ops.fused_logprobs(h, w, t, bias=b, temperature=temperature,
                                                        chunk_size=chunk_size), low, targets)
    g_ref = grads(lambda h, w, t, b: reference.fused_logprobs(h, w, t, b, temperature), low, targets)
    g64 = grads(lambda h, w, t, b: reference.fused_logprobs(h, w, t, b, temperature), in64, targets.cpu())
    for name, a, r, e in zip(("hidden", "weight", "bias"), g_op, g_ref, g64):
        assert a.dtype == dtype, (name, a.dtype)
        tally.add(f"grad {name}", a, r, e)


# --------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------
TEMPERATURES = (0.0, 0.5, 1.0, 2.0)
TOP_PS = (1.0, 0.9, 0.5, 0.01)
MIN_PS = (0.0, 0.05, 0.5)


def top_ks(V):
    return sorted({0, 1, 3, max(V - 1, 0), V, V + 5})


def sample_grid(g, V, device="cpu", dtype=F64, reps=1):
    """Every combination of the parameter grid (reps times), one random row of
    logits per combination, with random uniforms plus a few edge uniforms.
    Returns (logits [B, V], temperature, top_k, top_p, min_p, uniform)."""
    combos = [(t, k, p, m) for t in TEMPERATURES for k in top_ks(V) for p in TOP_PS for m in MIN_PS] * reps
    B = len(combos)
    temp = torch.tensor([c[0] for c in combos], dtype=F64)
    k = torch.tensor([c[1] for c in combos], dtype=torch.int64)
    p = torch.tensor([c[2] for c in combos], dtype=F64)
    m = torch.tensor([c[3] for c in combos], dtype=F64)
    scale = torch.where(torch.rand(B, 1, generator=g) < 0.5, 1.0, 3.0).to(F64)
    logits = torch.randn(B, V, generator=g, dtype=F64) * scale
    u = torch.rand(B, generator=g, dtype=F64)
    u[::17] = 0.0
    u[5::17] = 1.0 - 2.0 ** -53  # the largest double below 1
    dev = lambda t: t.to(device)
    return dev(logits.to(dtype)), dev(temp), dev(k), dev(p), dev(m), dev(u)


def check_sample_exact(logits, temp, k, p, m, u):
    """torch.ops.sgpo.sample against reference.sample token by token (same
    uniforms), and the log-probs against log_softmax(logits / T)[token]."""
    tok, lp = torch.ops.sgpo.sample(logits, temp, k, p, m, u)
    rtok, rlp = reference.sample(*(t.cpu() for t in (logits, temp, k, p, m, u)))
    assert tok.dtype == torch.int64 and tok.device == logits.device
    assert lp.dtype == (F64 if logits.dtype == F64 else torch.float32)
    bad = (tok.cpu() != rtok).nonzero().flatten().tolist()
    assert not bad, (f"{len(bad)}/{len(tok)} rows differ, first row {bad[0]}: op {int(tok[bad[0]])} ref "
                     f"{int(rtok[bad[0]])}, params T={float(temp[bad[0]])} k={int(k[bad[0]])} "
                     f"p={float(p[bad[0]])} min_p={float(m[bad[0]])} u={float(u[bad[0]])}")
    t_eff = torch.where(temp.cpu() == 0, 1.0, temp.cpu())
    want = torch.log_softmax(logits.cpu().to(F64) / t_eff[:, None], -1).gather(1, rtok[:, None]).squeeze(1)
    torch.testing.assert_close(lp.cpu().to(F64), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rlp.to(F64), want, rtol=1e-10, atol=1e-10)  # the spec agrees with itself
    return tok, lp


def chi_square_check(logits_row, *, n=20000, seed=0, device="cpu", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """Draw n tokens from ops.sample on n identical rows; chi-square test of
    the counts against reference.filtered_distribution; excluded tokens are
    never drawn. Returns the p-value."""
    from scipy.stats import chisquare

    V = logits_row.numel()
    logits = logits_row.to(device).expand(n, V).contiguous()
    g = torch.Generator(device=device).manual_seed(seed)
    tok, _ = ops.sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, generator=g)
    counts = torch.bincount(tok.cpu(), minlength=V).to(F64)
    probs = reference.filtered_distribution(logits_row.cpu(), temperature, top_k, top_p, min_p)
    excluded = probs == 0
    assert counts[excluded].sum() == 0, f"excluded tokens drawn: {counts[excluded]}"
    kept = ~excluded
    if int(kept.sum()) == 1:
        assert counts[kept].item() == n
        return 1.0
    expected = probs[kept] * n
    assert expected.min() >= 5, "test design: expected counts too small for chi-square"
    pval = float(chisquare(counts[kept].numpy(), expected.numpy()).pvalue)
    assert pval > 1e-3, f"chi-square p = {pval:.2e}: counts {counts[kept].tolist()} vs expected {expected.tolist()}"
    return pval


CHI_SQUARE_SETTINGS = [
    dict(),
    dict(temperature=0.7),
    dict(temperature=1.5, top_k=5),
    dict(top_p=0.8),
    dict(min_p=0.1),
    dict(temperature=1.3, top_k=8, top_p=0.9, min_p=0.05),
    dict(top_k=1),
]


def chi_square_logits(V=12):
    """A fixed, spread-out row: probabilities from about 0.5 % to 25 %."""
    return torch.linspace(-2.0, 2.0, V, dtype=F64)[torch.randperm(V, generator=torch.Generator().manual_seed(7))]


# --------------------------------------------------------------------------
# decode_attention
# --------------------------------------------------------------------------
def random_cache(seed, dtype, S=7, Hq=8, Hkv=2, D=16, P=3, Lp=9, C=10, Ls=6, device="cpu"):
    """Arguments of decode_attention with ragged lengths: a prompt with no
    keys, rows with empty suffixes, slots in random order."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(dtype)
    q, pk, pv, sk, sv = r(S, Hq, D), r(P, Hkv, Lp, D), r(P, Hkv, Lp, D), r(C, Hkv, Ls, D), r(C, Hkv, Ls, D)
    plen = torch.randint(0, Lp + 1, (P,), generator=g)
    plen[0] = 0  # a prompt with no keys
    pof = torch.randint(0, P, (S,), generator=g)
    slen = torch.randint(0, Ls + 1, (S,), generator=g)
    slot = torch.randperm(C, generator=g)[:S]
    return tuple(t.to(device) for t in (q, pk, pv, plen, pof, sk, sv, slen, slot))


def check_decode_attention(args, *, window=0, rtol=1e-12, atol=1e-12):
    """ops.decode_attention on `args` (any device, any dtype) against the
    float64 reference on CPU; finite everywhere (rows without keys give 0)."""
    got = ops.decode_attention(*args, window=window)
    args64 = [a.cpu().double() if a.is_floating_point() else a.cpu() for a in args]
    want = reference.decode_attention(*args64, scale=args[0].shape[-1] ** -0.5, window=window)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol)
