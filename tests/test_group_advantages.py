"""ops.group_advantages against reference.group_advantages (docs/design.md section 3)."""
import math
import statistics

import pytest
import torch

from op_checks import F64, check_group_advantages, offsets_of, random_group_inputs
from sgpo_engine import ops, options

GROUP_SIZES = (1, 2, 3, 7, 8, 16)
RAGGED = ([1, 3, 1, 7, 2, 1, 16, 8], [5], [1], [2, 1, 1, 4, 3])


def random_params(g):
    """Non-default credit parameters, drawn per case."""
    return dict(credit_beta=float(torch.empty(1).uniform_(1.0, 10.0, generator=g)),
                credit_gamma=float(torch.rand(1, generator=g)),
                credit_scale=float(torch.empty(1).uniform_(0.1, 0.9, generator=g)),
                # binds for some credited groups, not others; 0 (off) a third of the time
                credited_std_floor=float(torch.rand(1, generator=g) * 0.6) * (torch.rand(1, generator=g) > 0.33).item())


@pytest.mark.parametrize("scale", options.SCALES)
@pytest.mark.parametrize("credit", options.CREDITS)
@pytest.mark.parametrize("scope", options.SCOPES)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_matches_reference_fixed_groups(gen, group_size, scope, credit, scale):
    sizes = [group_size] * 3
    r, c, s = random_group_inputs(gen, sizes)
    kw = dict(scope=scope, credit=credit, scale=scale, **random_params(gen))
    out, _ = check_group_advantages(r, group_size=group_size, correct=c, rts=s, **kw)
    # group_size and the equivalent group_offsets agree exactly
    out2 = ops.group_advantages(r, group_offsets=offsets_of(sizes), correct=c, rts=s, **kw)
    for a, b in zip(out, out2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("scale", options.SCALES)
@pytest.mark.parametrize("credit", options.CREDITS)
@pytest.mark.parametrize("scope", options.SCOPES)
@pytest.mark.parametrize("sizes", RAGGED, ids=lambda s: "-".join(map(str, s)))
def test_matches_reference_ragged(gen, sizes, scope, credit, scale):
    r, c, s = random_group_inputs(gen, sizes)
    check_group_advantages(r, sizes=sizes, correct=c, rts=s, scope=scope, credit=credit, scale=scale,
                           eps=float(torch.empty(1).uniform_(1e-6, 1e-2, generator=gen)),
                           credited_std_floor=float(torch.rand(1, generator=gen) * 0.6))


@pytest.mark.parametrize("nan_share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_rts", [False, True])
@pytest.mark.parametrize("with_correct", [False, True])
@pytest.mark.parametrize("scope", options.SCOPES)
def test_credit_inputs_present_or_not(gen, scope, with_correct, with_rts, nan_share):
    sizes = [3, 1, 8, 2, 8]
    r, c, s = random_group_inputs(gen, sizes, correct=with_correct, rts=with_rts, nan_share=nan_share)
    out, _ = check_group_advantages(r, sizes=sizes, correct=c, rts=s, scope=scope)
    if not (with_correct and with_rts) or scope == "off" or nan_share == 1.0:
        # no credit: the used rewards are the outcome rewards, bit for bit
        assert torch.equal(out.rewards, r)


def test_correct_as_int_tensor_is_bool(gen):
    sizes = [4, 4, 4]
    r, c, s = random_group_inputs(gen, sizes)
    a = ops.group_advantages(r, group_size=4, correct=c, rts=s)
    b = ops.group_advantages(r, group_size=4, correct=c.to(torch.int64), rts=s)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_non_contiguous_inputs(gen):
    sizes = [4] * 6
    r, c, s = random_group_inputs(gen, sizes)
    strided = lambda t: torch.stack([t, t], 1)[:, 1]  # stride 2
    rs, cs, ss = strided(r), strided(c), strided(s)
    assert not any(t.is_contiguous() for t in (rs, cs, ss))
    check_group_advantages(rs, group_size=4, correct=cs, rts=ss)
    check_group_advantages(rs, sizes=sizes, correct=cs, rts=ss, scale="batch")


def test_without_correct_positive_reward_counts_as_correct():
    r = torch.tensor([0.0, -1.0, 0.0, 0.0, 0.5, -2.0, 1.0], dtype=F64)
    out = ops.group_advantages(r, group_offsets=torch.tensor([0, 3, 5, 6, 7]))
    assert out.all_negative.tolist() == [True, False, True, False]


@pytest.mark.parametrize("scope", options.SCOPES)
def test_all_negative_flags(gen, scope):
    sizes = [3, 3, 1, 1, 4, 2]
    c = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=torch.bool)
    r = c.to(F64) * 0  # the flags follow `correct`, not the rewards
    s = torch.rand(14, generator=gen, dtype=F64)
    out = ops.group_advantages(r, group_offsets=offsets_of(sizes), correct=c, rts=s, scope=scope)
    assert out.all_negative.tolist() == [True, False, True, False, False, True]


