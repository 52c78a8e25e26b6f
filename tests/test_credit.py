"""Step-level credit (sgpo_engine/credit/prefix.py): generated tokens mapped to
the characters they wrote (Tokenizer.decode_with_offsets), judged steps mapped
to token bounds, and the [N, T] advantages built from them.

decode_with_offsets is checked against independent references: one character
per token for the built-in tokenizer, and for a byte-level BPE tokenizer the
tokens' own bytes (GPT-2's byte <-> unicode table) on random, non-canonical id
sequences that split multi-byte characters across tokens and interleave
special tokens.
"""
from __future__ import annotations

import json
import os
import random

import pytest
import torch

from sgpo_engine import tasks
from sgpo_engine.judge import split_steps, step_spans
from sgpo_engine.judge.verdict import Verdict
from sgpo_engine.model.tokenizer import Tokenizer
from sgpo_engine.credit import prefix_reach, response_reach, step_token_bounds, token_advantages
from sgpo_engine.generation import Completion
from tiny_models import SPECIAL_TOKENS, _tokenizer_json


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer as Backend
    return Tokenizer(Backend.from_str(_tokenizer_json()), {"eos_token": "</s>", "bos_token": "<s>"})


@pytest.fixture(scope="module")
def arith():
    return tasks.build_tokenizer()


# --------------------------------------------------------------------------
# decode_with_offsets
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("skip", [True, False])
def test_offsets_builtin_tokenizer(arith, seed, skip):
    rng = random.Random(seed)
    vocab = list(tasks.VOCAB.values())
    ids = [rng.choice(vocab) for _ in range(rng.randint(0, 60))]
    text, spans = arith.decode_with_offsets(ids, skip_special_tokens=skip)
    assert text == arith.decode(ids, skip_special_tokens=skip)
    pos = 0
    for i, (s, e) in zip(ids, spans):
        want = arith.decode([i], skip_special_tokens=skip)  # every token is one character or a special
        assert (s, e) == (pos, pos + len(want)) and text[s:e] == want
        pos = e
    assert pos == len(text)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel tokens are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byte_level_reference(tok: Tokenizer, ids: list[int], skip: bool):
    """(text, spans) from the tokens' bytes: tokens between two byte positions
    that are character boundaries form a group, and each token of a group
    spans the group's characters (a token that only writes part of a
    character shares the span of the character it helps write)."""
    u2b = {c: b for b, c in _bytes_to_unicode().items()}
    special = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    pieces = []
    for i in ids:
        t = tok.backend.id_to_token(i)
        pieces.append(b"" if i in special and skip else t.encode() if i in special else bytes(u2b[c] for c in t))
    data = b"".join(pieces)
    text = data.decode("utf-8")
    chars_at = lambda pos: len(data[:pos].decode("utf-8"))  # raises when pos is not a character boundary
    bounds, pos = [0], 0
    for p in pieces:
        pos += len(p)
        bounds.append(pos)

    def boundary(pos):
        try:
            chars_at(pos)
            return True
        except UnicodeDecodeError:
            return False

    spans, i = [], 0
    while i < len(ids):
        j = i + 1
        while not boundary(bounds[j]):  # extend the group to the next character boundary
            j += 1
        spans += [(chars_at(bounds[i]), chars_at(bounds[j]))] * (j - i)
        i = j
    return text, spans


def random_bpe_ids(tok: Tokenizer, rng: random.Random) -> list[int]:
    """Valid UTF-8 text written by a non-canonical token sequence: chunks
    encoded on their own (tokens do not merge across chunk edges), some spelled
    byte by byte (multi-byte characters split across tokens), special tokens
    between chunks."""
    pool = ["café ", "naïve", " 東京", "—", "17+5=22\n", "\n\n", "Step 1: ", "hello", " world", "é", "😀", "x"]
    b2u = _bytes_to_unicode()
    ids = []
    for _ in range(rng.randint(0, 12)):
        chunk = rng.choice(pool)
        if rng.random() < 0.3:
            ids += [tok.token_to_id(b2u[b]) for b in chunk.encode()]
        else:
            ids += tok.encode(chunk, add_special_tokens=False)
        if rng.random() < 0.15:
            ids.append(tok.token_to_id(rng.choice(SPECIAL_TOKENS)))
    return ids


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("skip", [True, False])
def test_offsets_byte_level_bpe_match_bytes(bpe, seed, skip):
    ids = random_bpe_ids(bpe, random.Random(seed))
    text, spans = bpe.decode_with_offsets(ids, skip_special_tokens=skip)
    ref_text, ref_spans = byte_level_reference(bpe, ids, skip)
    assert text == ref_text
    assert spans == ref_spans


