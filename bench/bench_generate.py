"""Rollout throughput: sgpo_engine.generate vs transformers' generate, one run.

    python bench/bench_generate.py                 # CPU, the issue's case
    python bench/bench_generate.py --quick         # small smoke run
    python bench/bench_generate.py --device cuda --large   # hidden 2048, 24 layers, bf16

Both engines load the same random Llama checkpoint, get the same prompts and
sampling settings (top_p 0.95, temperature 1), and generate exactly
max_new_tokens per completion (EOS disabled in both), so tokens/s compare
like for like. Also measures the share prefix sharing wins: the same rollout
with each prompt repeated G times (G copies prefilled separately).
Writes bench/results/generate_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sgpo_engine as se  # noqa: E402


def make_checkpoint(path, hidden, layers, heads, kv_heads, vocab, intermediate, context, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, vocab_size=vocab, intermediate_size=intermediate,
                      max_position_embeddings=context, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(policy, prompts, G, new, device, seed):
    sync(device)
    t0 = time.perf_counter()
    out = se.generate(policy, prompts, num_samples=G, max_new_tokens=new, top_p=0.95, seed=seed,
                      progress=False)
    sync(device)
    dt = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for group in out for c in group)
    return dt, tokens


def run_transformers(model, prompts, G, new, device, seed):
    ids = torch.tensor(prompts, device=device)
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_p=0.95, top_k=0,
                         temperature=1.0, num_return_sequences=G, max_new_tokens=new, min_new_tokens=new,
                         pad_token_id=0, eos_token_id=None)
    sync(device)
    dt = time.perf_counter() - t0
    return dt, (out.shape[1] - ids.shape[1]) * out.shape[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--large", action="store_true", help="hidden 2048, 24 layers, bf16 (GPU)")
    ap.add_argument("--dtype", default=None, help="float32 (default) or bfloat16")
    ap.add_argument("--no-transformers", action="store_true", help="skip the baseline")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    shape = dict(hidden=512, layers=8, heads=8, kv_heads=4, vocab=32000, intermediate=1536, context=512)
    P, G, L, new = 16, 8, 64, 128
    dtype = args.dtype or "float32"
    if args.large:
        shape.update(hidden=2048, layers=24, heads=16, kv_heads=8, intermediate=5632, context=1024)
        dtype = args.dtype or "bfloat16"
    if args.quick:
        shape.update(hidden=128, layers=2, heads=4, kv_heads=2, vocab=2048, intermediate=256)
        P, G, L, new = 4, 4, 16, 16
    tdtype = getattr(torch, dtype)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(1, shape["vocab"], (P, L), generator=g).tolist()
    print(f"device {device}, {dtype}, {shape}, {P} prompts x {G} samples, {L} prompt + {new} new tokens")

    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": dtype, "shape": shape,
              "prompts": P, "samples": G, "prompt_len": L, "new_tokens": new, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, **shape)
        policy = se.load(tmp, dtype=tdtype, device=device)
        run_ours(policy, prompts[:1], 2, 4, device, 0)  # warm-up
        dt, n = run_ours(policy, prompts, G, new, device, 0)
        report["results"]["sgpo"] = {"seconds": dt, "tokens": n, "tokens_per_s": n / dt}
        print(f"  sgpo generate          {n / dt:9.1f} tokens/s  ({dt:.2f} s)")
        repeated = [p for p in prompts for _ in range(G)]
        dt, n = run_ours(policy, repeated, 1, new, device, 0)
        report["results"]["sgpo_no_sharing"] = {"seconds": dt, "tokens": n, "tokens_per_s": n / dt}
        print(f"  sgpo without sharing   {n / dt:9.1f} tokens/s  ({dt:.2f} s)")
        if not args.no_transformers:
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=tdtype).to(device).eval()
            run_transformers(model, prompts[:1], 2, 4, device, 0)  # warm-up
            dt, n = run_transformers(model, prompts, G, new, device, 0)
            report["results"]["transformers"] = {"seconds": dt, "tokens": n, "tokens_per_s": n / dt}
            print(f"  transformers generate  {n / dt:9.1f} tokens/s  ({dt:.2f} s)")
    R = report["results"]
    summary = {"sharing_speedup": R["sgpo"]["tokens_per_s"] / R["sgpo_no_sharing"]["tokens_per_s"]}
    if "transformers" in R:
        summary["speedup_vs_transformers"] = R["sgpo"]["tokens_per_s"] / R["transformers"]["tokens_per_s"]
    report["summary"] = summary
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"generate_{device.type}{'_large' if args.large else ''}"
                                   f"{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    for k, v in summary.items():
        print(f"  {k:26s} {v:6.2f}x")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