# ---- exact zeros -------------------------------------------------------------
@pytest.mark.parametrize("scale", ["group", "none"])
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_all_equal_rewards_give_exact_zero(gen, group_size, scale):
    # awkward values whose mean is not exactly representable by naive summation
    values = [0.1, 1e8 + 0.3, -3.7, float(torch.randn(1, generator=gen, dtype=F64))]
    r = torch.tensor(values, dtype=F64).repeat_interleave(group_size)
    for dtype in (F64, torch.float32):
        out = ops.group_advantages(r.to(dtype), group_size=group_size, scale=scale)
        assert torch.equal(out.advantages, torch.zeros_like(out.advantages)), out.advantages
        assert torch.equal(out.group_std, torch.zeros_like(out.group_std)), out.group_std
        assert torch.equal(out.group_mean, r.to(dtype).to(out.group_mean.dtype)[::group_size])


@pytest.mark.parametrize("scale", ["group", "none"])
def test_all_equal_credit_gives_exact_zero(scale):
    # an all-negative group whose responses all get the same credit
    r = torch.zeros(6, dtype=F64)
    c = torch.zeros(6, dtype=torch.bool)
    s = torch.full((6,), 0.3, dtype=F64)
    out = ops.group_advantages(r, group_size=3, correct=c, rts=s, scale=scale)
    assert torch.equal(out.advantages, torch.zeros(6, dtype=F64))
    assert torch.equal(out.group_std, torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("scale", options.SCALES)
def test_group_of_one(gen, scale):
    r = torch.randn(5, generator=gen, dtype=F64)
    out = ops.group_advantages(r, group_size=1, scale=scale)
    assert torch.equal(out.group_std, torch.zeros(5, dtype=F64))
    assert torch.equal(out.group_mean, r)
    assert torch.equal(out.advantages, torch.zeros(5, dtype=F64))
    # a group of one inside ragged groups
    r2 = torch.randn(6, generator=gen, dtype=F64)
    out2 = ops.group_advantages(r2, group_offsets=torch.tensor([0, 2, 3, 6]), scale=scale)
    assert out2.group_std[1].item() == 0.0 and out2.advantages[2].item() == 0.0


def test_single_reward_batch_scale():
    out = ops.group_advantages(torch.tensor([0.7], dtype=F64), group_size=1, scale="batch")
    assert torch.equal(out.advantages, torch.zeros(1, dtype=F64))


# ---- hand-made credit cases (independent of the reference) ---------------------
def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_hand_made_sigmoid_credit():
    # group 0: all-negative, rts [0, 0.5, 1]; group 1: one correct (no credit
    # under all_negative); group 2: all-negative with an unjudged response.
    r = torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=F64)
    c = torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    nan = float("nan")
    s = torch.tensor([0, 0.5, 1, 0.9, 0.2, nan, 0.8, nan, 0.4], dtype=F64)
    out = ops.group_advantages(r, group_size=3, correct=c, rts=s, credit_beta=5.0, credit_gamma=0.5)
    want = [sigmoid(-2.5), 0.5, sigmoid(2.5), 1.0, 0.0, 0.0, sigmoid(1.5), 0.0, sigmoid(-0.5)]
    torch.testing.assert_close(out.rewards, torch.tensor(want, dtype=F64), rtol=1e-14, atol=1e-15)
    assert out.all_negative.tolist() == [True, False, True]
    for g in range(3):
        grp = want[3 * g:3 * g + 3]
        mu, sd = statistics.fmean(grp), statistics.stdev(grp)
        assert out.group_mean[g].item() == pytest.approx(mu, rel=1e-13, abs=1e-15)
        assert out.group_std[g].item() == pytest.approx(sd, rel=1e-13, abs=1e-15)
        for i in range(3):
            assert out.advantages[3 * g + i].item() == pytest.approx((grp[i] - mu) / (sd + 1e-4), rel=1e-12, abs=1e-14)
    # all_incorrect credits the incorrect responses of group 1 too
    out2 = ops.group_advantages(r, group_size=3, correct=c, rts=s, scope="all_incorrect")
    want[4] = sigmoid(5.0 * (0.2 - 0.5))
    torch.testing.assert_close(out2.rewards, torch.tensor(want, dtype=F64), rtol=1e-14, atol=1e-15)


