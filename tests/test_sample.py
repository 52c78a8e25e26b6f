"""ops.sample against reference.sample (docs/design.md section 3, csrc/common/sampling.h)."""
import pytest
import torch

from op_checks import (CHI_SQUARE_SETTINGS, F64, check_sample_exact, chi_square_check, chi_square_logits, sample_grid,
                     seed_of)
from sgpo_engine import ops, reference


@pytest.mark.parametrize("V", [1, 7, 50, 1000, 4099])
def test_exact_match_with_reference(gen, V):
    """Every combination of temperature / top_k / top_p / min_p, one random
    row each, same uniforms: identical tokens, exact log-probs."""
    check_sample_exact(*sample_grid(gen, V))


def test_exact_match_near_ties(gen):
    """Logits on a coarse grid (many exact ties), so the top-k / top-p / min-p
    boundaries fall on tied weights: ties at a boundary are all kept."""
    logits, t, k, p, m, u = sample_grid(gen, 20)
    logits = (logits * 2).round() / 2
    check_sample_exact(logits, t, k, p, m, u)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_masked_logits(gen, dtype):
    """-inf logits (banned tokens) have weight 0 and are never drawn; a row
    with a single finite logit always gives that token, log-prob exact."""
    logits, t, k, p, m, u = sample_grid(gen, 50)
    logits = logits.clone()
    logits[torch.rand(logits.shape, generator=gen) < 0.5] = float("-inf")
    logits[:, 7] = 0.3  # at least one finite logit per row
    logits[3] = float("-inf")
    logits[3, 11] = 1.0
    low = logits.to(dtype)
    tok, lp = torch.ops.sgpo.sample(low, t, k, p, m, u)
    rtok, _ = reference.sample(low.to(F64), t, k, p, m, u)
    assert torch.isfinite(low.gather(1, tok[:, None])).all()
    assert tok[3] == 11 and lp[3] == 0
    assert not torch.isnan(lp).any()
    if dtype == torch.float64:
        check_sample_exact(low, t, k, p, m, u)
    else:
        assert (tok == rtok).double().mean() > 0.99


@pytest.mark.parametrize("row", ["all -inf", "+inf", "nan"])
@pytest.mark.parametrize("filters", [dict(top_k=5), dict(top_p=0.9), dict(top_k=3, top_p=0.5, min_p=0.1), {}])
def test_row_without_finite_weights_is_a_clear_error(row, filters):
    """The selection histograms take any weight, NaN included (no write past
    their end): the row is then rejected by name."""
    logits = torch.randn(4, 300)
    logits[2] = {"all -inf": float("-inf"), "+inf": float("inf"), "nan": float("nan")}[row]
    with pytest.raises(ValueError, match="logits"):
        ops.sample(logits, temperature=1.0, generator=torch.Generator().manual_seed(0), **filters)


def test_large_logit_scale(gen):
    logits, t, k, p, m, u = sample_grid(gen, 64)
    check_sample_exact(logits * 40, t, k, p, m, u)


