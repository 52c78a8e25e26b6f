"""The packed update layout against the padded one (train/batch.py, model/packed.py).

The packed layout computes each prompt once and no padding; it must give the
padded layout's per-token log-probs, loss and every parameter's gradient, to
float64 round-off, on random models of every architecture the engine loads,
with ragged groups, groups of one, one-token completions, prompts of several
lengths and groups split across micro-batches. The trainer-level checks
(credit, beta, mu, recompute, DDP/FSDP, resume) are in test_train.py.
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from sgpo_engine import ops
from sgpo_engine.model import ModelConfig, Policy
from sgpo_engine.train.batch import PackedBatch, train_batch

_BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1)
ARCHS = {
    "llama_gqa": {"architectures": ["LlamaForCausalLM"]},
    "llama_tied_bias": {"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True,
                        "attention_bias": True, "mlp_bias": True},
    "mistral_window": {"architectures": ["MistralForCausalLM"], "sliding_window": 5},
    "qwen2_bias_sliding": {"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True, "sliding_window": 4,
                           "max_window_layers": 1},
    "qwen3_qknorm_tied": {"architectures": ["Qwen3ForCausalLM"], "head_dim": 8, "num_key_value_heads": 4,
                          "tie_word_embeddings": True},
}


def random_policy(arch: str, seed: int = 0) -> Policy:
    """A float64 policy of `arch` with random weights, norms and biases (so a dropped term shows)."""
    policy = Policy.from_config(ModelConfig.from_hf_dict({**_BASE, **ARCHS[arch]}), seed=seed, std=0.3)
    policy.decoder.double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in policy.decoder.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1.0 * name.endswith("weight") + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return policy


def random_groups(seed: int, sizes=(3, 1, 4, 2), max_prompt=9, max_completion=8):
    """Completions of prompts of several lengths, in groups of `sizes`; some one-token
    completions, one group whose rows carry two different prompts (as a server may give)."""
    rng = random.Random(seed)
    completions, groups = [], []
    for g, size in enumerate(sizes):
        prompt = [rng.randrange(2, 97) for _ in range(rng.randint(1, max_prompt))]
        for i in range(size):
            p = prompt if not (g == 2 and i == 3) else prompt[:-1] + [5]
            r = 1 if (g + i) % 4 == 0 else rng.randint(1, max_completion)
            completions.append(SimpleNamespace(prompt_ids=list(p), token_ids=[rng.randrange(2, 97) for _ in range(r)],
                                               logprobs=[-rng.random() for _ in range(r)], server_logprobs=None))
            groups.append(g)
    return completions, groups


def batches(completions, groups, advantages, reach=None):
    kw = dict(device="cpu", old_logp=True, server_logp=False)
    return (train_batch("padded", completions, groups, advantages, reach, **kw),
            train_batch("packed", completions, groups, advantages, reach, **kw))


def loss_and_grads(policy, batch, micro, loss_type="grpo"):
    """Sum over micro-batches of the fused loss (each scaled by its share of rows), its gradients,
    and the log-probs [N, T] of every row."""
    policy.decoder.zero_grad(set_to_none=True)
    total, logp = 0.0, torch.zeros_like(batch.mask, dtype=policy.lm_head_weight.dtype)
    tokens = float(batch.mask.sum()) if loss_type == "dapo" else None  # token-normalized: the global count
    for rows in micro:
        hidden = batch.hidden(policy.decoder, rows)
        loss, _ = ops.fused_policy_loss(hidden, policy.lm_head_weight, batch.targets[rows], batch.mask[rows],
                                        batch.advantages[rows], old_logp=batch.old_logp[rows].to(hidden.dtype),
                                        loss_type=loss_type, num_items_in_batch=tokens)
        share = 1.0 if tokens else len(rows) / batch.n
        (loss * share).backward()
        total += float(loss.detach()) * share
        with torch.no_grad():
            logp[rows] = ops.fused_logprobs(hidden, policy.lm_head_weight, batch.targets[rows])
    grads = {n: p.grad.clone() for n, p in policy.decoder.named_parameters()}
    return total, grads, logp * batch.mask


@pytest.mark.parametrize("arch", list(ARCHS))
def test_packed_equals_padded(arch):
    policy = random_policy(arch, seed=len(arch))
    completions, groups = random_groups(seed=len(arch))
    adv = torch.randn(len(completions), generator=torch.Generator().manual_seed(3))
    padded, packed = batches(completions, groups, adv)
    want = loss_and_grads(policy, padded, padded.micro_batches(64, 10 ** 6))
    for budget in (10 ** 6, 12):  # one packed row; groups split across micro-batches (12 positions each)
        micro = packed.micro_batches(64, budget)
        assert sorted(torch.cat(micro).tolist()) == list(range(len(completions)))
        got = loss_and_grads(policy, packed, micro)
        assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-14)
        torch.testing.assert_close(got[2], want[2], rtol=1e-11, atol=1e-12)
        for name, g in want[1].items():
            torch.testing.assert_close(got[1][name], g, rtol=1e-10, atol=1e-12, msg=name)
    assert packed.positions < padded.positions  # each prompt once, no padding


def test_packed_positions_and_split():
    """The packer counts each distinct prompt once per micro-batch, keeps a group whole while
    it fits, splits it (recomputing its prompt) only beyond the budget, and caps the rows."""
    completions, groups = random_groups(seed=1, sizes=(4, 2))
    _, packed = batches(completions, groups, torch.zeros(len(completions)))
    P = [len(c.prompt_ids) for c in completions]
    R = [len(c.token_ids) for c in completions]
    whole = P[0] + sum(r - 1 for r in R[:4]) + P[4] + sum(r - 1 for r in R[4:])
    assert packed.token_positions == whole
    micro = packed.micro_batches(64, 10 ** 6)
    assert [m.tolist() for m in micro] == [list(range(6))] and packed.positions == whole
    micro = packed.micro_batches(2, 10 ** 6)
    assert [m.tolist() for m in micro] == [[0, 1], [2, 3], [4, 5]]
    assert packed.positions == whole + P[0]  # the first group's prompt, computed twice
    micro = packed.micro_batches(64, 1)  # every row alone: nothing fits, nothing is dropped
    assert [m.tolist() for m in micro] == [[i] for i in range(6)]


def test_packed_prefix_advantages_and_gradient_checkpointing():
    """[N, T] advantages (prefix credit) index the same way in both layouts; gradient
    checkpointing recomputes the packed attention and changes nothing."""
    policy = random_policy("qwen2_bias_sliding", seed=5)
    completions, groups = random_groups(seed=5)
    adv = torch.randn(len(completions), generator=torch.Generator().manual_seed(4))
    reach = [max(1, len(c.token_ids) // 2) for c in completions]
    padded, packed = batches(completions, groups, adv, reach)
    assert padded.advantages.shape == padded.mask.shape
    want = loss_and_grads(policy, padded, padded.micro_batches(64, 10 ** 6), loss_type="dapo")
    policy.decoder.gradient_checkpointing = True
    got = loss_and_grads(policy, packed, packed.micro_batches(64, 20), loss_type="dapo")
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    for name, g in want[1].items():
        torch.testing.assert_close(got[1][name], g, rtol=1e-10, atol=1e-12, msg=name)


def test_packed_mask_memory_is_per_segment():
    """G 16 completions of 1,024 tokens: the packer bounds each packed row by the token budget,
    so the masks hold at most budget^2 booleans, not (G x 1,024)^2."""
    completions = [SimpleNamespace(prompt_ids=list(range(2, 90)), token_ids=[3] * 1024, logprobs=[-1.0] * 1024,
                                   server_logprobs=None) for _ in range(16)]
    packed = train_batch("packed", completions, [0] * 16, torch.zeros(16), None, device="cpu", old_logp=True,
                         server_logp=False)
    assert isinstance(packed, PackedBatch)
    micro = packed.micro_batches(64, 4096)
    assert all(packed._cost(m.tolist()) <= 4096 for m in micro)
    assert len(micro) == 6 and packed.positions < 16 * (88 + 1023)  # 3 completions a row, prompt each time
