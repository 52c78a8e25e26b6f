"""The op-vs-reference checks of the CPU tests, on CUDA tensors (a
representative subset), plus the engine on CUDA against the engine on CPU
(greedy generation, five training steps). The op checks live in op_checks.py
and are shared with the CPU tests; only the device differs.

SGPO_TEST_DEVICE=cpu runs this file on CPU tensors instead: the rehearsal of
bench/gpu_check.sh uses it to prove the file's paths before a GPU is lent."""
import copy
import os

import pytest
import torch

from op_checks import (CHI_SQUARE_SETTINGS, F64, ErrorTally, check_decode_attention, check_group_advantages,
                       check_logprobs_lowp, check_policy_loss_lowp, check_sample_exact, chi_square_check,
                       chi_square_logits, lowp_policy_case, random_cache, random_group_inputs, sample_grid, seed_of)
from sgpo_engine import ops, options, reference

CUDA = os.environ.get("SGPO_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(CUDA == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")

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


# ---------------------------------------------------------------- the engine on CUDA vs CPU
def test_generate_greedy_cuda_equals_cpu():
    """Greedy rollouts of the built-in warm start: the same tokens on both devices."""
    from sgpo_engine import tasks
    from sgpo_engine.generation import generate
    prompts = [e.prompt for e in tasks.ArithSource(6, 9, seed=3).batch(0, 12)]
    out = {}
    for dev in ("cpu", CUDA):
        policy = tasks.load_warm_start(device=dev)
        groups = generate(policy, prompts, num_samples=1, max_new_tokens=96, temperature=0.0)
        out[dev] = [(g[0].prompt_ids, g[0].token_ids) for g in groups]
    cpu_policy = tasks.load_warm_start()
    for (prompt, want), (_, got) in zip(out["cpu"], out[CUDA]):
        if got == want:
            continue
        # Devices round differently: a divergence is allowed only where the CPU's
        # top two logits tie to rounding.
        t = next(i for i, (a, b) in enumerate(zip(want + [-1], got + [-2])) if a != b)
        logits = cpu_policy.logits(torch.tensor([prompt + want[:t]]))[0, -1]
        top2 = logits.topk(2).values
        assert top2[0] - top2[1] < 1e-4 * max(1.0, float(top2[0].abs())), (t, want[t:t + 3], got[t:t + 3])
    assert sum(len(t) for _, t in out["cpu"]) > 12 * 20  # real responses, not empty ones


STEPS = 5


def _trainer(device, tmp, rollout=None):
    """SGPO on the built-in task from the shipped warm start."""
    from sgpo_engine.train import SGPOTrainer, TrainConfig
    cfg = TrainConfig(device=device, task_min_ops=8, task_max_ops=10, prompts_per_step=8, num_samples=4,
                      max_new_tokens=64, lr=1e-4, lr_schedule="constant", max_steps=STEPS, micro_batch_size=16,
                      output=os.path.join(tmp, device), save_every=100, tensorboard=False, progress=False)
    return SGPOTrainer(cfg, rollout=rollout)


def test_five_training_steps_cuda_match_cpu(tmp_path):
    """The update path on CUDA (group_advantages, the fused loss and its
    gradients, AdamW) against CPU: the CPU run's rollouts are replayed on
    CUDA, so both see the same completions; the per-step losses and gradient
    norms, and the total parameter update, must agree."""
    from sgpo_engine import tasks
    cpu = _trainer("cpu", str(tmp_path))
    sampled, recorded = cpu.rollout, []

    def record(examples, seeds):
        groups = sampled(examples, seeds)
        recorded.append(copy.deepcopy(groups))
        return groups

    cpu.rollout = record
    cpu_metrics = [cpu.train_step() for _ in range(STEPS)]
    replay = iter(recorded)
    dev = _trainer(CUDA, str(tmp_path), rollout=lambda examples, seeds: next(replay))
    dev_metrics = [dev.train_step() for _ in range(STEPS)]

    for a, b in zip(cpu_metrics, dev_metrics):
        for key in ("loss", "grad_norm", "sgpo_reward_mean", "accuracy"):
            assert abs(a[key] - b[key]) <= 1e-3 * abs(a[key]) + 1e-5, (key, a[key], b[key])
    start = [p.detach().double() for p in tasks.load_warm_start().parameters()]
    update = lambda policy: torch.cat([(p.detach().cpu().double() - p0).flatten()
                                       for p, p0 in zip(policy.parameters(), start)])
    du_cpu, du_dev = update(cpu.policy), update(dev.policy)
    assert du_cpu.norm() > 0
    assert torch.nn.functional.cosine_similarity(du_cpu, du_dev, dim=0) > 0.999
    assert abs(du_dev.norm() / du_cpu.norm() - 1) < 1e-2


@pytest.mark.parametrize("arch", ["llama_gqa", "mistral_window", "qwen2_bias_sliding", "qwen3_qknorm_tied"])
def test_packed_layout_cuda_matches_padded(arch):
    """The packed update layout (train/batch.py: SDPA with a block mask per group, on CUDA the
    kernel the user's torch picks for a boolean mask) in fp32 on the device against the
    padded layout in float64 on CPU: log-probs, loss and every gradient."""
    from test_packed import batches, loss_and_grads, random_groups, random_policy
    completions, groups = random_groups(seed=len(arch))
    adv = torch.randn(len(completions), generator=torch.Generator().manual_seed(3))
    padded, _ = batches(completions, groups, adv)
    cpu = random_policy(arch, seed=len(arch))
    want = loss_and_grads(cpu, padded, padded.micro_batches(64, 10 ** 6))
    dev = random_policy(arch, seed=len(arch))
    dev.decoder.float().to(CUDA)
    from sgpo_engine.train.batch import train_batch
    packed = train_batch("packed", completions, groups, adv, None, device=CUDA, old_logp=True, server_logp=False)
    got = loss_and_grads(dev, packed, packed.micro_batches(64, 12))
    assert got[0] == pytest.approx(want[0], rel=1e-4, abs=1e-6)
    torch.testing.assert_close(got[2].cpu().double(), want[2], rtol=1e-4, atol=1e-5)
    for name, g in want[1].items():
        torch.testing.assert_close(got[1][name].cpu().double(), g, rtol=1e-3, atol=1e-5, msg=name)
