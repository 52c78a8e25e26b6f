"""The rest of the suite runs single-threaded (conftest.pytest_configure);
here the ops run with 2 threads, so their parallel loops really split work,
and are compared with the reference / with a single-threaded run."""
import pytest
import torch

from op_checks import F64, check_group_advantages, check_logprobs, check_policy_loss, lm_inputs, policy_case, \
    random_group_inputs, sample_grid
from sgpo_engine import ops


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_group_advantages_many_groups(gen, two_threads):
    sizes = [2, 1, 3, 2] * 150  # 600 groups: more than the kernel's grain of 256
    r, c, s = random_group_inputs(gen, sizes)
    check_group_advantages(r, sizes=sizes, correct=c, rts=s)
    check_group_advantages(r, group_size=1, correct=c, rts=s, scale="batch")


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_policy_loss_and_logprobs(gen, two_threads, level):
    inputs, kw = policy_case(gen, 4, 9, 8, 61, bias=True, off_policy=True, ref=True, adv_2d=True)
    check_policy_loss(inputs, dict(kw, beta=0.1, importance_sampling_level=level, chunk_size=16))
    hidden, weight, bias, targets = lm_inputs(gen, 4, 9, 8, 61, bias=True)
    check_logprobs(hidden, weight, targets, bias, temperature=0.9, chunk_size=16, g=gen)


def test_sample_same_tokens_any_thread_count(gen, two_threads):
    logits, t, k, p, m, u = sample_grid(gen, 300)
    for dtype in (F64, torch.float32):
        a = torch.ops.sgpo.sample(logits.to(dtype), t, k, p, m, u)
        torch.set_num_threads(1)
        b = torch.ops.sgpo.sample(logits.to(dtype), t, k, p, m, u)
        torch.set_num_threads(2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