def test_non_contiguous_logits(gen):
    logits = torch.randn(16, 200, generator=gen)[:, ::2]
    assert not logits.is_contiguous()
    a = ops.sample(logits, top_k=20, generator=torch.Generator().manual_seed(1))
    b = ops.sample(logits.contiguous(), top_k=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_wrapper_uses_generator_uniforms(gen):
    """ops.sample with per-row tensors draws one float64 uniform per row from
    the generator and agrees with the reference on those uniforms."""
    logits, t, k, p, m, _ = sample_grid(gen, 50)
    seed = seed_of("wrapper")
    tok, lp = ops.sample(logits, temperature=t, top_k=k, top_p=p, min_p=m,
                         generator=torch.Generator().manual_seed(seed))
    u = torch.rand(logits.shape[0], generator=torch.Generator().manual_seed(seed), dtype=F64)
    rtok, rlp = reference.sample(logits, t, k, p, m, u)
    assert torch.equal(tok, rtok)
    torch.testing.assert_close(lp.to(F64), rlp.to(F64), rtol=1e-10, atol=1e-10)


def test_scalar_parameters_broadcast(gen):
    logits = torch.randn(64, 30, generator=gen, dtype=F64)
    kw = dict(temperature=0.8, top_k=10, top_p=0.9, min_p=0.02)
    a = ops.sample(logits, **kw, generator=torch.Generator().manual_seed(3))
    B = logits.shape[0]
    b = ops.sample(logits, temperature=torch.full((B,), 0.8, dtype=F64), top_k=torch.full((B,), 10),
                   top_p=torch.full((B,), 0.9), min_p=torch.full((B,), 0.02, dtype=torch.float32),
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_per_row_parameters(gen):
    """Rows with different parameters in one batch behave like separate calls."""
    logits = torch.randn(6, 40, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 1.0, 0.7], dtype=F64)
    k = torch.tensor([0, 1, 3, 0, 39, 50])
    p = torch.tensor([1.0, 0.9, 0.5, 0.01, 1.0, 0.8], dtype=F64)
    m = torch.tensor([0.0, 0.05, 0.5, 0.0, 0.2, 0.0], dtype=F64)
    tok, lp = ops.sample(logits, temperature=t, top_k=k, top_p=p, min_p=m, generator=torch.Generator().manual_seed(1))
    u = torch.rand(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    for b in range(6):
        rt, rl = reference.sample(logits[b:b + 1], t[b:b + 1], k[b:b + 1], p[b:b + 1], m[b:b + 1], u[b:b + 1])
        assert tok[b] == rt[0], b
        torch.testing.assert_close(lp[b].to(F64), rl[0].to(F64), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_greedy_is_argmax(gen, dtype):
    logits = torch.randn(200, 333, generator=gen, dtype=F64).to(dtype)
    tok, lp = ops.sample(logits, temperature=0.0, top_k=5, top_p=0.3, min_p=0.5)
    assert torch.equal(tok, logits.argmax(-1))
    want = torch.log_softmax(logits.to(F64), -1).gather(1, tok[:, None]).squeeze(1)
    assert lp.dtype == (F64 if dtype == F64 else torch.float32)
    torch.testing.assert_close(lp.to(F64), want, rtol=1e-5, atol=1e-5)


def test_greedy_ties_take_first(gen):
    logits = torch.zeros(3, 9, dtype=F64)
    logits[0, [2, 5]] = 1.0
    logits[1, [0, 8]] = 3.0
    tok, _ = ops.sample(logits, temperature=0.0)
    assert tok.tolist() == [2, 0, 0]


def test_same_seed_same_tokens(gen):
    logits = torch.randn(256, 100, generator=gen)
    kw = dict(temperature=1.0, top_k=20, top_p=0.95, min_p=0.01)
    a = ops.sample(logits, **kw, generator=torch.Generator().manual_seed(123))
    b = ops.sample(logits, **kw, generator=torch.Generator().manual_seed(123))
    c = ops.sample(logits, **kw, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])  # 256 rows of ~20 candidates: equal only by a miracle


@pytest.mark.parametrize("setting", CHI_SQUARE_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
                         or "default")
def test_chi_square(setting):
    """The empirical distribution of 20k draws matches filtered_distribution."""
    chi_square_check(chi_square_logits(), seed=seed_of(str(setting)), **setting)


def test_chi_square_float32_logits():
    chi_square_check(chi_square_logits().float(), seed=11, temperature=0.9, top_p=0.85)


def test_excluded_tokens_never_drawn(gen):
    """Random rows and filters, 50 draws each: every token drawn has nonzero
    probability under filtered_distribution (the op's float32 path)."""
    B, V = 48, 64
    logits = torch.randn(B, V, generator=gen) * 2
    t = torch.tensor([0.5, 1.0, 2.0])[torch.randint(3, (B,), generator=gen)].to(F64)
    k = torch.tensor([0, 1, 3, 10])[torch.randint(4, (B,), generator=gen)]
    p = torch.tensor([1.0, 0.9, 0.5])[torch.randint(3, (B,), generator=gen)].to(F64)
    m = torch.tensor([0.0, 0.05, 0.3])[torch.randint(3, (B,), generator=gen)].to(F64)
    allowed = torch.stack([reference.filtered_distribution(logits[b], float(t[b]), int(k[b]), float(p[b]),
                                                           float(m[b])) > 0 for b in range(B)])
    g = torch.Generator().manual_seed(5)
    for _ in range(50):
        tok, lp = ops.sample(logits, temperature=t, top_k=k, top_p=p, min_p=m, generator=g)
        assert allowed[torch.arange(B), tok].all()
        want = torch.log_softmax(logits.double() / t[:, None], -1).gather(1, tok[:, None]).squeeze(1)
        torch.testing.assert_close(lp.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_logits(gen, dtype):
    """float32 / bfloat16 logits (float32 math): tokens match the float64
    reference on the same values and uniforms (up to rare boundary cases),
    log-probs are float32 and close."""
    logits, t, k, p, m, u = sample_grid(gen, 50)
    low = logits.to(dtype)
    tok, lp = torch.ops.sgpo.sample(low, t, k, p, m, u)
    rtok, _ = reference.sample(low.to(F64), t, k, p, m, u)
    assert lp.dtype == torch.float32
    same = tok == rtok
    assert same.double().mean() > 0.99, f"{int((~same).sum())} of {len(tok)} rows differ"
    t_eff = torch.where(t == 0, 1.0, t)
    want = torch.log_softmax(low.to(F64) / t_eff[:, None], -1).gather(1, tok[:, None]).squeeze(1)
    torch.testing.assert_close(lp.to(F64), want, rtol=1e-5, atol=2e-5)


def test_vocabulary_of_one():
    tok, lp = ops.sample(torch.randn(4, 1), temperature=torch.tensor([0.0, 1.0, 2.0, 0.5]), top_k=1, top_p=0.5)
    assert tok.tolist() == [0, 0, 0, 0]
    assert torch.equal(lp, torch.zeros(4))


def test_top_k_one_and_tiny_top_p_are_greedy(gen):
    logits = torch.randn(100, 77, generator=gen)
    for kw in (dict(top_k=1), dict(top_p=0.001)):
        tok, _ = ops.sample(logits, temperature=1.3, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(tok, logits.argmax(-1)), kw


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_min_p_one_keeps_the_argmax(gen, dtype, temperature):
    """min_p = 1 keeps the tokens with p >= max p: the argmax (and its ties).
    The kept set is never empty, and a token is always a valid index."""
    logits = (torch.randn(300, 40, generator=gen) * 2).to(dtype)
    tok, lp = ops.sample(logits, temperature=temperature, min_p=1.0, generator=torch.Generator().manual_seed(0))
    bad = (tok < 0) | (tok >= 40)
    assert not bad.any(), f"{int(bad.sum())} of 300 rows got an invalid token, e.g. {tok[bad][:5].tolist()}"
    z = logits.double()
    assert torch.equal(z.gather(1, tok[:, None]).squeeze(1), z.max(-1).values)
    torch.testing.assert_close(lp.double(), torch.log_softmax(z / temperature, -1).gather(1, tok[:, None]).squeeze(1),
                               rtol=1e-5, atol=1e-5)


# ---- errors ----------------------------------------------------------------------------
SAMPLE_ERRORS = [
    ("temperature < 0", dict(temperature=-0.5), "temperature"),
    ("temperature nan", dict(temperature=float("nan")), "temperature"),
    ("temperature row < 0", dict(temperature=torch.tensor([1.0, -1.0, 1.0])), "temperature"),
    ("top_p 0", dict(top_p=0.0), "top_p"),
    ("top_p > 1", dict(top_p=1.5), "top_p"),
    ("top_p row 0", dict(top_p=torch.tensor([1.0, 0.0, 0.5])), "top_p"),
    ("min_p < 0", dict(min_p=-0.1), "min_p"),
    ("min_p > 1", dict(min_p=1.1), "min_p"),
    ("top_k < 0", dict(top_k=-1), "top_k"),
    ("top_k row < 0", dict(top_k=torch.tensor([0, -2, 1])), "top_k"),
    ("top_k float", dict(top_k=2.5), "top_k"),
    ("temperature wrong length", dict(temperature=torch.ones(4)), "temperature"),
    ("top_k wrong length", dict(top_k=torch.zeros(2, dtype=torch.int64)), "top_k"),
    ("top_p wrong length", dict(top_p=torch.ones(5)), "top_p"),
    ("min_p wrong length", dict(min_p=torch.zeros(1, 3)), "min_p"),
]


@pytest.mark.parametrize("kw, name", [e[1:] for e in SAMPLE_ERRORS], ids=[e[0] for e in SAMPLE_ERRORS])
def test_sample_errors(kw, name):
    with pytest.raises(ValueError, match=name):
        ops.sample(torch.randn(3, 10), **kw)


@pytest.mark.parametrize("logits", [torch.randn(10), torch.randn(2, 3, 4), torch.zeros(3, 0),
                                    torch.zeros(3, 4, dtype=torch.int64)], ids=["1-D", "3-D", "V=0", "int"])
def test_sample_bad_logits(logits):
    with pytest.raises(ValueError, match="logits"):
        ops.sample(logits)


def test_raw_op_checks_parameter_tensors():
    logits = torch.randn(3, 10)
    ok = dict(temperature=torch.ones(3, dtype=F64), top_k=torch.zeros(3, dtype=torch.int64),
              top_p=torch.ones(3, dtype=F64), min_p=torch.zeros(3, dtype=F64), uniform=torch.rand(3, dtype=F64))
    for name, bad in [("temperature", torch.ones(2, dtype=F64)), ("top_k", torch.zeros(3, dtype=torch.int32)),
                      ("uniform", torch.rand(3, dtype=torch.float32)), ("min_p", torch.zeros(4, dtype=F64))]:
        args = dict(ok, **{name: bad})
        with pytest.raises(ValueError, match=name):
            torch.ops.sgpo.sample(logits, *args.values())


def test_parameter_tensors_of_any_real_dtype():
    logits = torch.randn(3, 10)
    greedy, _ = ops.sample(logits, temperature=torch.tensor([0, 0, 0]))  # an int tensor is a float64 one
    assert torch.equal(greedy, logits.argmax(-1))
    with pytest.raises(ValueError, match="top_k: expected an integer tensor"):
        ops.sample(logits, top_k=torch.tensor([1.5, 2.0, 3.0]))
