"""The character-level tokenizer of the arithmetic task.

A `tokenizers` WordLevel model over single characters (0-9 + - = # and
newline) plus special tokens, with a pre-tokenizer that isolates every
character (so each token covers exactly one character and offsets are exact),
a Fuse decoder (decode concatenates, no spaces), and a post-processor that
prefixes <bos>. Saved as tokenizer.json + tokenizer_config.json (+ the
generation_config.json written by Policy.save), it loads like any Hugging Face
tokenizer.
"""
from __future__ import annotations

import json
import os

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = tuple("0123456789") + ("+", "-", "=", "#", "\n")
VOCAB = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}   # 19 tokens
PAD_ID, BOS_ID, EOS_ID, UNK_ID = (VOCAB[t] for t in SPECIAL_TOKENS)

TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 256,
}
GENERATION_CONFIG = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}


def build_backend():
    """The `tokenizers.Tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")   # every character
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", BOS_ID)])
    return tok


def build_tokenizer():
    """The engine's Tokenizer (sgpo_engine.model.Tokenizer) for the task."""
    from ..model.tokenizer import Tokenizer
    return Tokenizer(build_backend(), dict(TOKENIZER_CONFIG), eos_token_ids=[EOS_ID])


def save_tokenizer(path: str | os.PathLike) -> None:
    """Writes tokenizer.json, tokenizer_config.json and generation_config.json into path."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    build_tokenizer().save(path)
    with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")


def encode_chars(text: str) -> list[int]:
    """Fast path for the task's own text (no special tokens): one id per
    character, identical to the tokenizer's ids; unknown characters -> <unk>."""
    return [VOCAB.get(c, UNK_ID) for c in text]
