"""Judge throughput: HTTPJudge against `sgpo serve` (a tiny random model) on loopback.

    python bench/bench_judge.py            # 48 verdicts per concurrency level
    python bench/bench_judge.py --quick    # smoke run

Measures verdicts per second at concurrency 1, 8 and 32 (cache off, so every
verdict is one chat completion; the server batches concurrent requests into
shared generate calls, which is what higher concurrency buys). The levels run
in interleaved rounds and the median round counts, because a shared machine's
load drifts. Two servers:
  model      the tiny model generating max_tokens tokens per verdict (its
             replies are random text, so the verdicts are "unparseable": this
             measures transport and batching, not judging quality);
  transport  the same server with generate replaced by an instant judge-like
             reply: the HTTP, JSON, queueing and parsing overhead alone.
Cache: a rollout with repeated responses (G samples per prompt drawn from a
few distinct texts, as at low temperature) judged twice against the
transport server (only successful verdicts are cached, and the tiny model's
never succeed): within the first call the duplicates are asked once, the
second call is answered from the cache.
Writes bench/results/judge.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/tiny_models.py: the tiny tokenizer

import sgpo_engine  # noqa: E402
from sgpo_engine.judge import HTTPJudge  # noqa: E402
from sgpo_engine.serve import Server  # noqa: E402

PROBLEM = "A shop sells pens at $2 each. Sam buys {k} pens and pays with a $20 bill. How much change does he get?"
STEPS = ["{k} pens cost {k} * 2 = {c} dollars.", "The change is 20 - {c} = {r} dollars.", "A: {r}"]


def tiny_model(path: str, context: int = 2048):
    from tiny_models import MODEL_VOCAB, write_tokenizer

    from sgpo_engine.model import ModelConfig, Policy, Tokenizer
    write_tokenizer(path)
    cfg = ModelConfig("LlamaForCausalLM", vocab_size=MODEL_VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=context, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    Policy.from_config(cfg, Tokenizer.from_folder(path), seed=0).save(path)
    return sgpo_engine.load(path)


def judge_like_generate(tokenizer):
    """An instant stand-in for generate that answers like a judge: the first step holding "= 1" (a wrong sum)."""
    from sgpo_engine.generation import Completion

    def generate(prompts, **params):
        out = []
        for ids in prompts:
            steps = tokenizer.decode(ids).split("<solution")[1].split('<step index="')[1:]
            bad = [st.split('"')[0] for st in steps if "= 1" in st]
            text = "FIRST_ERROR: " + (bad[0] if bad else "none")
            out.append([Completion([5], text, [0.0], "stop", ids)] * params["num_samples"])
        return out
    return generate


def item(i: int, wrong: int) -> tuple[str, str]:
    k = 1 + i % 9
    c, r = 2 * k, 20 - 2 * k
    steps = [s.format(k=k, c=c + (wrong == 1), r=r + (wrong >= 1)) for s in STEPS]
    return PROBLEM.format(k=k), "\n\n".join(steps) + f" (variant {i})"


def throughput(url: str, concurrency: int, n: int, max_tokens: int) -> dict:
    j = HTTPJudge(url, "tiny", concurrency=concurrency, max_tokens=max_tokens, cache=False, timeout=300)
    problems, responses = zip(*(item(i, i % 3) for i in range(n)))
    t0 = time.perf_counter()
    verdicts = j.judge(list(problems), list(responses))
    dt = time.perf_counter() - t0
    return {"concurrency": concurrency, "verdicts": n, "seconds": round(dt, 3),
            "verdicts_per_s": round(n / dt, 2), "failures": j.stats["failures"],
            "transport_failures": sum(v.failed and v.reason not in ("unparseable", "out_of_range") for v in verdicts)}


def cache_rollout(url: str, prompts: int, G: int, distinct: int, max_tokens: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    problems, responses = [], []
    for p in range(prompts):
        texts = [item(p * 100 + d, d % 3)[1] for d in range(distinct)]
        problems += [item(p * 100, 0)[0]] * G
        responses += [rng.choice(texts) for _ in range(G)]
    j = HTTPJudge(url, "tiny", concurrency=8, max_tokens=max_tokens, cache=True, timeout=300)
    t0 = time.perf_counter()
    j.judge(problems, responses)
    first = dict(j.stats, seconds=round(time.perf_counter() - t0, 3))
    t0 = time.perf_counter()
    j.judge(problems, responses)
    total = j.stats
    second_s = time.perf_counter() - t0
    unique = len(set(zip(problems, responses)))
    return {"prompts": prompts, "G": G, "distinct_per_prompt": distinct, "responses": len(responses),
            "unique": unique, "first_pass_requests": first["requests"],
            "first_pass_hit_rate": round(first["cache_hits"] / first["responses"], 3),
            "first_pass_seconds": first["seconds"],
            "second_pass_hit_rate": round((total["cache_hits"] - first["cache_hits"]) / len(responses), 3),
            "second_pass_seconds": round(second_s, 4),
            "overall_hit_rate": round(total["cache_hits"] / total["responses"], 3)}


def measure(url: str, n: int, max_tokens: int, rounds: int, levels=(1, 8, 32)) -> list[dict]:
    """Interleaved rounds over the concurrency levels; per level, the round with the median time."""
    runs = {c: [] for c in levels}
    for _ in range(rounds):
        for c in levels:
            runs[c].append(throughput(url, c, n, max_tokens))
    rows = []
    for c in levels:
        ordered = sorted(runs[c], key=lambda r: r["seconds"])
        row = dict(ordered[len(ordered) // 2], rounds=rounds,
                   seconds_all=[r["seconds"] for r in runs[c]])
        rows.append(row)
    base = rows[0]["verdicts_per_s"]
    for r in rows:
        r["speedup_vs_c1"] = round(r["verdicts_per_s"] / base, 2)
    return rows


def table(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"{'concurrency':>11} {'verdicts':>8} {'median s':>8} {'verdicts/s':>10} {'vs c=1':>7} "
          f"{'transport fails':>15}  all rounds (s)")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['verdicts']:>8} {r['seconds']:>8.2f} {r['verdicts_per_s']:>10.2f} "
              f"{r['speedup_vs_c1']:>6.2f}x {r['transport_failures']:>15}  {r['seconds_all']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="verdicts per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=16, help="judge reply length (tokens)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "judge.json"))
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per level (median kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.n or (16 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as d:
        policy = tiny_model(d)
        with Server(policy, "127.0.0.1", 0, model_name="tiny").start() as server:
            throughput(server.url, 4, 4, args.max_tokens)  # warm-up
            model_rows = measure(server.url, n, args.max_tokens, rounds)
        with Server(policy, "127.0.0.1", 0, model_name="tiny",
                    generate_fn=judge_like_generate(policy.tokenizer)).start() as server:
            transport_rows = measure(server.url, 4 * n, args.max_tokens, rounds)
            cache = cache_rollout(server.url, 8 if args.quick else 32, 8, 3, args.max_tokens)
    result = {"bench": "judge", "device": "cpu", "torch_threads": args.threads, "platform": platform.platform(),
              "python": platform.python_version(), "torch": torch.__version__, "max_tokens": args.max_tokens,
              "load_average_at_end": os.getloadavg(),
              "model": "tiny random Llama (hidden 32, 2 layers, byte-level BPE), served by sgpo serve",
              "throughput_model": model_rows, "throughput_transport": transport_rows, "cache": cache}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    table(f"HTTPJudge -> sgpo serve, tiny model, {args.max_tokens} tokens per verdict:", model_rows)
    table("HTTPJudge -> sgpo serve, instant judge-like generate (transport overhead):", transport_rows)
    print(f"cache: {cache['responses']} responses ({cache['unique']} unique): first pass {cache['first_pass_requests']} "
          f"requests, hit rate {cache['first_pass_hit_rate']:.0%}; second pass hit rate "
          f"{cache['second_pass_hit_rate']:.0%} in {cache['second_pass_seconds'] * 1e3:.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; wrote {args.out}")


if __name__ == "__main__":
    main()
