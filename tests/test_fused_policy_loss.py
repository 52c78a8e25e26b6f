"""ops.fused_policy_loss and ops.fused_logprobs against the reference (docs/design.md section 3)."""
import pytest
import torch

from op_checks import (F64, ErrorTally, check_logprobs, check_logprobs_lowp, check_policy_loss, check_policy_loss_lowp,
                     lm_inputs, lowp_policy_case, policy_case, randn, ref_policy_loss, run_policy_loss)
from sgpo_engine import ops, options, reference

LOSS_TYPES = options.LOSS_TYPES
LEVELS = options.IS_LEVELS

# (B, T, H, V): V and B*T not multiples of any vector width
SHAPES = [(1, 13, 8, 37), (3, 5, 6, 101), (4, 3, 5, 7)]

# Feature combinations, each run for every loss_type x level. `off` = off-policy.
CONFIGS = {
    "plain": dict(shape=0, off=False, bias=False, adv_2d=False, ref=False, kw=dict(), chunk=None),
    "off-bias-adv2d-temp": dict(shape=1, off=True, bias=True, adv_2d=True, ref=False,
                                kw=dict(temperature=0.7), chunk=4),
    "off-delta-kl": dict(shape=2, off=True, bias=False, adv_2d=False, ref=True,
                         kw=dict(delta=1.3, beta=0.1, eps_low=0.1, eps_high=0.28, use_bias_correction_kl=True),
                         chunk=1),
    "on-kl-temp-mcl": dict(shape=0, off=False, bias=True, adv_2d=True, ref=True,
                           kw=dict(beta=0.04, temperature=1.6, max_completion_length=20, num_items_in_batch=11.0),
                           chunk=5),
    "off-refbeta0-nib": dict(shape=1, off=True, bias=False, adv_2d=False, ref=True,
                             kw=dict(beta=0.0, num_items_in_batch=7, max_completion_length=9), chunk=1000),
    # on-policy the ratio is 1 but still carries a gradient into the KL term
    "on-kl-bias-corrected": dict(shape=1, off=False, bias=False, adv_2d=True, ref=True,
                                 kw=dict(beta=0.3, use_bias_correction_kl=True), chunk=3),
    "on-delta-below-1": dict(shape=2, off=False, bias=True, adv_2d=False, ref=False, kw=dict(delta=0.9), chunk=2),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_matches_reference(gen, loss_type, level, config):
    c = CONFIGS[config]
    inputs, kw = policy_case(gen, *SHAPES[c["shape"]], bias=c["bias"], adv_2d=c["adv_2d"], off_policy=c["off"],
                             ref=c["ref"])
    kw.update(c["kw"], loss_type=loss_type, importance_sampling_level=level, chunk_size=c["chunk"])
    check_policy_loss(inputs, kw)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 16, None])
@pytest.mark.parametrize("level", LEVELS)
def test_chunk_sizes(gen, level, chunk_size):
    # N = B * T = 13 tokens; 16 > N
    inputs, kw = policy_case(gen, 1, 13, 8, 101, bias=True, off_policy=True, ref=True)
    kw.update(beta=0.05, importance_sampling_level=level, chunk_size=chunk_size, loss_type="grpo")
    check_policy_loss(inputs, kw)


@pytest.mark.parametrize("level", LEVELS)
def test_off_policy_clip_metrics_nonzero(gen, level):
    """Off-policy ratios spread across the clip range: both clip metrics are
    nonzero and match the reference (guards against metrics stuck at 0)."""
    B, T = (6, 8)
    inputs, kw = policy_case(gen, B, T, 8, 37, off_policy=True, noise=0.6, mask="ones")
    hidden, weight, b, targets, mask, _ = inputs
    if level == "sequence":  # one offset per sequence so sequence ratios leave the clip range too
        logp = reference.fused_logprobs(hidden, weight, targets)
        kw["old_logp"] = logp + torch.tensor([0.5, -0.5, 0.4, -0.4, 0.05, -0.05], dtype=F64)[:, None]
    adv = torch.tensor([1.0, -1.0, -0.5, 0.7, 0.3, -0.2], dtype=F64)[:, None].expand(B, T).contiguous()
    (_, met, _), (_, rmet, _) = check_policy_loss((hidden, weight, b, targets, mask, adv), kw)
    assert met["clip_ratio_low"] > 0 and met["clip_ratio_high"] > 0, met