def test_offsets_split_character_shares_its_span(bpe):
    b2u = _bytes_to_unicode()
    ids = bpe.encode("a", add_special_tokens=False) + [bpe.token_to_id(b2u[b]) for b in "東".encode()] + \
        bpe.encode("b", add_special_tokens=False)
    text, spans = bpe.decode_with_offsets(ids)
    assert text == "a東b"
    assert spans == [(0, 1), (1, 2), (1, 2), (1, 2), (2, 3)]


def test_offsets_empty(bpe, arith):
    assert bpe.decode_with_offsets([]) == ("", [])
    assert arith.decode_with_offsets([tasks.VOCAB["<eos>"]], skip_special_tokens=True) == ("", [(0, 0)])


# --------------------------------------------------------------------------
# steps -> token bounds
# --------------------------------------------------------------------------
def test_step_token_bounds_by_hand():
    spans = [(0, 3), (3, 5), (5, 8), (8, 8), (8, 10)]
    assert step_token_bounds(spans, (5, 8)) == (2, 3)   # tokens 0-1 before, 0-2 through
    assert step_token_bounds(spans, (4, 8)) == (1, 3)   # token 1 straddles the step start: not before
    assert step_token_bounds(spans, (0, 3)) == (0, 1)
    assert step_token_bounds(spans, (8, 10)) == (4, 5)  # the empty (special) token at 8 comes before
    assert step_token_bounds([], (0, 0)) == (0, 0)


def brute_force_bounds(tok, ids, text, step):
    """From whole-prefix decodes: the most leading tokens whose text ends by the
    step's start, the fewest whose text covers its end (prefixes that end inside
    a character are not text yet)."""
    lens = {}
    for k in range(len(ids) + 1):
        prefix = tok.decode(ids[:k], skip_special_tokens=True)
        if text.startswith(prefix):
            lens[k] = len(prefix)
    before = max(k for k, n in lens.items() if n <= step[0])
    through = min(k for k, n in lens.items() if n >= step[1])
    return before, through


@pytest.mark.parametrize("text,mode", [
    ("Step 1: 17+5=22\n\nStep 2: 22-3=18\n\nAnswer 18", "paragraph"),
    ("café 17+5=22\nnaïve 東京 22-3=19\n#19", "line"),
    ("1. hello world\n2. café\n3. 東京 —", "marker"),
])
def test_response_reach_bpe_matches_brute_force(bpe, text, mode):
    ids = bpe.encode(text, add_special_tokens=False) + [bpe.token_to_id("</s>")]
    steps = step_spans(text, mode)
    for fe in range(len(steps)):
        before, through = brute_force_bounds(bpe, ids, text, steps[fe])
        assert response_reach(bpe, ids, text, fe, len(steps), mode, positive=True) == before
        assert response_reach(bpe, ids, text, fe, len(steps), mode, positive=False) == through
        got = bpe.decode(ids[:before], skip_special_tokens=True)
        assert got.strip() == text[:steps[fe][0]].strip()  # exactly the correct steps
        assert steps[fe] != (0, 0) and text[steps[fe][0]:steps[fe][1]] in bpe.decode(ids[:through])


def test_response_reach_on_gsm8k_solutions(bpe):
    """Real model solutions (tests/data, GSM8K), one step per line as a judge
    splits them: every step as the first error, against whole-prefix decodes."""
    path = os.path.join(os.path.dirname(__file__), "data", "gsm8k_sample.jsonl")
    with open(path, encoding="utf-8") as f:
        texts = [s["solution"] for line in f for s in json.loads(line)["solutions"]][:12]
    for text in texts:
        ids = bpe.encode(text, add_special_tokens=False)
        decoded, spans = bpe.decode_with_offsets(ids)
        assert decoded == text and all(a <= b for a, b in spans)
        steps = step_spans(text, "line")
        for fe in range(len(steps)):
            before, through = brute_force_bounds(bpe, ids, text, steps[fe])
            assert response_reach(bpe, ids, text, fe, len(steps), "line", positive=True) == before
            assert response_reach(bpe, ids, text, fe, len(steps), "line", positive=False) == through


