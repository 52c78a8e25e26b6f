"""The built-in arithmetic task: generator, exact judge, verifier, tokenizer,
the SFT loss of the warm start, and (when shipped) the warm-start model."""
from __future__ import annotations

import json
import os

import pytest
import torch

from sgpo_engine.tasks import (ArithTask, VOCAB, WARM_START_DIR, build_tokenizer, correct_prefix,
                               eval_set, extract_answer, first_error, is_heldout, make_problem, parse_prompt,
                               premature_answer, response_lines, save_tokenizer, step_judge, verify)
from sgpo_engine.tasks.tokenizer import BOS_ID, EOS_ID, PAD_ID, encode_chars

# 17+5-3+8= : the example of docs/design.md section 6.8
EXAMPLE = make_problem(17, [("+", 5), ("-", 3), ("+", 8)])
REF = EXAMPLE.reference


# ----------------------------------------------------------------------
# generator
# ----------------------------------------------------------------------
def test_example_problem():
    assert EXAMPLE.prompt == "17+5-3+8="
    assert REF == "17+5=22\n22-3=19\n19+8=27\n#27"
    assert EXAMPLE.answer == 27 and EXAMPLE.k == 3
    assert EXAMPLE.values == [17, 22, 19, 27]
    assert parse_prompt("17+5-3+8=") == EXAMPLE


@pytest.mark.parametrize("split", ["train", "eval"])
def test_generator_properties(split):
    task = ArithTask(1, 10, seed=3, split=split)
    problems = task.batch(400)
    assert {p.k for p in problems} == set(range(1, 11))
    for p in problems:
        assert len(p.ops) == p.k
        assert all(0 <= v <= 99 for v in p.values)
        assert all(op in "+-" and 1 <= x <= 99 for op, x in p.ops)
        lines = p.reference.split("\n")
        assert len(lines) == p.k + 1 and lines[-1] == f"#{p.answer}"
        assert p.values[-1] == p.answer
        assert parse_prompt(p.prompt) == p
        assert is_heldout(p.prompt) == (split == "eval")


def test_generator_deterministic_and_weighted():
    a = ArithTask(1, 8, seed=5).batch(50)
    assert a == ArithTask(1, 8, seed=5).batch(50)
    assert a != ArithTask(1, 8, seed=6).batch(50)
    only_k2 = ArithTask(1, 3, seed=0, weights=[0, 1, 0]).batch(30)
    assert {p.k for p in only_k2} == {2}
    with pytest.raises(ValueError):
        ArithTask(1, 3, weights=[1, 1])
    with pytest.raises(ValueError):
        ArithTask(0, 3)


def test_heldout_disjoint_and_large_enough():
    train = {p.prompt for p in ArithTask(1, 2, seed=0).batch(3000)}
    for k in (1, 2, 8):
        ev = eval_set(k, 300)
        assert len(ev) == 300 and len({p.prompt for p in ev}) == 300
        assert all(p.k == k and is_heldout(p.prompt) for p in ev)
        assert not train & {p.prompt for p in ev}
    assert eval_set(4, 300) == eval_set(4, 300)


def test_make_problem_rejects_out_of_range():
    with pytest.raises(ValueError, match="leaves"):
        make_problem(90, [("+", 20)])
    with pytest.raises(ValueError, match="leaves"):
        make_problem(5, [("-", 6)])
    with pytest.raises(ValueError, match="operand"):
        make_problem(5, [("+", 0)])
    with pytest.raises(ValueError):
        parse_prompt("17+5")


# ----------------------------------------------------------------------
# exact judge
# ----------------------------------------------------------------------
def test_reference_is_fully_correct():
    for p in ArithTask(1, 10, seed=1).batch(100):
        assert first_error(p.reference, p.reference) is None
        assert step_judge(p, response_lines(p.reference), p.reference) is None
        assert verify(p.reference, p) and verify(p.reference, p.answer) and verify(p.reference, str(p.answer))
        assert not premature_answer(p.reference, p)
        assert correct_prefix(p.reference, p) == 1.0


# (response, first error position, the step the judge names)
CASES = [
    ("17+5=22\n22-3=18\n18+8=26\n#26", 1, 1),     # wrong arithmetic at step 2
    ("17+5=22\n22-4=18\n18+8=26\n#26", 1, 1),     # wrong operand copied at step 2
    ("17+5=23\n23-3=20\n20+8=28\n#28", 0, 0),     # wrong at the first step
    ("17+5=22\n22-3=19\n19+8=27\n#28", 3, 3),     # right steps, wrong answer line
    ("17+5=22\n19+8=27\n#27", 1, 1),              # a missing operation line
    ("17+5=22\n22-3=19\n19+8=27", 3, 2),          # missing answer line: position len(steps),
    ("17+5=22\n22-3=19", 2, 1),                   # stopped early   ... the judge names the last step
    ("17+5=22\n#22", 1, 1),                       # early answer
    ("#27", 0, 0),                                # answer only
    ("hello\nworld", 0, 0),                       # garbage
    ("", 0, 0),                                   # empty response
    ("17+5=22\n22-3=19\n19+8=27\n#27\n27+1=28", 4, 4),   # extra line after a correct answer
    ("  17+5=22 \n\n22-3=19\n19+8=27\n#27\n\n", None, None),  # blank lines and spaces are ignored
]


