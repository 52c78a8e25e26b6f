"""The model layer (sgpo_engine.model) against transformers on tiny random
checkpoints of every supported architecture and RoPE recipe (tests/tiny_models.py).

transformers is a test-only dependency; the engine never imports it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402
import sgpo_engine  # noqa: E402
from sgpo_engine.model import ModelConfig, Policy, Tokenizer, load, save  # noqa: E402
from sgpo_engine.model import rope as rope_mod  # noqa: E402
from sgpo_engine.model.decoder import sdpa  # noqa: E402

ATOL = 1e-4
CASES = list(tm.CASES)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """case -> (folder, transformers model), built once per module. Tests that
    modify a checkpoint copy it first (see `copy_of`)."""
    cache = {}

    def get(case):
        if case not in cache:
            path = str(tmp_path_factory.mktemp(case))
            cache[case] = (path, tm.save_case(case, path))
        return cache[case]
    return get


def copy_of(saved, case, tmp_path):
    src, _ = saved(case)
    dst = str(tmp_path / "ckpt")
    shutil.copytree(src, dst)
    return dst


def hf_logits(model, ids, attention_mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attention_mask).logits


# ----------------------------------------------------------------------
# parity with transformers
# ----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(saved, case):
    path, model = saved(case)
    policy = load(path)
    assert policy.dtype == torch.float32 and policy.config.architecture == model.config.architectures[0]
    ids = tm.sample_ids(2, 12, seed=1)  # two rows with different content
    with torch.no_grad():
        ours = policy.logits(ids)
    assert ours.shape == (2, 12, tm.MODEL_VOCAB)
    torch.testing.assert_close(ours, hf_logits(model, ids), atol=ATOL, rtol=0)
    # hidden states are the final-normed ones the lm head consumes
    with torch.no_grad():
        hidden = policy.hidden_states(ids)
        torch.testing.assert_close(hidden @ policy.lm_head_weight.T, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["llama", "llama_dynamic", "mistral_window", "qwen2_tied_bias", "qwen3_qknorm"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_one_at_a_time(saved, case, side):
    path, model = saved(case)
    policy = load(path)
    lengths = [11, 6]
    T = max(lengths)
    rows = [tm.sample_ids(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    ids = torch.full((2, T), tm.SPECIAL_TOKENS.index("<pad>"))
    mask = torch.zeros(2, T, dtype=torch.long)
    spans = []
    for i, r in enumerate(rows):
        s = 0 if side == "right" else T - len(r)
        ids[i, s:s + len(r)] = r
        mask[i, s:s + len(r)] = 1
        spans.append(slice(s, s + len(r)))
    with torch.no_grad():
        batch = policy.logits(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = policy.logits(r[None])[0]
            torch.testing.assert_close(batch[i, spans[i]], alone, atol=1e-5, rtol=0)
    assert torch.isfinite(batch).all()
    if side == "right" and case != "llama_dynamic":
        # transformers agrees on the real tokens (dynamic RoPE depends on the padded length there)
        ref = hf_logits(model, ids, mask)
        for i in range(2):
            torch.testing.assert_close(batch[i, spans[i]], ref[i, spans[i]], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["llama", "llama_tied_linear", "llama_yarn", "qwen2_sliding", "qwen3_qknorm"])
def test_save_then_transformers_reload(saved, case, tmp_path):
    path, model = saved(case)
    policy = load(path)
    out = tmp_path / "saved"
    policy.save(out)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                      "tokenizer.json", "tokenizer_config.json"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "temporary folder left behind"
    reloaded = type(model).from_pretrained(out).eval()
    ids = tm.sample_ids(2, 12, seed=2)
    torch.testing.assert_close(hf_logits(reloaded, ids), hf_logits(model, ids), atol=ATOL, rtol=0)
    # and ours reads its own output back
    with torch.no_grad():
        torch.testing.assert_close(load(out).logits(ids), policy.logits(ids), atol=0, rtol=0)
    # the tokenizer saved with it is the same tokenizer for transformers
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    msgs = [{"role": "user", "content": "What is 12 + 30?"}]
    assert hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == \
        policy.tokenizer.apply_chat_template(msgs)


def test_sharded_checkpoint_loads(saved, tmp_path):
    model = tm.hf_model("qwen3_qknorm")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    tm.write_tokenizer(str(tmp_path / "sharded"))
    files = os.listdir(tmp_path / "sharded")
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    policy = load(tmp_path / "sharded")
    ids = tm.sample_ids(2, 12, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(policy.logits(ids), hf_logits(model, ids), atol=ATOL, rtol=0)
    # and we write shards transformers reads
    policy.save(tmp_path / "resharded", max_shard_size="30KB")
    files = os.listdir(tmp_path / "resharded")
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    reloaded = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "resharded").eval()
    torch.testing.assert_close(hf_logits(reloaded, ids), hf_logits(model, ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", ["bf16", torch.bfloat16, "float16"])
def test_dtype_override(saved, dtype):
    path, model = saved("llama_llama3_bias")
    policy = load(path, dtype=dtype)
    want = torch.float16 if dtype == "float16" else torch.bfloat16
    assert policy.dtype == want and all(p.dtype == want for p in policy.parameters())
    ids = tm.sample_ids(2, 12, seed=4)
    with torch.no_grad():
        low = policy.logits(ids).float()
        ref = load(path).logits(ids)
    assert torch.isfinite(low).all()
    err = (low - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item(), err
    if want == torch.bfloat16:
        hf_low = type(model).from_pretrained(path, dtype=torch.bfloat16).eval()
        assert (hf_logits(hf_low, ids).float() - low).abs().max().item() <= 2 * err + 1e-2
    # saving records the dtype, and transformers reads it back in that dtype
    assert policy.config.to_hf_dict(dtype=policy.dtype)["dtype"] == str(want).removeprefix("torch.")


def test_policy_interface(saved):
    path, _ = saved("llama")
    policy = load(path, dtype="fp32", device="cpu")
    assert policy.device == torch.device("cpu")
    assert policy.lm_head_weight.shape == (tm.MODEL_VOCAB, 32)
    assert all(p.requires_grad for p in policy.parameters())
    names = dict(policy.named_parameters())
    assert "model.layers.1.self_attn.q_proj.weight" in names and "lm_head.weight" in names
    assert policy.to(dtype="bf16") is policy and policy.dtype == torch.bfloat16
    policy.to(torch.float32)
    tied = load(saved("qwen2_tied_bias")[0])
    assert tied.lm_head_weight is tied.decoder.model.embed_tokens.weight
    assert "lm_head.weight" not in tied.state_dict()
    assert "Qwen2ForCausalLM" in repr(tied)


def test_engine_never_imports_transformers():
    code = ("import sys, sgpo_engine, torch; import tokenizers; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(sgpo_engine.__file__)),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ----------------------------------------------------------------------
# pluggable attention, gradient checkpointing
# ----------------------------------------------------------------------
class KVCache:
    """The smallest cache honoring the attention contract: appends k/v per
    layer and lets each new query see every cached key at or before it."""

    def __init__(self):
        self.k, self.v, self.calls = {}, {}, []

    def __call__(self, layer_idx, q, k, v):
        self.calls.append((layer_idx, q.shape, k.shape, v.shape, q.dtype))
        if layer_idx in self.k:
            k = torch.cat([self.k[layer_idx], k], dim=2)
            v = torch.cat([self.v[layer_idx], v], dim=2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        Tq, Tk = q.shape[2], k.shape[2]
        qpos = torch.arange(Tk - Tq, Tk)[:, None]
        mask = torch.arange(Tk)[None, :] <= qpos                         # [Tq, Tk]
        return sdpa(q, k, v, mask[None, None])


@pytest.mark.parametrize("case", ["llama_yarn", "qwen3_qknorm", "qwen2_tied_bias"])
def test_attention_callable_contract(saved, case):
    path, _ = saved(case)
    policy = load(path)
    cfg = policy.config
    ids = tm.sample_ids(2, 10, seed=5)
    with torch.no_grad():
        full = policy.logits(ids)
        cache = KVCache()
        # prefill 6 tokens, then decode one token at a time at explicit positions
        hidden = [policy.hidden_states(ids[:, :6], attention=cache)]
        for t in range(6, 10):
            pos = torch.full((2, 1), t)
            hidden.append(policy.hidden_states(ids[:, t:t + 1], positions=pos, attention=cache))
        steps = torch.cat(hidden, dim=1) @ policy.lm_head_weight.T
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)
    layer, qs, ks, vs, dt = cache.calls[0]
    assert (layer, qs, ks, vs, dt) == (0, (2, cfg.num_attention_heads, 6, cfg.head_dim),
                                      (2, cfg.num_key_value_heads, 6, cfg.head_dim),
                                      (2, cfg.num_key_value_heads, 6, cfg.head_dim), torch.float32)
    assert [c[0] for c in cache.calls[:cfg.num_hidden_layers]] == list(range(cfg.num_hidden_layers))


def test_attention_callable_wrong_shape(saved):
    policy = load(saved("llama")[0])
    with pytest.raises(ValueError, match="attention: layer 0 returned shape"):
        policy.hidden_states(tm.sample_ids(1, 4), attention=lambda i, q, k, v: v)


def test_gradient_checkpointing_same_grads(saved):
    path, _ = saved("qwen3_qknorm")
    ids = tm.sample_ids(2, 8, seed=6)
    grads = []
    for ckpt in (False, True):
        policy = load(path).train()
        policy.gradient_checkpointing = ckpt
        loss = policy.logits(ids).logsumexp(-1).mean()  # reaches every parameter
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("arch,extra", [
    ("LlamaForCausalLM", dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True)),
    ("MistralForCausalLM", dict(sliding_window=3)),
    ("Qwen2ForCausalLM", dict()),
    ("Qwen3ForCausalLM", dict(head_dim=16)),
])
def test_from_config_saves_a_transformers_checkpoint(tmp_path, arch, extra):
    cfg = ModelConfig(architecture=arch, vocab_size=40, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=1, bos_token_id=0, **extra)
    a = Policy.from_config(cfg, seed=3)
    b = Policy.from_config(cfg, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with torch.no_grad():
        for n, p in a.named_parameters():  # random biases and norms, so each one shows in the logits
            if p.dim() == 1:
                p.normal_(1.0 if n.endswith("norm.weight") else 0.0, 0.3)
    a.save(tmp_path / "scratch")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "scratch").eval()
    assert type(hf).__name__ == arch
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.logits(ids), hf_logits(hf, ids), atol=ATOL, rtol=0)
    gen = json.load(open(tmp_path / "scratch" / "generation_config.json"))
    assert gen["eos_token_id"] == 1


# ----------------------------------------------------------------------
# RoPE recipes against transformers' own functions
# ----------------------------------------------------------------------
_ROPE_PARAMS = [
    {"rope_type": "linear", "factor": 3.0},
    {"type": "linear", "factor": 2.0},                       # legacy key
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 512},
    {"rope_type": "dynamic", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256, "beta_fast": 16.0,
     "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 512, "attention_factor": 1.3},
]


@pytest.mark.parametrize("params", _ROPE_PARAMS, ids=lambda p: p.get("rope_type", p.get("type")))
@pytest.mark.parametrize("seq_len", [None, 3000])
def test_inv_freq_matches_transformers(params, seq_len):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    kw = dict(vocab_size=10, hidden_size=256, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=1024)
    hf_cfg = transformers.LlamaConfig(**kw, rope_scaling=dict(params), rope_theta=50000.0)
    rope_type = params.get("rope_type", params.get("type"))
    hf_seq = None if seq_len is None else torch.tensor(seq_len)
    want, want_scale = ROPE_INIT_FUNCTIONS[rope_type](hf_cfg, "cpu", seq_len=hf_seq)
    ours_cfg = ModelConfig.from_hf_dict({"architectures": ["LlamaForCausalLM"], **kw,
                                         "rope_scaling": dict(params), "rope_theta": 50000.0})
    got, scale = rope_mod.inv_freq(ours_cfg, seq_len)
    torch.testing.assert_close(got, want.float(), rtol=2e-6, atol=0)
    assert scale == pytest.approx(float(want_scale), rel=1e-12)


def test_rope_parameters_and_legacy_spellings_agree():
    base = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 8, "hidden_size": 32, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 100}
    new = ModelConfig.from_hf_dict({**base, "rope_parameters": {"rope_type": "yarn", "factor": 2.0,
                                                                "rope_theta": 1e6}})
    old = ModelConfig.from_hf_dict({**base, "rope_theta": 1e6, "rope_scaling": {"type": "yarn", "factor": 2.0}})
    assert new.rope_theta == old.rope_theta == 1e6 and new.rope_scaling == old.rope_scaling
    assert new.rope_scaling.original_max_position_embeddings == 100  # transformers' default
    plain = ModelConfig.from_hf_dict({**base, "rope_scaling": None})
    assert plain.rope_scaling is None and plain.rope_theta == 10000.0
    assert new.attention_bias and not new.attention_out_bias  # Qwen2: qkv bias, no o_proj bias
    assert new.num_key_value_heads == 4 and new.head_dim == 8


@pytest.mark.parametrize("case", CASES)
def test_config_round_trip(saved, case):
    cfg = load(saved(case)[0]).config
    d = cfg.to_hf_dict()
    again = ModelConfig.from_hf_dict(json.loads(json.dumps(d)))
    assert dataclasses.replace(again, raw={}) == dataclasses.replace(cfg, raw={})
    # the legacy spelling (rope_theta + rope_scaling) alone means the same
    legacy = {k: v for k, v in d.items() if k != "rope_parameters"}
    assert dataclasses.replace(ModelConfig.from_hf_dict(legacy), raw={}) == dataclasses.replace(cfg, raw={})


def test_config_defaults_follow_transformers():
    d = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 8, "hidden_size": 32, "intermediate_size": 8,
         "num_hidden_layers": 2, "num_attention_heads": 4, "torch_dtype": "bfloat16", "eos_token_id": [5, 6]}
    cfg = ModelConfig.from_hf_dict(d)
    hf = transformers.Qwen3Config(**{k: v for k, v in d.items() if k != "architectures"})
    assert cfg.head_dim == hf.head_dim == 128
    assert cfg.max_position_embeddings == hf.max_position_embeddings
    assert cfg.dtype == torch.bfloat16 and cfg.eos_token_ids == [5, 6]
    assert cfg.layer_sliding_window(1) is None  # use_sliding_window defaults to false


# ----------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------
TEXTS = ["Hello world, this is a test.", "17+5=22\n22-3=19\n#19", "café 東京 — résumé", "", "  spaces  "]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 + 30?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?", "name": None}],
    [{"role": "user", "content": ["a", {"b": 1}]}],
]


@pytest.fixture(scope="module")
def tokenizers_pair(saved):
    path, _ = saved("llama")
    return Tokenizer.from_folder(path), transformers.AutoTokenizer.from_pretrained(path)


def test_tokenizer_matches_transformers(tokenizers_pair):
    ours, hf = tokenizers_pair
    for text in TEXTS:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == hf.encode(text, add_special_tokens=special), (text, special)
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == \
        (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
    assert ours.vocab_size == len(hf) == tm.TOKENIZER_VOCAB
    assert ours.eos_token_ids == {1}


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("gen_prompt", [True, False])
def test_chat_template_matches_transformers(tokenizers_pair, conv, gen_prompt):
    ours, hf = tokenizers_pair
    msgs = CONVERSATIONS[conv]
    text = ours.apply_chat_template(msgs, add_generation_prompt=gen_prompt)
    assert text == hf.apply_chat_template(msgs, add_generation_prompt=gen_prompt, tokenize=False)
    assert text.startswith("<s>")
    ids = ours.apply_chat_template(msgs, add_generation_prompt=gen_prompt, tokenize=True)
    assert ids == hf.apply_chat_template(msgs, add_generation_prompt=gen_prompt, tokenize=True,
                                         return_dict=False)


def test_chat_template_raise_exception(tokenizers_pair):
    ours, _ = tokenizers_pair
    import jinja2
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role robot"):
        ours.apply_chat_template([{"role": "robot", "content": "x"}])


def test_chat_template_file_and_generation_eos(tmp_path):
    model = tm.hf_model("llama")
    model.save_pretrained(tmp_path)
    tm.write_tokenizer(str(tmp_path), template_file=True, generation_eos=[1, 4])
    ours, hf = Tokenizer.from_folder(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    msgs = CONVERSATIONS[1]
    assert ours.apply_chat_template(msgs) == hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ours.eos_token_ids == {1, 4}
    assert load(tmp_path).generation_config["eos_token_id"] == [1, 4]


def test_encode_with_offsets(tokenizers_pair):
    ours, _ = tokenizers_pair
    text = "17+5=22\n22-3=19\ncafé #19"
    ids, offsets = ours.encode_with_offsets(text)
    assert ids == ours.encode(text, add_special_tokens=False) and len(offsets) == len(ids)
    assert "".join(text[s:e] for s, e in offsets) == text  # byte-level BPE covers every character
    ids, offsets = ours.encode_with_offsets(text, add_special_tokens=True)
    assert ids[0] == ours.bos_token_id and offsets[0] == (0, 0)


# ----------------------------------------------------------------------
# errors: every bad input names the file / field / tensor
# ----------------------------------------------------------------------
def _edit_config(path, **changes):
    f = os.path.join(path, "config.json")
    d = json.load(open(f))
    for k, v in changes.items():
        if v is _DELETE:
            d.pop(k, None)
        else:
            d[k] = v
    json.dump(d, open(f, "w"))


_DELETE = object()


def _edit_tensors(path, fn):
    from safetensors.torch import load_file, save_file
    f = os.path.join(path, "model.safetensors")
    state = load_file(f)
    fn(state)
    save_file(state, f, metadata={"format": "pt"})


def test_error_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="checkpoint folder not found"):
        load(tmp_path / "nope")


def test_error_missing_config(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    os.remove(os.path.join(path, "config.json"))
    with pytest.raises(ValueError, match=r"config\.json.*not found"):
        load(path)


def test_error_missing_weights(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    os.remove(os.path.join(path, "model.safetensors"))
    open(os.path.join(path, "pytorch_model.bin"), "w").close()
    with pytest.raises(ValueError, match=r"no weights.*pytorch_model\.bin"):
        load(path)


@pytest.mark.parametrize("field,value,match", [
    ("architectures", ["GPT2LMHeadModel"], r"config\.json: field 'architectures': unsupported architecture "
                                           r"'GPT2LMHeadModel'"),
    ("rope_parameters", {"rope_type": "longrope", "rope_theta": 1e4}, r"config\.json: field "
                                                                       r"'rope_parameters\.rope_type': unknown rope "
                                                                       r"type 'longrope'"),
    ("rope_parameters", {"rope_type": "llama3", "factor": 8.0}, r"'rope_parameters\.low_freq_factor': missing"),
    ("hidden_size", _DELETE, r"config\.json: field 'hidden_size': missing"),
    ("num_key_value_heads", 3, r"field 'num_key_value_heads': num_attention_heads \(4\) must be a multiple"),
    ("vocab_size", "100", r"field 'vocab_size': expected a positive integer"),
    ("hidden_act", "gelu", r"field 'hidden_act': only silu"),
    ("tie_word_embeddings", "yes", r"field 'tie_word_embeddings': expected true or false"),
])
def test_error_bad_config(saved, tmp_path, field, value, match):
    path = copy_of(saved, "llama", tmp_path)
    _edit_config(path, **{field: value})
    with pytest.raises(ValueError, match=match) as e:
        load(path)
    assert os.path.join(path, "config.json") in str(e.value)


def test_error_config_not_json(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    open(os.path.join(path, "config.json"), "w").write("{not json")
    with pytest.raises(ValueError, match=r"config\.json: config\.json is not valid JSON"):
        load(path)


def test_error_truncated_safetensors(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    f = os.path.join(path, "model.safetensors")
    size = os.path.getsize(f)
    with open(f, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        load(path)


def test_error_corrupt_header(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    f = os.path.join(path, "model.safetensors")
    with open(f, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + n // 2)
        fh.write(b"\x00garbage\xff{[")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        load(path)


def test_error_header_length_too_large(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    f = os.path.join(path, "model.safetensors")
    with open(f, "r+b") as fh:
        fh.write(struct.pack("<Q", 10 ** 12))
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        load(path)


def test_error_missing_tensor(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    _edit_tensors(path, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"model\.safetensors: missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"
                                         r" \(expected shape \[64, 32\]\)"):
        load(path)


def test_error_missing_lm_head_untied(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    _edit_tensors(path, lambda s: s.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'lm_head\.weight'"):
        load(path)


def test_error_extra_tensor(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    _edit_tensors(path, lambda s: s.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}))
    with pytest.raises(ValueError, match=r"model\.safetensors: unexpected tensor "
                                         r"'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        load(path)


def test_ignored_tensors_are_accepted(saved, tmp_path):
    """Tensors transformers ignores: rotary inv_freq buffers, a tied lm_head."""
    path = copy_of(saved, "qwen2_tied_bias", tmp_path)
    _edit_tensors(path, lambda s: s.update({"model.rotary_emb.inv_freq": torch.ones(4),
                                            "lm_head.weight": s["model.embed_tokens.weight"].clone()}))
    ids = tm.sample_ids(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(load(path).logits(ids), hf_logits(saved("qwen2_tied_bias")[1], ids),
                                   atol=ATOL, rtol=0)


def test_error_wrong_shape(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    _edit_tensors(path, lambda s: s.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 32)}))
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' "
                                         r"has shape \[8, 32\], expected \[16, 32\]"):
        load(path)


def test_error_integer_tensor(saved, tmp_path):
    path = copy_of(saved, "llama", tmp_path)
    _edit_tensors(path, lambda s: s.update({"model.norm.weight": torch.ones(32, dtype=torch.int32)}))
    with pytest.raises(ValueError, match=r"tensor 'model\.norm\.weight' has dtype I32"):
        load(path)


def test_error_index_points_to_missing_shard(tmp_path):
    model = tm.hf_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    shard = sorted(set(index["weight_map"].values()))[1]
    os.remove(tmp_path / shard)
    with pytest.raises(ValueError, match=rf"model\.safetensors\.index\.json: tensor '.*' points to missing shard "
                                         rf".*{shard}"):
        load(tmp_path)


def test_error_index_lists_tensor_absent_from_shard(tmp_path):
    model = tm.hf_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    f = tmp_path / "model.safetensors.index.json"
    index = json.load(open(f))
    index["weight_map"]["model.layers.0.mlp.gate_proj.weight"] = index["weight_map"]["model.norm.weight"]
    json.dump(index, open(f, "w"))
    with pytest.raises(ValueError, match=r"tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' listed in "
                                         r"model\.safetensors\.index\.json is not in this shard"):
        load(tmp_path)


def test_error_bad_dtype(saved):
    with pytest.raises(ValueError, match="dtype: expected one of"):
        load(saved("llama")[0], dtype="int8")


# ----------------------------------------------------------------------
# atomic save
# ----------------------------------------------------------------------
def test_save_crash_leaves_previous_checkpoint(saved, tmp_path, monkeypatch):
    policy = load(saved("llama")[0])
    target = tmp_path / "ckpt"
    policy.save(target)
    before = {n: open(target / n, "rb").read() for n in os.listdir(target)}

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(Tokenizer, "save", boom)  # fails after the weights were written
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    with pytest.raises(RuntimeError, match="disk full"):
        policy.save(target)
    assert {n: open(target / n, "rb").read() for n in os.listdir(target)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary folder left
    with pytest.raises(RuntimeError):
        policy.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_save_replaces_existing(saved, tmp_path):
    target = tmp_path / "ckpt"
    load(saved("llama")[0]).save(target)
    load(saved("qwen3_qknorm")[0]).save(target)
    assert load(target).config.architecture == "Qwen3ForCausalLM"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_top_level_load():
    assert sgpo_engine.load is load and sgpo_engine.Policy is Policy
