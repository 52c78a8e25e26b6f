"""Step-level credit cost: mapping generated tokens to characters.

    python bench/bench_credit.py            # responses of 128, 512 and 2048 tokens
    python bench/bench_credit.py --quick    # smoke run

`credit_assignment = "prefix"` maps each judged response's tokens to the
characters they wrote. The engine's Tokenizer.decode_with_offsets decodes a
short window per token (O(n)); the obvious exact alternative decodes every
prefix of the response (O(n^2)). Both run here, in the same process, on the
same byte-level BPE responses (tests/tiny_models.py's tokenizer): GSM8K model
solutions from tests/data, and multi-byte text (CJK, emoji, accents) whose
characters are split across tokens, repeated to length. The two must agree on
where each token ends. Writes bench/results/credit_cpu.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/tiny_models.py: the tiny BPE tokenizer

from tokenizers import Tokenizer as Backend  # noqa: E402

from sgpo_engine.model.tokenizer import Tokenizer  # noqa: E402
from tiny_models import _tokenizer_json  # noqa: E402


def prefix_decode_ends(tok: Tokenizer, ids: list[int]) -> list[int]:
    """The baseline: decode ids[:i+1] for every i (O(n^2)). A token ends where
    its decoded prefix ends; a token whose prefix ends inside a character (not
    text yet) ends with the token that completes it, as in decode_with_offsets."""
    text = tok.decode(ids)
    ends, pending = [], 0
    for i in range(len(ids)):
        prefix = tok.decode(ids[:i + 1])
        if text.startswith(prefix):
            ends += [len(prefix)] * (pending + 1)
            pending = 0
        else:
            pending += 1
    return ends + [len(text)] * pending


# Multi-byte text: with the tests' small byte-level vocabulary most of these
# characters are written by several tokens each (split characters).
MULTIBYTE = ["東京大学の数学: 17 + 5 = 22。", "答えは 27 です 😀", "naïve café — résumé ✓", "𝑥² + 𝑦² = 𝑧²"]


def gsm8k_texts() -> list[str]:
    with open(os.path.join(ROOT, "tests", "data", "gsm8k_sample.jsonl"), encoding="utf-8") as f:
        return [s["solution"] for line in f for s in json.loads(line)["solutions"]]


def responses(tok: Tokenizer, texts: list[str], length: int, count: int) -> list[list[int]]:
    out = []
    for k in range(count):
        ids: list[int] = []
        j = k
        while len(ids) < length:
            ids += tok.encode(texts[j % len(texts)] + "\n\n", add_special_tokens=False)
            j += 1
        out.append(ids[:length])
    return out


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "credit_cpu.json"))
    args = ap.parse_args(argv)
    tok = Tokenizer(Backend.from_str(_tokenizer_json()))
    lengths, count, repeat = ((64, 128), 2, 1) if args.quick else ((128, 512, 2048), 8, 3)
    rows = []
    for name, texts in (("gsm8k", gsm8k_texts()), ("multibyte", MULTIBYTE)):
        for n in lengths:
            batch = responses(tok, texts, n, count)
            for ids in batch:  # the two agree on where every token ends (whole characters)
                _, spans = tok.decode_with_offsets(ids)
                assert [e for _, e in spans] == prefix_decode_ends(tok, ids), "decode_with_offsets disagrees"
            ours = timed(lambda: [tok.decode_with_offsets(ids) for ids in batch], repeat) / count
            base = timed(lambda: [prefix_decode_ends(tok, ids) for ids in batch], repeat) / count
            rows.append({"text": name, "tokens": n, "decode_with_offsets_ms": ours * 1e3,
                         "prefix_decodes_ms": base * 1e3, "speedup": base / ours})
            print(f"  {name:9s} {n:5d} tokens  decode_with_offsets {ours * 1e3:8.2f} ms   "
                  f"prefix decodes {base * 1e3:9.2f} ms   {base / ours:6.1f}x", flush=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "tokenizer": "byte-level BPE, 300 tokens (tests/tiny_models.py)", "responses_per_length": count,
              "results": rows}
    if not args.quick or args.out != ap.get_default("out"):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