def test_credited_std_floor_by_hand():
    """Nearly equal credits (std 0.013) would become unit-scale advantages; with the floor
    0.2 the credited group divides by 0.2 + eps. The mixed group's std (also below 0.2) is
    an outcome-reward std and is never floored; nor do scales batch and none change."""
    credits = [0.40, 0.41, 0.42, 0.43]
    rewards = torch.tensor([0.0] * 4 + [1.0, 1.0, 1.0, 0.98], dtype=torch.float64)
    correct = torch.tensor([False] * 4 + [True, True, True, False])
    rts = torch.tensor(credits + [math.nan] * 4, dtype=torch.float64)
    kw = dict(group_size=4, correct=correct, rts=rts, credit="linear", credit_scale=1.0, eps=1e-4)
    off = ops.group_advantages(rewards, **kw)
    on = ops.group_advantages(rewards, credited_std_floor=0.2, **kw)
    std = statistics.stdev(credits)
    mean = statistics.fmean(credits)
    assert std < 0.02 and max(abs(float(a)) for a in off.advantages[:4]) > 1.0  # the phantom gradient
    for i, c in enumerate(credits):
        assert float(off.advantages[i]) == pytest.approx((c - mean) / (std + 1e-4), rel=1e-12)
        assert float(on.advantages[i]) == pytest.approx((c - mean) / (0.2 + 1e-4), rel=1e-12)
    assert torch.equal(on.advantages[4:], off.advantages[4:])  # mixed group: std 0.01 kept
    assert float(on.group_std[0]) == pytest.approx(std, rel=1e-12)  # the reported std is the group's own
    for scale in ("batch", "none"):
        assert torch.equal(ops.group_advantages(rewards, scale=scale, credited_std_floor=0.2, **kw).advantages,
                           ops.group_advantages(rewards, scale=scale, **kw).advantages)
    with pytest.raises(ValueError, match="credited_std_floor"):
        ops.group_advantages(rewards, credited_std_floor=-0.1, **kw)


def test_hand_made_linear_credit():
    r = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=F64)
    c = torch.zeros(4, dtype=torch.bool)
    s = torch.tensor([0.0, 0.25, 1.0, float("nan")], dtype=F64)
    out = ops.group_advantages(r, group_size=4, correct=c, rts=s, credit="linear", credit_scale=0.5, scale="none")
    want = [0.0, 0.125, 0.5, 0.0]
    torch.testing.assert_close(out.rewards, torch.tensor(want, dtype=F64), rtol=0, atol=1e-15)
    mu = sum(want) / 4
    torch.testing.assert_close(out.advantages, torch.tensor(want, dtype=F64) - mu, rtol=0, atol=1e-15)


def test_batch_scale_by_hand(gen):
    r = torch.randn(12, generator=gen, dtype=F64)
    out = ops.group_advantages(r, group_size=4, scale="batch", eps=1e-3)
    mean = r.view(3, 4).mean(1).repeat_interleave(4)
    torch.testing.assert_close(out.advantages, (r - mean) / (r.std() + 1e-3), rtol=1e-12, atol=1e-13)


def test_scope_off_is_plain_grpo(gen):
    G = 4
    c = torch.rand(5 * G, generator=gen) < 0.4
    c[:G] = False
    c[2 * G:3 * G] = False
    r = c.to(F64)  # binary outcome rewards
    s = torch.rand(5 * G, generator=gen, dtype=F64)
    out = ops.group_advantages(r, group_size=G, correct=c, rts=s, scope="off")
    plain = ops.group_advantages(r, group_size=G)
    for a, b in zip(out, plain):
        assert torch.equal(a, b)
    assert torch.equal(out.rewards, r)
    rg = r.view(5, G)
    grpo = ((rg - rg.mean(1, keepdim=True)) / (rg.std(1, keepdim=True) + 1e-4)).flatten()
    torch.testing.assert_close(out.advantages, grpo, rtol=1e-12, atol=1e-14)
    assert torch.equal(out.advantages[:G], torch.zeros(G, dtype=F64))
    assert torch.equal(out.advantages[2 * G:3 * G], torch.zeros(G, dtype=F64))
    # with credit on, the all-negative groups do get a signal
    on = ops.group_advantages(r, group_size=G, correct=c, rts=s)
    assert on.advantages[:G].abs().sum() > 0