@pytest.mark.parametrize("response, position, step", CASES)
def test_first_error(response, position, step):
    assert first_error(response, REF) == position
    assert first_error(response, EXAMPLE) == position
    steps = response_lines(response)
    # the FunctionJudge form, with the reference or reconstructed from the prompt
    assert step_judge(EXAMPLE.prompt, steps, REF) == step
    assert step_judge(EXAMPLE, steps) == step
    assert step_judge({"prompt": EXAMPLE.prompt}, steps, None) == step
    assert step_judge(EXAMPLE.prompt, steps) == step


def test_function_judge_verdicts():
    from sgpo_engine.tasks import exact_judge
    judge = exact_judge()
    responses = [r for r, _, _ in CASES]
    verdicts = judge.judge([EXAMPLE.prompt] * len(CASES), responses, [REF] * len(CASES))
    assert not any(v.failed for v in verdicts), [v.detail for v in verdicts if v.failed]
    assert [v.first_error for v in verdicts] == [s if r.strip() else None for r, _, s in CASES]
    assert [v.num_steps for v in verdicts] == [len(response_lines(r)) for r in responses]
    assert verdicts[6].rts == 0.5 and verdicts[7].rts == 0.5 and verdicts[-1].rts == 1.0
    # without references: rebuilt from the prompt
    again = judge.judge([EXAMPLE.prompt] * len(CASES), responses)
    assert [v.first_error for v in again] == [v.first_error for v in verdicts]


def test_step_judge_needs_a_reference_for_unknown_problems():
    with pytest.raises(ValueError, match="reference"):
        step_judge("what is 2+2?", ["4"])


def test_correct_prefix():
    assert correct_prefix("17+5=22\n22-3=18", REF) == 0.25
    assert correct_prefix("17+5=22\n22-3=19\n19+8=27", REF) == 0.75
    assert correct_prefix("", REF) == 0.0
    assert correct_prefix("17+5=22\n22-3=19\n19+8=27\n#27\nx", REF) == 1.0   # wrong, but the prefix is whole


# ----------------------------------------------------------------------
# verifier and premature answers
# ----------------------------------------------------------------------
def test_verify():
    assert verify(REF, EXAMPLE)
    assert verify("garbage\n#27", 27)                      # answer-only check
    assert verify("#27\n", "27")
    assert not verify("17+5=22\n#22", EXAMPLE)
    assert not verify(REF + "\n27+1=28", EXAMPLE)           # the final line must be the answer
    assert not verify("#027", 27)
    assert not verify("27", 27)
    assert not verify("", 27)
    assert extract_answer(REF) == 27
    assert extract_answer("#") is None and extract_answer("#x") is None and extract_answer("") is None


def test_premature_answer():
    assert premature_answer("17+5=22\n#22", EXAMPLE)
    assert premature_answer("#27", EXAMPLE)
    assert premature_answer("17+5=22\n22-3=19\n#27", 3)
    assert not premature_answer("1+1=2\n2+2=4\n4+4=8\n#8", EXAMPLE)   # wrong lines, but not premature
    assert not premature_answer("17+5=22", EXAMPLE)                   # no answer at all
    assert not premature_answer(REF, {"k": 3})
    assert premature_answer("#1", {"prompt": "1+1+1="})


# ----------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------
def test_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer()
    assert tok.vocab_size == len(VOCAB) == 19
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert tok.eos_token_ids == {EOS_ID}
    text = EXAMPLE.prompt + REF
    ids = tok.encode(text)
    assert ids[0] == BOS_ID and ids[1:] == encode_chars(text) and len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids + [EOS_ID]) == "<bos>" + text + "<eos>"
    ids2, offsets = tok.encode_with_offsets(text)
    assert ids2 == ids[1:] and offsets == [(i, i + 1) for i in range(len(text))]
    assert tok.encode("<eos>", add_special_tokens=False) == [EOS_ID]
    assert tok.encode("1 2", add_special_tokens=False) == [VOCAB["1"], VOCAB["<unk>"], VOCAB["2"]]

    save_tokenizer(tmp_path)
    from sgpo_engine.model.tokenizer import Tokenizer
    loaded = Tokenizer.from_folder(tmp_path)
    assert loaded.encode(text) == ids and loaded.eos_token_ids == {EOS_ID}
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == EOS_ID


