"""Tiny random Hugging Face checkpoints for the model-layer tests.

Each case builds a transformers model of one architecture / RoPE recipe from
its config class, with random weights from a fixed seed, and saves it with
save_pretrained plus a tiny byte-level BPE tokenizer (trained here on a few
sentences with the `tokenizers` library) and a chat template. Nothing is
downloaded. transformers is a test-only dependency.
"""
from __future__ import annotations

import functools
import json
import os

import torch

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_VOCAB = 300   # byte alphabet (256) + specials + a few merges
MODEL_VOCAB = 320       # larger than the tokenizer's, as real checkpoints pad it

# A template that exercises what transformers' environment provides: loopcontrols
# (break/continue), raise_exception, tojson, namespace, bos_token / eos_token
# variables, trim_blocks / lstrip_blocks whitespace handling.
CHAT_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(system=none) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set ns.system = message['content'] %}
        {% continue %}
    {% endif %}
    {% if message['role'] not in ['user', 'assistant', 'tool'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if loop.first and ns.system is not none %}
<|im_start|>system
{{ ns.system }}<|im_end|>
    {% endif %}
<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}
{%- else %}{{ message['content'] | tojson }}{% endif %}<|im_end|>
    {% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "17+5=22\n22-3=19\n19+8=27\n#27",
    "Hello world, this is a tiny tokenizer for tests. Answer: \\boxed{42}",
    "What is 12 + 30? Let's think step by step.",
    "café naïve résumé — unicode text 東京",
]


@functools.lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok.to_str()


def write_tokenizer(path: str, *, template_file: bool = False, generation_eos=None) -> None:
    """tokenizer.json + tokenizer_config.json (chat template inside, or in
    chat_template.jinja when template_file) + optionally a generation_config.json eos list."""
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(_tokenizer_json())
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False},
        "pad_token": "<pad>",
        "clean_up_tokenization_spaces": False,
    }
    if template_file:
        with open(os.path.join(path, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(CHAT_TEMPLATE)
    else:
        cfg["chat_template"] = CHAT_TEMPLATE
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    if generation_eos is not None:
        gpath = os.path.join(path, "generation_config.json")
        gen = json.load(open(gpath)) if os.path.exists(gpath) else {}
        gen["eos_token_id"] = generation_eos
        with open(gpath, "w") as f:
            json.dump(gen, f)


_COMMON = dict(vocab_size=MODEL_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=2)

# name -> (config class name, extra config kwargs). Chosen so that each RoPE
# recipe actually changes the frequencies at the test lengths (T = 12).
CASES = {
    "llama": ("LlamaConfig", dict(max_position_embeddings=64)),
    "llama_tied_linear": ("LlamaConfig", dict(
        tie_word_embeddings=True, max_position_embeddings=64,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})),
    "llama_llama3_bias": ("LlamaConfig", dict(
        attention_bias=True, mlp_bias=True, max_position_embeddings=64, head_dim=16,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16, "rope_theta": 10000.0})),
    "llama_dynamic": ("LlamaConfig", dict(
        max_position_embeddings=8, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})),
    "llama_yarn": ("LlamaConfig", dict(
        max_position_embeddings=64,
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                         "rope_theta": 10000.0})),
    "mistral_window": ("MistralConfig", dict(max_position_embeddings=64, sliding_window=5)),
    "qwen2_tied_bias": ("Qwen2Config", dict(tie_word_embeddings=True, max_position_embeddings=64)),
    "qwen2_sliding": ("Qwen2Config", dict(max_position_embeddings=64, use_sliding_window=True,
                                          sliding_window=4, max_window_layers=1)),
    "qwen3_qknorm": ("Qwen3Config", dict(head_dim=16, max_position_embeddings=64)),
    "qwen3_tied": ("Qwen3Config", dict(head_dim=8, num_key_value_heads=4, tie_word_embeddings=True,
                                        max_position_embeddings=64)),
}


def hf_model(case: str, seed: int = 0):
    """A random transformers model of `case` (eval mode, fp32)."""
    import transformers
    cls_name, extra = CASES[case]
    config = getattr(transformers, cls_name)(**{**_COMMON, **extra})
    model_cls = getattr(transformers, cls_name.replace("Config", "ForCausalLM"))
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        # random norm weights and biases, so a swapped or missing one shows in the logits
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                # sharper attention, so RoPE recipes and masks change the logits visibly
                p.mul_(12.0)
    return model


def save_case(case: str, path: str, *, seed: int = 0, max_shard_size=None, **tokenizer_kwargs):
    """Saves case `case` (model + tokenizer) to `path`; returns the transformers model."""
    model = hf_model(case, seed)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kwargs)
    write_tokenizer(path, **tokenizer_kwargs)
    return model


def sample_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """[B, T] random ids that avoid the special tokens (ids 0..4)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, TOKENIZER_VOCAB, (batch, length), generator=g)