# ---- low precision ---------------------------------------------------------------
@pytest.mark.parametrize("scale", options.SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_rewards(gen, dtype, scale):
    sizes = [1, 3, 7, 8, 16, 2]
    r, c, s = random_group_inputs(gen, sizes, dtype=dtype)
    s = s.to(torch.float32)
    # float32 outputs, close to the float64 reference on the same (upcast) values
    check_group_advantages(r, sizes=sizes, correct=c, rts=s, scale=scale, rtol=2e-5, atol=2e-5)


# float32 in fixed groups of 8m runs eight groups per SIMD pass (csrc/cpu/group_advantages.cpp);
# 13 groups = one SIMD pass of 8 + 5 scalar groups.
@pytest.mark.parametrize("scale", options.SCALES)
@pytest.mark.parametrize("credit", options.CREDITS)
@pytest.mark.parametrize("scope", options.SCOPES)
@pytest.mark.parametrize("inputs", ["correct+rts", "rts", "correct", "none"])
@pytest.mark.parametrize("group_size,groups", [(8, 13), (16, 8), (24, 17)])
def test_float32_simd_groups(gen, group_size, groups, inputs, scope, credit, scale):
    r, c, s = random_group_inputs(gen, [group_size] * groups, dtype=torch.float32)
    c = c if "correct" in inputs else None
    s = s.to(torch.float32) if "rts" in inputs else None
    if c is None:  # correctness from the rewards: make some of them positive, some groups all <= 0
        r = torch.where(torch.rand(r.shape, generator=gen) < 0.3, r.abs() + 0.5, -r.abs())
        r.view(groups, group_size)[::3] = -1.0
    kw = dict(scope=scope, credit=credit, scale=scale, **random_params(gen))
    out, _ = check_group_advantages(r, group_size=group_size, correct=c, rts=s, rtol=2e-5, atol=2e-5, **kw)
    # the SIMD moments are the scalar loop's bit for bit (ragged offsets take the scalar loop)
    sizes = [group_size] * (groups - 1) + [group_size - 1, 1]
    ragged = ops.group_advantages(r, group_offsets=offsets_of(sizes), correct=c, rts=s, **kw)
    for a, b in zip(out, ragged):
        # per-response outputs (per-group ones differ in count); the batch std sees the split group
        if a.shape == b.shape and (scale != "batch" or a is out.rewards):
            assert torch.equal(a[:-group_size], b[:-group_size])


@pytest.mark.parametrize("scale", ["group", "none"])
def test_float32_simd_equal_rewards_give_exact_zero(gen, scale):
    r = torch.randn(16, 1, generator=gen).expand(16, 8).reshape(-1).contiguous()  # 16 groups of 8 equal rewards
    out = ops.group_advantages(r, group_size=8, scale=scale, eps=0.0)
    assert torch.equal(out.advantages, torch.zeros_like(r)) and torch.equal(out.group_std, torch.zeros(16))
    assert torch.equal(out.group_mean, r[::8])


@pytest.mark.parametrize("where", [0, 37, 127])
@pytest.mark.parametrize("bad", ["reward nan", "reward inf", "rts 1.5", "rts -0.1"])
def test_float32_simd_bad_values_name_the_tensor(gen, where, bad):
    r = torch.zeros(128)
    rts = torch.rand(128, generator=gen)
    name, value = bad.split()
    (r if name == "reward" else rts)[where] = float(value)
    with pytest.raises(ValueError, match="rewards" if name == "reward" else "rts"):
        ops.group_advantages(r, group_size=8, rts=rts)


# ---- errors ------------------------------------------------------------------------
def _bad_cases():
    r = torch.zeros(6, dtype=F64)
    ok = dict(rewards=r, group_size=3)
    nan = float("nan")
    yield "rewards nan", dict(ok, rewards=torch.tensor([0, nan, 0, 0, 0, 0], dtype=F64)), "rewards"
    yield "rewards inf", dict(ok, rewards=torch.tensor([0, 0, 0, 0, 0, float("inf")], dtype=F64)), "rewards"
    yield "rewards -inf", dict(ok, rewards=torch.tensor([float("-inf")] + [0.0] * 5)), "rewards"
    yield "not divisible", dict(ok, group_size=4), "group_size"
    yield "both", dict(ok, group_offsets=torch.tensor([0, 3, 6])), "group_size"
    yield "neither", dict(rewards=r), "group_size"
    yield "offsets not from 0", dict(rewards=r, group_offsets=torch.tensor([1, 3, 6])), "group_offsets"
    yield "offsets not to N", dict(rewards=r, group_offsets=torch.tensor([0, 3, 5])), "group_offsets"
    yield "offsets past N", dict(rewards=r, group_offsets=torch.tensor([0, 3, 7])), "group_offsets"
    yield "empty group", dict(rewards=r, group_offsets=torch.tensor([0, 3, 3, 6])), "group_offsets"
    yield "decreasing", dict(rewards=r, group_offsets=torch.tensor([0, 4, 2, 6])), "group_offsets"
    yield "offsets float", dict(rewards=r, group_offsets=torch.tensor([0.0, 3.0, 6.0])), "group_offsets"
    yield "correct short", dict(ok, correct=torch.zeros(5, dtype=torch.bool)), "correct"
    yield "correct long", dict(ok, correct=torch.zeros(7, dtype=torch.bool)), "correct"
    yield "rts short", dict(ok, correct=torch.zeros(6, dtype=torch.bool), rts=torch.zeros(5, dtype=F64)), "rts"
    yield "rts above 1", dict(ok, rts=torch.tensor([0, 0.5, 1.01, nan, 0, 0], dtype=F64)), "rts"
    yield "rts below 0", dict(ok, rts=torch.tensor([0, -1e-9, 1, nan, 0, 0], dtype=F64)), "rts"
    yield "rts inf", dict(ok, rts=torch.tensor([0, float("inf"), 1, nan, 0, 0], dtype=F64)), "rts"
    yield "scope", dict(ok, scope="all"), "scope"
    yield "credit", dict(ok, credit="tanh"), "credit"
    yield "scale", dict(ok, scale="std"), "scale"
    yield "2-D rewards", dict(rewards=torch.zeros(2, 3, dtype=F64), group_size=3), "rewards"
    yield "int rewards", dict(rewards=torch.zeros(6, dtype=torch.int64), group_size=3), "rewards"
    yield "bool rewards", dict(rewards=torch.zeros(6, dtype=torch.bool), group_size=3), "rewards"
    yield "empty rewards", dict(rewards=torch.zeros(0, dtype=F64), group_size=1), "rewards"
    yield "group_size 0", dict(ok, group_size=0), "group_size"
    yield "negative eps", dict(ok, eps=-1.0), "eps"
    yield "credit_beta nan", dict(ok, credit_beta=nan), "^credit_beta: "
    yield "credit_gamma inf", dict(ok, credit_gamma=float("inf")), "^credit_gamma: "


BAD = list(_bad_cases())


@pytest.mark.parametrize("kwargs, name", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_value_error_naming_argument(kwargs, name):
    kwargs = dict(kwargs)
    r = kwargs.pop("rewards")
    with pytest.raises(ValueError, match=name):
        ops.group_advantages(r, **kwargs)


# the C++ op owns the checks: called raw, it still raises ValueError naming the argument
def _raw(rewards, offsets=None, rts=None, group_size=0):
    correct = None if rts is None else torch.zeros_like(rewards, dtype=torch.bool)
    return torch.ops.sgpo.group_advantages(rewards, group_size, offsets, correct, rts, "all_negative", "sigmoid",
                                           5.0, 0.5, 0.5, "group", 1e-4)


@pytest.mark.parametrize("case, name", [
    (dict(offsets=torch.tensor([0, 4, 2, 6])), "group_offsets"),
    (dict(offsets=torch.tensor([0, 3, 3, 6])), "group_offsets"),
    (dict(offsets=torch.tensor([1, 3, 6])), "group_offsets"),
    (dict(group_size=4), "group_size"),
    (dict(group_size=3, rts=torch.tensor([0, 0, 2.0, 0, 0, 0], dtype=F64)), "rts"),
    (dict(group_size=3, nonfinite=True), "rewards"),
], ids=["decreasing", "empty", "start", "divisible", "rts", "nonfinite"])
def test_raw_op_checks(case, name):
    case = dict(case)
    r = torch.zeros(6, dtype=F64)
    if case.pop("nonfinite", False):
        r[4] = float("nan")
    with pytest.raises(ValueError, match=name):
        _raw(r, **case)


def test_offsets_as_a_list_or_a_strided_view(gen):
    """Offsets are taken as given: a Python list (moved to the rewards' device)
    and a non-contiguous view are read by value, also by the raw op's check."""
    r, c, s = random_group_inputs(gen, [2, 5, 1])
    want = ops.group_advantages(r, group_offsets=torch.tensor([0, 2, 7, 8]), correct=c, rts=s)
    got = ops.group_advantages(r, group_offsets=[0, 2, 7, 8], correct=c, rts=s)
    strided = torch.tensor([0, 99, 2, 99, 7, 99, 8])[::2]
    raw = torch.ops.sgpo.group_advantages(r, 0, strided, c, s, "all_negative", "sigmoid", 5.0, 0.5, 0.5, "group",
                                          1e-4)
    for a, b, x in zip(want, got, raw):
        assert torch.equal(a, b) and torch.equal(a, x)
