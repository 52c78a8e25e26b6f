"""The cost of keeping a rollout server on-policy: one weight sync (the trainer
writes the policy, `sgpo serve` reads, checks and swaps it in) against one
rollout from that server, for SmolLM2-135M and a 0.5B-shaped random model.

    python bench/bench_sync.py              # both models
    python bench/bench_sync.py --quick      # SmolLM2 only, fewer repeats

Per model, in one process: a `sgpo serve` Server on loopback holding its own
copy of the weights; the trainer side is a Policy of the same shape. Measured
(median of --repeats): `write` = policy.save to a fresh folder (temporary name,
fsync, rename), `sync` = WeightSync end to end (write + POST
/update_weights_from_disk, which reads the folder in the served dtype, checks
every tensor and copies it in between generate calls), `rollout` = one
/v1/completions call of P prompts x G samples of up to max_tokens (the GSM8K
sample's questions, chat template, temperature 1; lengths vary with EOS, their
mean is reported). The ratio
sync / rollout is the share of a step the sync adds when rollouts run on this
machine. Writes bench/results/sync_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import sgpo_engine as se  # noqa: E402
from sgpo_engine.serve import Server  # noqa: E402
from sgpo_engine.train.rollout import WeightSync  # noqa: E402

GSM8K = os.path.join(ROOT, "examples", "data", "gsm8k_sample.jsonl")
DEFAULT_SMOLLM2 = os.path.join(os.path.expanduser("~"), ".cache", "sgpo-engine", "smollm2-135m-instruct")
# Qwen2.5-0.5B's depth and MLP at width 1024 with SmolLM2's vocabulary (its tokenizer decodes every id)
HALF_B = dict(hidden_size=1024, num_hidden_layers=26, num_attention_heads=16, num_key_value_heads=4,
              intermediate_size=4864, tie_word_embeddings=True)


def questions(n: int) -> list[str]:
    with open(GSM8K, encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in f if line.strip()][:n]


def half_b_policy(smollm2: str):
    import dataclasses
    base = se.load(smollm2, dtype="fp32")
    cfg = dataclasses.replace(base.config, **HALF_B, sliding_layers=())  # () = derived for the new depth
    return se.Policy.from_config(cfg, base.tokenizer, seed=0)


def post(url: str, body: dict, timeout: float = 3600) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure(name: str, policy, prompts: list[str], G: int, max_tokens: int, repeats: int, tmp: str) -> dict:
    start = os.path.join(tmp, f"{name}-start")
    policy.save(start)
    server = Server(se.load(start, dtype="fp32"), "127.0.0.1", 0, model_name=name).start()
    try:
        params = sum(p.numel() for p in policy.parameters())
        ids = [policy.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                    tokenize=True) for q in prompts]
        body = {"prompt": ids, "n": G, "max_tokens": max_tokens, "temperature": 1.0, "seed": 0}
        post(server.url + "/completions", {**body, "n": 1, "max_tokens": 4})  # warm-up
        lengths = []

        def rollout():
            reply = post(server.url + "/completions", body)
            lengths.append(reply["usage"]["completion_tokens"])

        t_rollout, rollouts = median_time(rollout, max(1, repeats // 2))
        n = iter(range(1, 1000))
        t_write, writes = median_time(lambda: policy.save(os.path.join(tmp, f"{name}-write")), repeats)
        sync = WeightSync(server.url, os.path.join(tmp, f"{name}-sync"))
        t_sync, syncs = median_time(lambda: sync(policy, next(n)), repeats)
        r = {"parameters": params, "dtype": "float32", "bytes": params * 4, "prompts": len(prompts), "G": G,
             "max_tokens": max_tokens, "completion_tokens_mean": statistics.mean(lengths),
             "rollout_seconds": t_rollout, "write_seconds": t_write, "sync_seconds": t_sync,
             "reload_seconds": t_sync - t_write, "sync_over_rollout": t_sync / t_rollout,
             "write_gb_per_s": params * 4 / t_write / 1e9,
             "runs": {"rollout": rollouts, "write": writes, "sync": syncs}}
        print(f"  {name:10s} {params / 1e6:6.0f}M  rollout {t_rollout:7.2f} s  write {t_write:6.2f} s  "
              f"sync {t_sync:6.2f} s  sync/rollout {t_sync / t_rollout:5.2f}", flush=True)
        return r
    finally:
        server.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from get_smollm2 import get_smollm2
    smollm2 = get_smollm2(os.environ.get("SGPO_SMOLLM2_DIR", DEFAULT_SMOLLM2))
    repeats = 2 if args.quick else args.repeats
    prompts = questions(args.prompts)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "settings": {"prompts": args.prompts, "G": args.G, "max_tokens": args.max_tokens, "repeats": repeats},
              "results": {}}
    with tempfile.TemporaryDirectory(prefix="sgpo-sync-bench-") as tmp:
        report["results"]["smollm2_135m"] = measure("smollm2", se.load(smollm2, dtype="fp32"), prompts, args.G,
                                                    args.max_tokens, repeats, tmp)
        if not args.quick:
            report["results"]["random_0.5b"] = measure("half_b", half_b_policy(smollm2), prompts, args.G,
                                                       args.max_tokens, repeats, tmp)
    out = args.out or os.path.join(ROOT, "bench", "results", f"sync_cpu{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
