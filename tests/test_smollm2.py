"""The engine on a real pretrained model: SmolLM2-135M-Instruct (Llama,
vocabulary 49152, tied embeddings, ChatML template) against transformers."""
from __future__ import annotations

import pytest
import torch

import sgpo_engine as se
from sgpo_engine import ops

transformers = pytest.importorskip("transformers")
QUESTION = [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many in total?"}]
SHORT = [{"role": "user", "content": "What is 2+3?"}]  # answered in a few tokens, then <|im_end|>


@pytest.fixture(scope="module")
def both(smollm2):
    ours = se.load(smollm2, dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    return ours, theirs, transformers.AutoTokenizer.from_pretrained(smollm2)


def test_chat_template_and_logits_match_transformers(both):
    ours, theirs, tok = both
    ids = ours.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    want_ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    want_ids = want_ids["input_ids"] if isinstance(want_ids, dict) or hasattr(want_ids, "keys") else want_ids
    assert list(ids) == list(want_ids)
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), theirs(x).logits, rtol=1e-4, atol=1e-4)


def test_greedy_chat_generation_matches_transformers_and_stops_at_eos(both):
    ours, theirs, tok = both
    [[c]] = se.generate(ours, [SHORT], max_new_tokens=64, temperature=0.0)
    prompt = torch.tensor([c.prompt_ids])
    with torch.no_grad():
        ref = theirs.generate(prompt, max_new_tokens=64, do_sample=False, eos_token_id=tok.eos_token_id)
    assert c.token_ids == ref[0, prompt.shape[1]:].tolist()
    assert c.finish_reason == "stop" and c.token_ids[-1] == tok.eos_token_id  # <|im_end|> ends the turn
    for marker in ("<|im_end|>", "<|im_start|>", "assistant\n"):
        assert marker not in c.text  # the judge sees the answer, not the template
    assert any(ch.isdigit() for ch in c.text)


def test_fused_logprobs_on_the_real_vocabulary(both):
    ours, _, _ = both
    ids = torch.tensor([ours.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)])
    with torch.no_grad():
        hidden = ours.hidden_states(ids[:, :-1])
        want = torch.log_softmax(ours.logits(ids[:, :-1]).double(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        got = ops.fused_logprobs(hidden, ours.lm_head_weight, ids[:, 1:], chunk_size=7)
    assert ours.lm_head_weight.shape[0] == 49152
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
