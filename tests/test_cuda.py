"""The op-vs-reference checks of the CPU tests, on CUDA tensors (a
representative subset). The checks themselves live in op_checks.py and are
shared with the CPU tests; only the device differs."""
import pytest
import torch

from op_checks import (CHI_SQUARE_SETTINGS, F64, ErrorTally, check_decode_attention, check_group_advantages,
                       check_logprobs_lowp, check_policy_loss_lowp, check_sample_exact, chi_square_check,
                       chi_square_logits, lowp_policy_case, random_cache, random_group_inputs, sample_grid, seed_of)
from sgpo_engine import ops, options, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = "cuda"
LOWP = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("scale", options.SCALES)
@pytest.mark.parametrize("scope", options.SCOPES)
@pytest.mark.parametrize("sizes", [[4] * 6, [1, 3, 1, 7, 2, 1, 16, 8]], ids=["fixed", "ragged"])
def test_group_advantages_cuda(gen, sizes, scope, scale):
    for credit in options.CREDITS:
        r, c, s = random_group_inputs(gen, sizes, device=CUDA)
        if len(set(sizes)) == 1:
            check_group_advantages(r, group_size=sizes[0], correct=c, rts=s, scope=scope, credit=credit, scale=scale)
        else:
            check_group_advantages(r, sizes=sizes, correct=c, rts=s, scope=scope, credit=credit, scale=scale)


@pytest.mark.parametrize("dtype", LOWP, ids=str)
def test_group_advantages_cuda_low_precision(gen, dtype):
    sizes = [1, 3, 7, 8, 16, 2]
    r, c, s = random_group_inputs(gen, sizes, dtype=dtype, device=CUDA)
    check_group_advantages(r, sizes=sizes, correct=c, rts=s.float(), rtol=2e-5, atol=2e-5)


def test_group_advantages_cuda_exact_zero():
    r = torch.tensor([0.1, -3.7, 1e8 + 0.3], dtype=F64, device=CUDA).repeat_interleave(8)
    for dtype in (F64, torch.float32):
        out = ops.group_advantages(r.to(dtype), group_size=8)
        assert torch.equal(out.advantages, torch.zeros_like(out.advantages))
        assert torch.equal(out.group_std, torch.zeros_like(out.group_std))


@pytest.mark.parametrize("level", options.IS_LEVELS)
@pytest.mark.parametrize("loss_type", options.LOSS_TYPES)
@pytest.mark.parametrize("dtype", LOWP, ids=str)
def test_policy_loss_cuda(gen, dtype, loss_type, level):
    """Forward and backward in low precision on CUDA, within ~2x the error of
    the reference run in that dtype (on CUDA too) against float64."""
    tally = ErrorTally(dtype)
    for _ in range(6):
        inputs, kw = lowp_policy_case(gen, dtype, level)
        check_policy_loss_lowp(tally, inputs, dict(kw, loss_type=loss_type), device=CUDA)
    tally.check()


@pytest.mark.parametrize("dtype", LOWP, ids=str)
def test_policy_loss_cuda_fully_masked(gen, dtype):
    inputs, kw = lowp_policy_case(gen, dtype, "token")
    h, w, b, t, m, a = [None if x is None else x.to(CUDA) for x in inputs]
    cast = lambda x: x.to(dtype).requires_grad_()
    h, w, b = cast(h), cast(w), cast(b)
    loss, met = ops.fused_policy_loss(h, w, t, torch.zeros_like(m), a.to(dtype), bias=b,
                                      **{k: v.to(CUDA, dtype) if isinstance(v, torch.Tensor) else v
                                         for k, v in kw.items()})
    grads = torch.autograd.grad(loss, [h, w, b])
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in met.values())
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


@pytest.mark.parametrize("dtype", LOWP, ids=str)
def test_logprobs_cuda(gen, dtype):
    tally = ErrorTally(dtype)
    for chunk in (1, 5, None):
        for _ in range(2):
            check_logprobs_lowp(tally, gen, device=CUDA, chunk_size=chunk)
    tally.check()


@pytest.mark.parametrize("V", [1, 7, 50, 1000, 4099])
def test_sample_cuda_exact(gen, V):
    check_sample_exact(*sample_grid(gen, V, device=CUDA))


@pytest.mark.parametrize("setting", CHI_SQUARE_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
                         or "default")
def test_sample_cuda_chi_square(setting):
    chi_square_check(chi_square_logits(), seed=seed_of(str(setting)), device=CUDA, **setting)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_sample_cuda_low_precision(gen, dtype):
    logits, t, k, p, m, u = sample_grid(gen, 50, device=CUDA)
    tok, lp = torch.ops.sgpo.sample(logits.to(dtype), t, k, p, m, u)
    rtok, _ = reference.sample(logits.to(dtype).cpu().to(F64), t.cpu(), k.cpu(), p.cpu(), m.cpu(), u.cpu())
    assert (tok.cpu() == rtok).double().mean() > 0.99
    greedy, _ = ops.sample(logits.to(dtype), temperature=0.0)
    assert torch.equal(greedy, logits.to(dtype).argmax(-1))
    one, _ = ops.sample(logits.to(dtype), temperature=1.3, min_p=1.0)
    assert ((one >= 0) & (one < 50)).all()


@pytest.mark.parametrize("D", [16, 13, 64, 128])
@pytest.mark.parametrize("window", [0, 4])
@pytest.mark.parametrize("Hkv", [1, 2, 8])
def test_decode_attention_cuda(D, window, Hkv):
    check_decode_attention(random_cache(D * 100 + window * 10 + Hkv, F64, D=D, Hkv=Hkv, device=CUDA), window=window)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)], ids=str)
def test_decode_attention_cuda_low_precision(dtype, tol):
    check_decode_attention(random_cache(5, dtype, device=CUDA), rtol=tol, atol=tol)