def test_kl_mean_metric(gen):
    inputs, kw = policy_case(gen, 3, 5, 6, 37, ref=True, off_policy=True, mask="ones")
    (_, met, _), _ = check_policy_loss(inputs, dict(kw, beta=0.0))
    hidden, weight, _, targets, _, _ = inputs
    d = kw["ref_logp"] - reference.fused_logprobs(hidden, weight, targets)
    torch.testing.assert_close(met["kl_mean"], (d.exp() - d - 1).mean(), rtol=1e-10, atol=1e-12)
    assert met["kl_mean"] > 0
    # no ref_logp: no kl_mean
    loss, met2 = ops.fused_policy_loss(*inputs[:2], *inputs[3:], bias=None, old_logp=kw["old_logp"])
    assert "kl_mean" not in met2


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_float_mask(gen, loss_type, level):
    """A mask with fractional weights: loss (KL term included), grads and the
    clip metrics match the reference."""
    inputs, kw = policy_case(gen, 3, 5, 6, 37, off_policy=True, ref=True, mask="float", bias=True)
    kw.update(beta=0.1, loss_type=loss_type, importance_sampling_level=level, chunk_size=4)
    (_, met, _), (_, rmet, _) = check_policy_loss(inputs, kw, check_metrics=False)
    for k in ("clip_ratio_low", "clip_ratio_high"):
        torch.testing.assert_close(met[k], rmet[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_float_mask_kl_mean(gen, level):
    """kl_mean is the *masked* mean of k3 (docs/design.md section 3): with a
    fractional mask each token's k3 is weighted by its mask value, exactly like
    the clip metrics. Checked against the reference and by hand."""
    inputs, kw = policy_case(gen, 3, 5, 6, 37, off_policy=True, ref=True, mask="float")
    hidden, weight, _, targets, mask, _ = inputs
    kw.update(beta=0.1, importance_sampling_level=level)
    _, met = ops.fused_policy_loss(hidden, weight, targets, mask, inputs[5], **kw)
    d = kw["ref_logp"] - reference.fused_logprobs(hidden, weight, targets)
    want = ((d.exp() - d - 1) * mask).sum() / mask.sum()
    torch.testing.assert_close(met["kl_mean"].detach(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_fully_masked_sequences(gen, loss_type, level):
    inputs, kw = policy_case(gen, 4, 5, 6, 37, off_policy=True, ref=True, bias=True)
    hidden, weight, b, targets, mask, adv = inputs
    mask = mask.clone()
    mask[1] = 0
    mask[3] = 0
    kw.update(beta=0.1, loss_type=loss_type, importance_sampling_level=level, chunk_size=3)
    (loss, met, grads), _ = check_policy_loss((hidden, weight, b, targets, mask, adv), kw)
    assert torch.equal(grads[0][1], torch.zeros_like(grads[0][1]))
    assert torch.equal(grads[0][3], torch.zeros_like(grads[0][3]))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_fully_masked_batch(gen, loss_type, level, dtype):
    inputs, kw = policy_case(gen, 2, 3, 5, 11, off_policy=True, ref=True, bias=True, dtype=dtype)
    hidden, weight, b, targets, mask, adv = inputs
    kw.update(beta=0.1, loss_type=loss_type, importance_sampling_level=level)
    loss, met, grads = run_policy_loss(ops.fused_policy_loss, hidden, weight, b, targets, torch.zeros_like(mask),
                                       adv, **kw)
    assert loss.item() == 0.0
    for k, v in met.items():
        assert v.item() == 0.0, (k, v)
    for gr in grads:
        assert torch.equal(gr, torch.zeros_like(gr))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aggregation_by_hand(gen, loss_type):
    """Loss aggregation checked against a hand-written formula (not the
    reference): on-policy, token level, no KL, the ratio is 1, so the
    per-token loss is -A (clipped), -min(1, eps_high) A logp (cispo), or
    -sigmoid(0) 4 / tau A = -2 A / tau (sapo)."""
    B, T = 3, 4
    inputs, _ = policy_case(gen, B, T, 5, 13, adv_2d=True, mask="ones")
    hidden, weight, _, targets, mask, adv = inputs
    mask = mask.clone()
    mask[2, 1:] = 0
    mask[0, 3] = 0
    eps_high, tau_pos, tau_neg = 0.7, 0.9, 1.3
    if loss_type == "cispo":
        per = -eps_high * adv * reference.fused_logprobs(hidden, weight, targets) * mask
    elif loss_type == "sapo":
        per = -2 * adv / torch.where(adv > 0, torch.tensor(tau_pos, dtype=F64), torch.tensor(tau_neg, dtype=F64)) * mask
    else:
        per = -adv * mask
    mean_per_sequence, over_5 = (per.sum(1) / mask.sum(1)).mean(), per.sum() / 5.0
    want = {"grpo": mean_per_sequence, "bnpo": per.sum() / mask.sum(), "dapo": over_5,
            "dr_grpo": per.sum() / (B * 11), "cispo": over_5, "sapo": mean_per_sequence}[loss_type]
    loss, _ = ops.fused_policy_loss(hidden, weight, targets, mask, adv, loss_type=loss_type, num_items_in_batch=5,
                                    max_completion_length=11, eps_high=eps_high, sapo_temperature_pos=tau_pos,
                                    sapo_temperature_neg=tau_neg)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("level", LEVELS)
def test_cispo_and_sapo_gradients_by_hand(gen, level):
    """d loss / d logp written out (not through the reference): cispo's ratio
    is detached, so d/dlogp = -w min(r, eps_high) A at every level; sapo's
    d/dratio = -4 s (1 - s) A with s = sigmoid(tau (r - 1)), through the token
    or the sequence ratio. Checked through grad_hidden = sum_t dlogp_t *
    d logp_t / d hidden (the LM head's own derivative, from autograd)."""
    B, T = 3, 5
    inputs, kw = policy_case(gen, B, T, 6, 17, off_policy=True, noise=0.8, mask="ones")
    hidden, weight, _, targets, mask, adv = inputs
    h = hidden.clone().requires_grad_(True)
    logp = reference.fused_logprobs(h, weight, targets)                 # [B, T], differentiable
    old, A = kw["old_logp"], adv[:, None]
    lp = logp.detach()
    log_r = lp - old if level == "token" else ((lp - old).mean(1, keepdim=True)).expand(B, T)
    r = log_r.exp()
    w = 1.0 / (B * T)  # full mask: sapo's (grpo) and cispo's (dapo) aggregation weight alike
    for loss_type in ("cispo", "sapo"):
        if loss_type == "cispo":
            dlogp = -w * torch.clamp(r, max=1.3) * A
        else:
            tau = torch.where(A > 0, torch.tensor(1.0, dtype=F64), torch.tensor(1.05, dtype=F64))
            s = torch.sigmoid(tau * (r - 1))
            d_ratio = -w * 4 * s * (1 - s) * A                          # [B, T]
            dlogp = d_ratio * r if level == "token" else (d_ratio * r).sum(1, keepdim=True).expand(B, T) / T
        want = torch.autograd.grad(logp, h, dlogp, retain_graph=True)[0]
        hh = hidden.clone().requires_grad_(True)
        loss, _ = ops.fused_policy_loss(hh, weight, targets, mask, adv, old_logp=old, eps_high=1.3,
                                        loss_type=loss_type, importance_sampling_level=level)
        loss.backward()
        torch.testing.assert_close(hh.grad, want, rtol=1e-9, atol=1e-12, msg=loss_type)


def test_grads_only_where_asked(gen):
    inputs, kw = policy_case(gen, 2, 5, 6, 17, bias=True, off_policy=True)
    hidden, weight, b, targets, mask, adv = inputs
    h = hidden.clone().requires_grad_()
    loss, _ = ops.fused_policy_loss(h, weight, targets, mask, adv, bias=b, **kw)
    (gh,) = torch.autograd.grad(loss, [h])
    _, _, rgrads = run_policy_loss(ref_policy_loss, *inputs, **kw)
    torch.testing.assert_close(gh, rgrads[0], rtol=1e-10, atol=1e-12)
    # no input requires grad: a plain forward
    with torch.no_grad():
        loss2, _ = ops.fused_policy_loss(h, weight, targets, mask, adv, bias=b, **kw)
    torch.testing.assert_close(loss2, loss.detach(), rtol=1e-13, atol=0)
    # the backward scales by the incoming gradient
    w = weight.clone().requires_grad_()
    loss3, _ = ops.fused_policy_loss(hidden, w, targets, mask, adv, bias=b, **kw)
    (gw3,) = torch.autograd.grad(3.5 * loss3, [w])
    torch.testing.assert_close(gw3, 3.5 * rgrads[1], rtol=1e-10, atol=1e-12)


def test_backward_allocates_nothing_for_a_unit_gradient(gen):
    """The gradients are made in the forward; loss.backward() hands them over:
    no copy, and no zero "gradient" for the op's other outputs (autograd would
    materialize one the size of the weight). Memory counted by the profiler."""
    inputs, kw = policy_case(gen, 4, 33, 16, 4099, bias=True, off_policy=True)
    hidden, weight, b, targets, mask, adv = inputs
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, _ = ops.fused_policy_loss(h, w, targets, mask, adv, bias=b, **kw)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())
    assert allocated < w.numel() * w.element_size() // 4, allocated
    _, _, rgrads = run_policy_loss(ref_policy_loss, *inputs, **kw)
    torch.testing.assert_close(w.grad, rgrads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_non_contiguous_inputs(gen, level):
    """Strided views everywhere: sliced hidden, transposed weight (tied
    embeddings), strided bias, transposed targets / mask / old_logp,
    expanded (stride-0) advantages."""
    B, T, H, V = 3, 5, 6, 37
    hidden = randn(gen, B, 2 * T, H + 3)[:, ::2, 1:H + 1]
    weight = randn(gen, H, V, scale=0.6).t()
    bias = randn(gen, 2 * V)[::2]
    targets = torch.randint(0, V, (T, B), generator=gen).t()
    mask = (torch.rand(T, B, generator=gen) < 0.8).to(F64).t()
    adv = randn(gen, B, 1).expand(B, T)
    logp = reference.fused_logprobs(hidden, weight, targets, bias)
    old = (logp + 0.3 * randn(gen, B, T)).t().contiguous().t()
    ref = (logp + 0.3 * randn(gen, B, T)).t().contiguous().t()
    names = ("hidden", "weight", "bias", "targets", "mask", "adv", "old", "ref")
    contiguous = [n for n, t in zip(names, (hidden, weight, bias, targets, mask, adv, old, ref)) if t.is_contiguous()]
    assert not contiguous, contiguous
    check_policy_loss((hidden, weight, bias, targets, mask, adv),
                      dict(old_logp=old, ref_logp=ref, beta=0.1, importance_sampling_level=level, chunk_size=4))
    check_logprobs(hidden, weight, targets, bias, temperature=0.8, chunk_size=4, g=gen)


def test_int32_targets_and_bool_mask(gen):
    inputs, kw = policy_case(gen, 3, 5, 6, 37, bias=True, off_policy=True)
    hidden, weight, b, targets, mask, adv = inputs
    check_policy_loss((hidden, weight, b, targets.int(), mask.bool(), adv), dict(kw, importance_sampling_level="token"))
    check_logprobs(hidden, weight, targets.int(), b, g=gen)


def test_metrics_are_not_differentiable(gen):
    """The reference returns detached metrics; a metric that requires grad
    would silently get a zero / wrong gradient through the loss's backward."""
    inputs, kw = policy_case(gen, 2, 3, 4, 7, ref=True, off_policy=True)
    hidden = inputs[0].clone().requires_grad_()
    _, met = ops.fused_policy_loss(hidden, inputs[1], *inputs[3:], **kw)
    assert not any(v.requires_grad for v in met.values()), {k: v.requires_grad for k, v in met.items()}


# ---- gradcheck ------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVELS)
def test_gradcheck(gen, level):
    """Finite differences on a tiny float64 case. old_logp is a fixed tensor
    (an on-policy old = logp.detach() moves with the perturbation, so finite
    differences would not see the ratio's gradient), close to logp so every
    ratio sits inside the clip range, away from its kinks."""
    inputs, _ = policy_case(gen, 2, 3, 4, 5, bias=True, adv_2d=True, ref=True)
    hidden, weight, b, targets, mask, adv = inputs
    logp = reference.fused_logprobs(hidden, weight, targets, b)
    old = logp + 0.02 * randn(gen, 2, 3)
    ref = logp + 0.3 * randn(gen, 2, 3)
    mask = mask.clone()
    mask[1, 2] = 0.5

    def f(h, w, bb):
        return ops.fused_policy_loss(h, w, targets, mask, adv, bias=bb, old_logp=old, ref_logp=ref, beta=0.2,
                                     importance_sampling_level=level, temperature=0.8, chunk_size=2,
                                     loss_type="grpo")[0]

    args = [t.detach().clone().requires_grad_() for t in (hidden, weight, b)]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


# ---- low precision ----------------------------------------------------------------
TRIALS = 6  # random cases per low-precision test; errors are summed over them


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("dtype, aux", [(torch.float32, None), (torch.bfloat16, None),
                                        (torch.bfloat16, torch.float32)], ids=["fp32", "bf16", "bf16-fp32aux"])
def test_low_precision_error_bound(gen, dtype, aux, loss_type, level):
    """Op error vs float64 <= ~2x the reference's own error in that dtype.
    aux: mask / advantages / old_logp / ref_logp in the hidden dtype, or in
    float32 (as fused_logprobs returns them) next to bf16 hidden states."""
    tally = ErrorTally(dtype)
    for _ in range(TRIALS):
        inputs, kw = lowp_policy_case(gen, dtype, level)
        check_policy_loss_lowp(tally, inputs, dict(kw, loss_type=loss_type), aux_dtype=aux)
    tally.check()


# ---- fused_logprobs ------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 64, None])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["BTH", "NH"])
def test_logprobs_matches_reference(gen, layout, bias, chunk_size):
    B = None if layout == "NH" else 2
    hidden, weight, b, targets = lm_inputs(gen, B, 13 if B is None else 7, 6, 37, bias=bias)
    temperature = float(torch.empty(1).uniform_(0.5, 2.0, generator=gen))
    check_logprobs(hidden, weight, targets, b, temperature=temperature, chunk_size=chunk_size, g=gen)


def test_logprobs_larger_shape(gen):
    hidden, weight, b, targets = lm_inputs(gen, 3, 11, 24, 257, bias=True)
    check_logprobs(hidden, weight, targets, b, temperature=0.7, chunk_size=10, g=gen)


def test_logprobs_peaked_and_flat_rows(gen):
    # a nearly one-hot row (entropy ~ 0, logp of others very negative) and a flat row
    hidden, weight, b, targets = lm_inputs(gen, None, 3, 4, 9)
    weight = weight.clone()
    hidden = hidden.clone()
    hidden[0] = 0
    weight[:, 0] = 0
    weight[3, 0] = 40.0
    hidden[0, 0] = 1.0
    hidden[1] = 0
    targets = torch.tensor([3, 5, 0])
    (lp, ent, _), _ = check_logprobs(hidden, weight, targets, chunk_size=2, g=gen)
    assert abs(ent[1].item() - torch.log(torch.tensor(9.0, dtype=F64)).item()) < 1e-12
    assert ent[0].item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_logprobs_low_precision(gen, dtype):
    tally = ErrorTally(dtype)
    for _ in range(TRIALS):
        check_logprobs_lowp(tally, gen)
    tally.check()


@pytest.mark.parametrize("bias", [False, True])
def test_logprobs_gradcheck(gen, bias):
    hidden, weight, b, targets = lm_inputs(gen, 2, 3, 4, 6, bias=bias)

    def f(h, w, *bb):
        return ops.fused_logprobs(h, w, targets, bias=bb[0] if bb else None, temperature=0.7, chunk_size=4)

    args = [t.clone().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_logprobs_entropy_not_differentiable(gen):
    """The entropy is documented as not differentiable: it must not pretend to
    be (a gradient through it would silently be dropped)."""
    hidden, weight, _, targets = lm_inputs(gen, 2, 3, 4, 6)
    h = hidden.clone().requires_grad_()
    lp, ent = ops.fused_logprobs(h, weight, targets, return_entropy=True)
    assert lp.requires_grad
    assert not ent.requires_grad, "entropy requires grad, but its gradient is silently zero"


# ---- errors ----------------------------------------------------------------------------
def _loss_args(g, **over):
    hidden, weight, b, targets = lm_inputs(g, 2, 3, 4, 7)
    args = dict(hidden=hidden, weight=weight, targets=targets, mask=torch.ones(2, 3, dtype=F64),
                advantages=torch.randn(2, generator=g, dtype=F64))
    args.update(over)
    return args


def _call_loss(a, **kw):
    a = dict(a)
    return ops.fused_policy_loss(a.pop("hidden"), a.pop("weight"), a.pop("targets"), a.pop("mask"),
                                 a.pop("advantages"), **a, **kw)


LOSS_ERRORS = [
    ("H mismatch", dict(weight=torch.zeros(7, 5, dtype=F64)), {}, "weight"),
    ("dtype mismatch", dict(weight=torch.zeros(7, 4, dtype=torch.float32)), {}, "weight"),
    ("targets shape", dict(targets=torch.zeros(2, 4, dtype=torch.int64)), {}, "targets"),
    ("targets >= V", dict(targets=torch.tensor([[0, 1, 7], [0, 0, 0]])), {}, "targets"),
    ("targets < 0", dict(targets=torch.tensor([[0, 1, -1], [0, 0, 0]])), {}, "targets"),
    ("targets float", dict(targets=torch.zeros(2, 3, dtype=F64)), {}, "targets"),
    ("loss_type", {}, dict(loss_type="ppo"), "loss_type"),
    ("is level", {}, dict(importance_sampling_level="seq"), "importance_sampling_level"),
    ("temperature 0", {}, dict(temperature=0.0), "temperature"),
    ("temperature < 0", {}, dict(temperature=-1.0), "temperature"),
    ("chunk 0", {}, dict(chunk_size=0), "chunk_size"),
    ("adv shape", dict(advantages=torch.zeros(3, dtype=F64)), {}, "advantages"),
    ("adv 2d shape", dict(advantages=torch.zeros(2, 4, dtype=F64)), {}, "advantages"),
    ("negative beta", {}, dict(beta=-0.1), "beta"),
    ("mask shape", dict(mask=torch.ones(2, 4, dtype=F64)), {}, "mask"),
    ("old_logp shape", {}, dict(old_logp=torch.zeros(2, 4, dtype=F64)), "old_logp"),
    ("ref_logp shape", {}, dict(ref_logp=torch.zeros(3, 3, dtype=F64)), "ref_logp"),
    ("bias shape", {}, dict(bias=torch.zeros(6, dtype=F64)), "bias"),
    ("hidden 2-D", dict(hidden=torch.zeros(6, 4, dtype=F64), targets=torch.zeros(6, dtype=torch.int64)), {},
     "hidden"),
]


@pytest.mark.parametrize("over, kw, name", [e[1:] for e in LOSS_ERRORS], ids=[e[0] for e in LOSS_ERRORS])
def test_policy_loss_errors(gen, over, kw, name):
    with pytest.raises((ValueError, RuntimeError), match=name):
        _call_loss(_loss_args(gen, **over), **kw)


def test_bad_input_errors_are_value_errors(gen):
    # bad input is a ValueError naming the argument (docs/design.md section 3), raised by the C++ checks
    for over, kw in [(dict(weight=torch.zeros(7, 5, dtype=F64)), {}), ({}, dict(loss_type="ppo")),
                     ({}, dict(temperature=0.0)), ({}, dict(chunk_size=0)), ({}, dict(beta=-1.0)),
                     (dict(advantages=torch.zeros(3, dtype=F64)), {})]:
        with pytest.raises(ValueError):
            _call_loss(_loss_args(gen, **over), **kw)


LOGPROB_ERRORS = [
    ("H mismatch", dict(weight=torch.zeros(7, 5, dtype=F64)), "weight"),
    ("dtype mismatch", dict(weight=torch.zeros(7, 4, dtype=torch.float32)), "weight"),
    ("targets shape", dict(targets=torch.zeros(3, 2, dtype=torch.int64)), "targets"),
    ("targets >= V", dict(targets=torch.tensor([[0, 1, 7], [0, 0, 0]])), "targets"),
    ("targets < 0", dict(targets=torch.tensor([[0, 1, 0], [-3, 0, 0]])), "targets"),
    ("temperature 0", dict(temperature=0.0), "temperature"),
    ("chunk 0", dict(chunk_size=0), "chunk_size"),
]


@pytest.mark.parametrize("over, name", [e[1:] for e in LOGPROB_ERRORS], ids=[e[0] for e in LOGPROB_ERRORS])
def test_logprobs_errors(gen, over, name):
    hidden, weight, _, targets = lm_inputs(gen, 2, 3, 4, 7)
    a = dict(hidden=hidden, weight=weight, targets=targets)
    a.update(over)
    with pytest.raises((ValueError, RuntimeError), match=name):
        ops.fused_logprobs(a.pop("hidden"), a.pop("weight"), a.pop("targets"), **a)