# ----------------------------------------------------------------------
# model and SFT loss
# ----------------------------------------------------------------------
def test_sft_batch_masks_the_prompt():
    from sgpo_engine.tasks import sft_batch
    inputs, targets, mask = sft_batch([EXAMPLE, make_problem(3, [("+", 4)])])
    assert inputs.shape == targets.shape == mask.shape
    row = targets[0][mask[0].bool()].tolist()
    assert row == encode_chars(REF) + [EOS_ID]
    assert inputs[0, 0] == BOS_ID and inputs[0, 1:1 + len(EXAMPLE.prompt)].tolist() == encode_chars(EXAMPLE.prompt)
    assert targets[1][mask[1].bool()].tolist() == encode_chars("3+4=7\n#7") + [EOS_ID]
    assert (targets[1][~mask[1].bool()][-3:] == PAD_ID).all()


def test_model_size_and_micro_batched_loss():
    from sgpo_engine.tasks import new_policy, num_parameters, sft_batch, sft_loss
    from sgpo_engine.tasks.warmup import sft_step
    policy = new_policy(seed=0)
    assert policy.config.architecture == "LlamaForCausalLM"
    assert 550_000 <= num_parameters(policy) <= 650_000
    problems = ArithTask(1, 4, seed=0).batch(6)
    loss = sft_loss(policy, *sft_batch(problems))
    loss.backward()
    full = [p.grad.clone() for p in policy.parameters()]
    for p in policy.parameters():
        p.grad = None
    split = sft_step(policy, problems, micro_batches=3)
    assert split == pytest.approx(loss.item(), rel=1e-5)
    for g, p in zip(full, policy.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_untrained_model_generates_and_round_trips(tmp_path):
    from sgpo_engine import load
    from sgpo_engine.generation import generate
    from sgpo_engine.tasks import new_policy
    policy = new_policy(seed=0)
    policy.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.tokenizer.eos_token_ids == {EOS_ID}
    ids = torch.tensor([build_tokenizer().encode(EXAMPLE.prompt)])
    torch.testing.assert_close(loaded.logits(ids), policy.logits(ids))
    out = generate(loaded, [EXAMPLE.prompt], num_samples=2, max_new_tokens=5, temperature=0.0)
    assert len(out) == 1 and len(out[0]) == 2 and out[0][0].token_ids == out[0][1].token_ids


# ----------------------------------------------------------------------
# the shipped warm start
# ----------------------------------------------------------------------
_SHIPPED = os.path.isfile(os.path.join(WARM_START_DIR, "model.safetensors"))


@pytest.mark.skipif(not _SHIPPED, reason="no warm start in sgpo_engine/tasks/warm_start/")
def test_warm_start_loads_and_solves_short_chains():
    from sgpo_engine.generation import generate
    from sgpo_engine.tasks import evaluate, load_warm_start
    policy = load_warm_start(train_if_missing=False)
    assert policy.config.vocab_size == len(VOCAB)
    out = generate(policy, [EXAMPLE.prompt], num_samples=1, max_new_tokens=40, temperature=0.0)[0][0]
    assert out.finish_reason == "stop" and out.text.splitlines()[-1].startswith("#"), out.text
    acc = evaluate(policy, ks=[1], n=50)["k1"]["accuracy"]  # held-out, greedy
    assert acc >= 0.6, acc                                 # k = 1 is easy after the warm start
    info = json.load(open(os.path.join(WARM_START_DIR, "warm_start.json")))
    assert set(info["heldout_greedy"]) >= {"k1", "k4", "k8", "k12"}


def test_load_warm_start_trains_once_into_the_cache(tmp_path, monkeypatch):
    from sgpo_engine.tasks import load_warm_start, new_policy, warmup
    calls = []

    def fake_warm_start(output_dir, **kwargs):      # stands in for the 10-minute training
        calls.append(output_dir)
        new_policy(seed=0).save(output_dir)

    monkeypatch.setattr(warmup, "WARM_START_DIR", str(tmp_path / "not_shipped"))
    monkeypatch.setattr(warmup, "warm_start", fake_warm_start)
    monkeypatch.setenv("SGPO_ENGINE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError):
        load_warm_start(train_if_missing=False)
    first = load_warm_start()
    second = load_warm_start()
    assert calls == [warmup.cache_dir()] and calls[0].startswith(str(tmp_path / "cache"))
    assert first.tokenizer.eos_token_ids == {EOS_ID}
    torch.testing.assert_close(second.lm_head_weight, first.lm_head_weight)
