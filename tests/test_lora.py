"""LoRA (model/lora.py) and LoRA in the trainer: the forward and gradients
against plain PyTorch in float64, PEFT's format both ways (we save and peft
loads, peft saves and we load: equal logits), the reference model as the base
model, only the adapters trained and in the optimizer, the fused loss without
the frozen LM head's gradient, `sgpo merge`, and bad settings. 2 ranks against
1 process and resume after SIGKILL: tests/test_train.py."""
from __future__ import annotations

import json
import os

import pytest
import torch

from sgpo_engine import cli, ops, tasks
from sgpo_engine.model import load
from sgpo_engine.model.lora import (ALL_LINEARS, LoRAConfig, LoRALinear, adapter_state_dict, adapters_off, add_lora,
                                    load_adapter, lora_layers, merged_state_dict, save_adapter)
from sgpo_engine.train import SGPOTrainer, TrainConfig
from sgpo_engine.train.reference_model import reference_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

IDS = torch.tensor([[1, 5, 14, 6, 16, 7, 18, 17, 7, 9, 4]])


def randomize_adapters(policy, seed: int = 0, scale: float = 0.05):
    """B starts at zero (the adapted model is the base): give it values, so a test can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_layers(policy.decoder):
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * scale)


def lora_policy(r=4, alpha=8.0, targets=ALL_LINEARS, dtype=torch.float32):
    policy = tasks.new_policy(seed=0).to(dtype=dtype)
    add_lora(policy, LoRAConfig(r=r, alpha=alpha, target_modules=list(targets)))
    randomize_adapters(policy)
    return policy


# ---------------------------------------------------------------------- the layer
@pytest.mark.parametrize("shape, r, bias", [((3, 7, 13), 1, True), ((1, 1, 5), 4, False), ((2, 9, 33), 8, True)])
def test_lora_linear_matches_plain_pytorch_in_float64(shape, r, bias):
    torch.manual_seed(0)
    *lead, n_in = shape
    base = torch.nn.Linear(n_in, 11, bias=bias, dtype=torch.float64)
    m = LoRALinear.wrap(base, LoRAConfig(r=r, alpha=2.5 * r))
    with torch.no_grad():
        m.lora_B.weight.normal_()
    base.requires_grad_(False)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    A = m.lora_A.weight.detach().clone().requires_grad_(True)
    B = m.lora_B.weight.detach().clone().requires_grad_(True)
    want = x @ base.weight.T + (base.bias if bias else 0) + 2.5 * (x @ A.T) @ B.T      # [..., 11]
    got = m(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    (want * g).sum().backward()
    gx_want, x.grad = x.grad.clone(), None
    (got * g).sum().backward()
    torch.testing.assert_close(x.grad, gx_want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.lora_A.weight.grad, A.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.lora_B.weight.grad, B.grad, rtol=1e-12, atol=1e-12)
    assert m.weight.grad is None and m.weight is base.weight  # the base is shared and frozen
    with torch.no_grad():
        torch.testing.assert_close(m.weight + m.delta_weight(), base.weight + 2.5 * B @ A)


def test_add_lora_freezes_the_base_and_starts_as_it(tmp_path):
    policy = tasks.new_policy(seed=0)
    before = policy.logits(IDS)
    names = add_lora(policy, LoRAConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert len(names) == 2 * policy.config.num_hidden_layers and all(n.endswith(("q_proj", "v_proj")) for n in names)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    torch.testing.assert_close(policy.logits(IDS), before, rtol=0, atol=0)  # B = 0: exactly the base
    with pytest.raises(ValueError, match=r"'qkv' is not a linear of this model \(its linears: down_proj, gate_proj"):
        add_lora(tasks.new_policy(seed=0), LoRAConfig(target_modules=["qkv"]))


def test_reference_model_is_the_base_model():
    base = tasks.new_policy(seed=0)
    policy = lora_policy()
    ref = reference_model(policy, TrainConfig(beta=0.1))
    assert not torch.allclose(policy.logits(IDS), base.logits(IDS))
    torch.testing.assert_close(ref.decoder(IDS) @ ref.lm_head_weight.T, base.logits(IDS), rtol=1e-6, atol=1e-6)
    assert not any(True for _ in ref.decoder.parameters())  # no copy of the weights
    with adapters_off(policy):
        torch.testing.assert_close(policy.logits(IDS), base.logits(IDS), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(policy.logits(IDS), base.logits(IDS))  # back on after the with


# ---------------------------------------------------------------------- PEFT's format
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("base") / "model")
    tasks.new_policy(seed=0).save(path)
    return path


def test_we_save_peft_loads(tmp_path, base_dir):
    policy = load(base_dir)
    add_lora(policy, LoRAConfig(r=4, alpha=8.0, target_modules=["q_proj", "k_proj", "down_proj"]))
    randomize_adapters(policy)
    save_adapter(policy, str(tmp_path / "adapter"), base_model=base_dir)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDS).logits, policy.logits(IDS), rtol=1e-5, atol=1e-5)
        # and merged, as `sgpo merge` writes it
        merged = theirs.merge_and_unload()(IDS).logits
    assert cli.main(["merge", "--adapter", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    torch.testing.assert_close(load(str(tmp_path / "merged")).logits(IDS), merged, rtol=1e-5, atol=1e-5)


def test_peft_saves_we_load(tmp_path, base_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = peft.LoraConfig(r=8, lora_alpha=4, target_modules=["q_proj", "o_proj", "up_proj"], lora_dropout=0.0,
                          init_lora_weights=False)  # random B: the adapters change the logits
    theirs = peft.get_peft_model(hf, cfg).eval()
    theirs.save_pretrained(str(tmp_path / "peft"))
    ours = load(base_dir)
    names = load_adapter(ours, str(tmp_path / "peft"))
    assert len(names) == 3 * ours.config.num_hidden_layers
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(IDS), theirs(IDS).logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours.logits(IDS), load(base_dir).logits(IDS))


def test_bad_adapter_folders(tmp_path, base_dir):
    with pytest.raises(ValueError, match="adapter_config.json: not found"):
        load_adapter(load(base_dir), str(tmp_path))
    policy = load(base_dir)
    add_lora(policy, LoRAConfig(r=2))
    save_adapter(policy, str(tmp_path / "a"))
    conf = tmp_path / "a" / "adapter_config.json"
    conf.write_text(conf.read_text().replace('"r": 2', '"r": 3'))
    with pytest.raises(ValueError, match="has shape"):
        load_adapter(load(base_dir), str(tmp_path / "a"))
    conf.write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["nope"]}))
    with pytest.raises(ValueError, match="'nope' is not a linear of this model"):
        load_adapter(load(base_dir), str(tmp_path / "a"))
    assert cli.main(["merge", "--adapter", str(tmp_path), "--output", str(tmp_path / "m")]) == 2


def test_merged_state_dict_leaves_the_base_alone():
    policy = lora_policy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = merged_state_dict(policy)
    assert not any(".lora_" in k for k in merged)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(adapter_state_dict(policy)) == {f"base_model.model.{n}.lora_{p}.weight"
                                               for n, _ in lora_layers(policy.decoder) for p in "AB"}


# ---------------------------------------------------------------------- the fused loss
def test_fused_loss_skips_a_frozen_lm_head_gradient():
    """With LoRA the LM head is frozen: the op gets grad_weight False and returns no weight
    gradient (two of its three GEMMs run), and the hidden gradient is the same."""
    torch.manual_seed(0)
    B, T, H, V = 3, 5, 16, 37
    hidden = torch.randn(B, T, H, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, dtype=torch.float64)
    targets = torch.randint(0, V, (B, T))
    mask = (torch.rand(B, T) > 0.2).double()
    adv = torch.randn(B, dtype=torch.float64)
    loss, _ = ops.fused_policy_loss(hidden, weight, targets, mask, adv)
    loss.backward()
    frozen_grad, hidden.grad = hidden.grad.clone(), None
    w = weight.clone().requires_grad_(True)
    loss2, _ = ops.fused_policy_loss(hidden, w, targets, mask, adv)
    loss2.backward()
    torch.testing.assert_close(hidden.grad, frozen_grad, rtol=1e-12, atol=1e-12)
    assert w.grad is not None and weight.grad is None
    if ops.HAS_EXTENSION:  # the op itself: no weight gradient computed when not asked
        out = torch.ops.sgpo.fused_policy_loss(*ops._PolicyLossArgs(
            hidden=hidden.detach(), weight=weight, bias=None, targets=targets, mask=mask, advantages=adv,
            old_logp=None, ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, delta=None, sapo_temperature_pos=1.0,
            sapo_temperature_neg=1.05, use_bias_correction_kl=False, loss_type="dapo",
            importance_sampling_level="token", temperature=1.0, max_completion_length=None,
            num_items_in_batch=None, chunk_size=None, grad_hidden=True, grad_weight=False, grad_bias=False))
        assert out[3].numel() > 0 and out[4].numel() == 0  # grad_hidden computed, grad_weight not


# ---------------------------------------------------------------------- the trainer
def tiny(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(output=str(tmp_path / "out"), task_min_ops=1, task_max_ops=2, prompts_per_step=3,
                       num_samples=4, max_new_tokens=24, max_steps=2, save_every=1, tensorboard=False,
                       log_completions=0, progress=False, lr=1e-3, **kw)


def test_trainer_trains_only_the_adapters(tmp_path):
    cfg = tiny(tmp_path, lora_r=4, lora_alpha=8.0, beta=0.05, gradient_checkpointing=True)
    trainer = SGPOTrainer(cfg)  # the shipped warm start: it solves some k = 1-2 problems, so there is signal
    base = {k: v.clone() for k, v in trainer.policy.state_dict().items() if ".lora_" not in k}
    trained = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    lora = [p for n, p in trainer.policy.named_parameters() if ".lora_" in n]
    assert len(trained) == len(lora) and all(any(p is q for q in lora) for p in trained)
    n_all = sum(p.numel() for p in trainer.policy.parameters())
    assert sum(p.numel() for p in trained) < 0.2 * n_all
    history = trainer.train()
    assert any(m["grad_norm"] > 0 for m in history) and all(m["kl_mean"] is not None for m in history)
    for k, v in trainer.policy.state_dict().items():
        if ".lora_" not in k:
            assert torch.equal(v, base[k]), k  # the base never moves
    state_sizes = sum(t.numel() for s in trainer.optimizer.state.values() for t in s.values() if t.dim())
    assert state_sizes == 2 * sum(p.numel() for p in lora)  # AdamW's two moments, adapters only
    # rollouts sample from a merged copy (no adapters, the same function), refreshed each step
    sampler = trainer._sampling_policy(trainer.step)
    assert sampler is not trainer.policy and not any(".lora_" in k for k in sampler.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(sampler.logits(IDS), trainer.policy.logits(IDS), rtol=1e-5, atol=1e-5)
    assert trainer._sampling_policy(trainer.step) is sampler  # once a step, into the same tensors
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert sorted(os.listdir(ckpt)) == ["adapter_config.json", "adapter_model.safetensors", "trainer_state.pt"]
    # `sgpo merge` gives the trained policy as an HF folder
    assert cli.main(["merge", "--adapter", str(ckpt), "--output", str(tmp_path / "merged")]) == 0
    with torch.no_grad():
        torch.testing.assert_close(load(str(tmp_path / "merged")).logits(IDS), trainer.policy.logits(IDS),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("values, needle", [
    (dict(lora_r=-1), "config field 'lora_r'"),
    (dict(lora_r=4, lora_alpha=0.0), "config field 'lora_alpha'"),
    (dict(lora_r=4, lora_dropout=1.0), "config field 'lora_dropout'"),
    (dict(lora_r=4, lora_target_modules=[]), "config field 'lora_target_modules'"),
])
def test_bad_lora_config(values, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**values).validate()


def test_unknown_target_module_names_the_models_linears(tmp_path):
    with pytest.raises(ValueError, match=r"config field 'lora_target_modules': 'c_attn' is not a linear of this "
                                         r"model \(its linears: down_proj"):
        SGPOTrainer(tiny(tmp_path, lora_r=4, lora_target_modules=["c_attn"]))