def test_response_reach_falls_back_when_text_does_not_map(arith):
    ids = arith.encode("1+1=2\n9\n#5", add_special_tokens=False)
    assert response_reach(arith, ids, "1+1=2\n9\n#5", 1, 3, "line", True) == 6
    assert response_reach(arith, ids, "1+1=2\n9\n#5", 1, 3, "line", False) == 7
    assert response_reach(arith, ids, "1+1=2\n9", 1, 2, "line", True) == 6     # text cut at a stop string
    assert response_reach(arith, ids, "2+2=4\n9\n#5", 1, 3, "line", True) is None  # another text
    assert response_reach(arith, ids, "1+1=2\n9\n#5", 1, 4, "line", True) is None  # the judge saw 4 steps


def test_prefix_reach_cases(arith):
    eos = tasks.VOCAB["<eos>"]
    texts = ["1+1=2\n9\n#5", "9\n#3", "1+1=2\n#4", "1+1=2\n2+0=2\n9\n#7", "1+1=2\n9\n#5"]
    comps = [Completion(arith.encode(t, add_special_tokens=False) + [eos], t, None, "stop", []) for t in texts]
    verdicts = [Verdict.judged(1, 3), Verdict.judged(0, 2), Verdict.judged(None, 2), Verdict.judged(2, 4),
                Verdict.failure("timeout", 3)]
    reach, fallbacks = prefix_reach(comps, verdicts, [True] * 5, [-0.5, -1.0, 1.2, 0.3, 0.7], arith, "line")
    # 0: negative, through "9" (7 chars); 1: through "9" (1); 2: no wrong step: all 9 tokens;
    # 3: positive, before "9" (12 chars); 4: failed verdict: all 11 tokens
    assert reach == [7, 1, 9, 12, 11] and fallbacks == 0
    reach, _ = prefix_reach(comps, verdicts, [False] * 5, [-0.5, -1.0, 1.2, 0.3, 0.7], arith, "line")
    assert reach == [len(c.token_ids) for c in comps]  # not credited: sequence level


@pytest.mark.parametrize("N,T", [(1, 1), (3, 7), (5, 33)])
def test_token_advantages_against_loop(N, T):
    g = torch.Generator().manual_seed(N * 100 + T)
    adv = torch.randn(N, dtype=torch.float64, generator=g)
    starts = torch.randint(0, T, (N,), generator=g)
    reach = torch.randint(0, T + 1, (N,), generator=g)
    got = token_advantages(adv, reach, starts, T)
    want = torch.zeros(N, T, dtype=torch.float64)
    for i in range(N):
        for t in range(T):
            if starts[i] <= t < starts[i] + reach[i]:
                want[i, t] = adv[i]
    assert torch.equal(got, want)


def test_split_steps_and_spans_agree():
    text = "café 17+5=22\nnaïve 東京\n\n#19"
    assert split_steps(text, "line") == [text[a:b] for a, b in step_spans(text, "line")]


def test_response_reach_on_sampled_ids(tmp_path):
    """Ids sampled from a random model with a byte-level BPE tokenizer: any
    sequence at all (split characters, invalid bytes, special tokens, ids the
    tokenizer lacks), as the trainer meets them. Steps cut at spaces, e and o (many steps)."""
    import sgpo_engine
    from sgpo_engine.generation import generate
    from tiny_models import save_case
    save_case("llama", str(tmp_path / "m"))
    policy = sgpo_engine.load(str(tmp_path / "m"))
    groups = generate(policy, ["Hello world", "17+5="], num_samples=4, max_new_tokens=48, seed=3)
    mode = "re:[ eo]"
    checked = 0
    for c in (c for g in groups for c in g):
        steps = step_spans(c.text, mode)
        text, spans = policy.tokenizer.decode_with_offsets(c.token_ids, skip_special_tokens=True)
        assert text == c.text and len(spans) == len(c.token_ids)
        assert all(a <= b for a, b in spans)  # ordered (tokens of one character share its span)
        assert all(a0 <= a1 and b0 <= b1 for (a0, b0), (a1, b1) in zip(spans, spans[1:]))
        for fe in range(len(steps)):
            before, through = brute_force_bounds(policy.tokenizer, c.token_ids, c.text, steps[fe])
            assert response_reach(policy.tokenizer, c.token_ids, c.text, fe, len(steps), mode, True) == before
            assert response_reach(policy.tokenizer, c.token_ids, c.text, fe, len(steps), mode, False) == through
            checked += 1
    assert checked > 20
