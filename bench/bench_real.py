"""The real path, measured: SmolLM2-135M-Instruct (Llama, vocabulary 49152)
on GSM8K questions in its chat template, one run, each number a ratio
against a baseline measured in the same run.

    python bench/bench_real.py                 # all three parts (about 25 min on 2 CPU cores)
    python bench/bench_real.py --only loss     # generate | train | loss, comma-separated
    python bench/bench_real.py --quick         # smaller sizes, a smoke run

1. generate: 8 questions x G 8, 256 new tokens, top_p 0.95, temperature 1,
   EOS off in both engines (equal lengths): sgpo_engine.generate against
   transformers' generate. The GEMM ceiling: every weight GEMM the rollout
   needs (each projection of each layer and the LM head, at the prefill's and
   each decode step's row counts), timed alone in this process at the fused
   shapes an engine can use (q|k|v and gate|up as one matrix each);
   gemm_fraction = that time / the engine's generation time, the share of
   this machine's matrix-multiply rate the rollout achieves.
2. train: a full GRPO step (rollout, reward, update) of sgpo_engine against
   TRL's GRPOTrainer, same model, questions, G, token budget, fp32, no
   gradient checkpointing: bench_train.py with one engine per process, so
   each process's peak RSS is its own.
3. loss: fused_policy_loss forward + backward at 4096 tokens, H 576, V 49152
   (fp32) against TRL-style eager (full logits) and Liger's chunked loss:
   time (median, one process) and peak extra memory (a fresh process per
   case, so one case's freed memory cannot hide another's), next to the
   gradient bytes any implementation must return.

Writes bench/results/real_cpu.json (real_cpu_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import sgpo_engine as se  # noqa: E402

GSM8K = os.path.join(ROOT, "examples", "data", "gsm8k_sample.jsonl")
DEFAULT_MODEL = os.path.join(os.path.expanduser("~"), ".cache", "sgpo-engine", "smollm2-135m-instruct")


def questions(n: int) -> list[str]:
    with open(GSM8K, encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in f][:n]


def chat_ids(policy, qs: list[str]) -> list[list[int]]:
    return [list(policy.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                      tokenize=True)) for q in qs]


# ----------------------------------------------------------------------
# 1. generation
# ----------------------------------------------------------------------
def fused_weight_shapes(cfg) -> list[tuple[int, int]]:
    """(out, in) of each weight GEMM of one token's forward: per layer q|k|v,
    o, gate|up, down (fused where an engine can fuse), then the LM head."""
    d = cfg.head_dim
    layer = [((cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * d, cfg.hidden_size),
             (cfg.hidden_size, cfg.num_attention_heads * d),
             (2 * cfg.intermediate_size, cfg.hidden_size),
             (cfg.hidden_size, cfg.intermediate_size)]
    return layer * cfg.num_hidden_layers + [(cfg.vocab_size, cfg.hidden_size)]


def gemm_seconds(cfg, rows: list[int], repeat: int = 3) -> float:
    """Time of the weight GEMMs alone for forwards of `rows` rows each (one
    entry per forward: the prefill, then each decode step): median of repeats
    per distinct row count, summed. Weights are random, of the model's dtype."""
    shapes = fused_weight_shapes(cfg)
    weights = {s: torch.randn(*s) * 0.02 for s in set(shapes)}
    total = 0.0
    for m in set(rows):
        x = {s[1]: torch.randn(m, s[1]) for s in shapes}
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for s in shapes:
                torch.nn.functional.linear(x[s[1]], weights[s])
            times.append(time.perf_counter() - t0)
        total += statistics.median(times) * rows.count(m)
    return total


def bench_generate(model: str, P: int, G: int, new: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    policy = se.load(model, dtype="float32")
    prompts = chat_ids(policy, questions(P))
    policy.tokenizer = None  # token-id prompts and no EOS: every completion is `new` tokens long
    se.generate(policy, prompts[:1], num_samples=2, max_new_tokens=4, seed=0, progress=False)  # warm-up
    t0 = time.perf_counter()
    out = se.generate(policy, prompts, num_samples=G, max_new_tokens=new, top_p=0.95, seed=0, progress=False)
    ours = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for g in out for c in g)
    # the same GEMMs alone: the shared prefill of the P prompts, then `new` decode steps of P*G rows
    ceiling = gemm_seconds(policy.config, [sum(map(len, prompts))] + [P * G] * (new - 1))
    del policy, out

    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    kw = dict(do_sample=True, top_p=0.95, top_k=0, temperature=1.0, num_return_sequences=G, max_new_tokens=new,
              min_new_tokens=new, eos_token_id=None, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.no_grad():
        hf.generate(ids[:1], attention_mask=mask[:1], **{**kw, "num_return_sequences": 2, "max_new_tokens": 4,
                                                         "min_new_tokens": 4})
        t0 = time.perf_counter()
        ref = hf.generate(ids, attention_mask=mask, **kw)
        theirs = time.perf_counter() - t0
    ref_tokens = (ref.shape[1] - width) * ref.shape[0]
    return {"prompts": P, "samples": G, "new_tokens": new, "prompt_tokens": sum(map(len, prompts)),
            "sgpo": {"seconds": ours, "tokens": tokens, "tokens_per_s": tokens / ours},
            "transformers": {"seconds": theirs, "tokens": ref_tokens, "tokens_per_s": ref_tokens / theirs},
            "gemm_only_seconds": ceiling,
            "speedup_vs_transformers": (tokens / ours) / (ref_tokens / theirs),
            "gemm_fraction": ceiling / ours, "transformers_gemm_fraction": ceiling / theirs}


# ----------------------------------------------------------------------
# 2. a training step, one engine per process
# ----------------------------------------------------------------------
def bench_train(model: str, P: int, G: int, new: int, steps: int, out_dir: str) -> dict:
    report = {}
    for engine in ("sgpo_grpo", "trl_grpo"):
        out = os.path.join(out_dir, f"real_train_{engine}.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "bench_train.py"), "--model", model, "--dataset", GSM8K,
               "--prompt-field", "question", "--chat-template", "--engines", engine, "--prompts", str(P), "--G",
               str(G), "--max-new-tokens", str(new), "--steps", str(steps), "--lr", "1e-6", "--threads",
               str(torch.get_num_threads()), "--out", out]
        print(f"  train: {engine} ...", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            report[engine] = {"error": r.stderr[-2000:]}
            continue
        with open(out) as f:
            run = json.load(f)
        os.remove(out)
        report[engine] = {**run["results"][engine], "peak_rss_bytes": run["peak_rss_bytes"]}
        report[engine].pop("per_step", None)
    ours, trl = report.get("sgpo_grpo", {}), report.get("trl_grpo", {})
    if "step_seconds" in ours and "step_seconds" in trl:
        report["speedup_vs_trl"] = ours["step_tokens_per_s"] / trl["step_tokens_per_s"]
        report["rollout_speedup_vs_trl"] = ours["rollout_tokens_per_s"] / trl["rollout_tokens_per_s"]
        report["update_speedup_vs_trl"] = ours["update_tokens_per_s"] / trl["update_tokens_per_s"]
        report["peak_memory_vs_trl"] = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
    return report


# ----------------------------------------------------------------------
# 3. the fused loss on the real shapes
# ----------------------------------------------------------------------
def loss_cases(tokens: int, H: int, V: int) -> tuple[dict, dict]:
    """name -> a fwd+bwd closure, and the shape; the inputs as bench_ops makes them."""
    from bench_ops import bench_policy_loss_cases
    return bench_policy_loss_cases(tokens, 512 if tokens >= 512 else tokens, H, V, torch.device("cpu"))


def peak_extra_in_fresh_process(case: str, tokens: int, H: int, V: int) -> float:
    """Peak RSS above the pre-call RSS of one call of `case`, in a new process."""
    code = ("import sys, json; sys.argv = ['x']; import bench_real as b; "
            f"print(json.dumps(b.measure_one({case!r}, {tokens}, {H}, {V})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.join(ROOT, "bench"), env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "bench")})
    if r.returncode:
        raise RuntimeError(f"loss case {case}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure_one(case: str, tokens: int, H: int, V: int) -> float:
    from bench_ops import peak_extra_bytes
    cases, _ = loss_cases(tokens, H, V)
    return peak_extra_bytes(cases[case], torch.device("cpu"))


def bench_loss(tokens: int, H: int, V: int, repeat: int) -> dict:
    from bench_ops import timed
    cases, info = loss_cases(tokens, H, V)
    rows = {}
    for name, fn in cases.items():
        rows[name] = {"seconds": timed(fn, torch.device("cpu"), repeat),
                      "peak_extra_bytes": peak_extra_in_fresh_process(name, tokens, H, V)}
        print(f"  loss {name:6s} {rows[name]['seconds']:7.2f} s  +{rows[name]['peak_extra_bytes'] / 2**20:7.0f} MiB",
              flush=True)
    grad = info["gradient_bytes"]
    out = {"shape": info["shape"], "gradient_bytes": grad, "results": rows,
           "sgpo_extra_vs_gradients": rows["sgpo"]["peak_extra_bytes"] / grad,
           "time_vs_eager": rows["eager"]["seconds"] / rows["sgpo"]["seconds"],
           "memory_vs_eager": rows["sgpo"]["peak_extra_bytes"] / rows["eager"]["peak_extra_bytes"]}
    if "liger" in rows:
        out["time_vs_liger"] = rows["liger"]["seconds"] / rows["sgpo"]["seconds"]
        out["memory_vs_liger"] = rows["sgpo"]["peak_extra_bytes"] / rows["liger"]["peak_extra_bytes"]
    return out


# ----------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an HF folder (default: SmolLM2-135M-Instruct, made once)")
    ap.add_argument("--only", default="generate,train,loss")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.model is None:
        from get_smollm2 import get_smollm2
        args.model = get_smollm2(os.environ.get("SGPO_SMOLLM2_DIR", DEFAULT_MODEL))
    parts = args.only.split(",")
    q = args.quick
    report = {"device": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "model": os.path.basename(os.path.normpath(args.model)),
              "quick": q}
    results_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    if "generate" in parts:
        print("generate ...", flush=True)
        report["generate"] = bench_generate(args.model, 2 if q else 8, 2 if q else 8, 16 if q else 256)
    if "train" in parts:
        print("train ...", flush=True)
        report["train"] = bench_train(args.model, 2 if q else 4, 2 if q else 4, 16 if q else 128, 1 if q else 2,
                                      results_dir)
    if "loss" in parts:
        print("loss ...", flush=True)
        report["loss"] = bench_loss(512 if q else 4096, 576, 8192 if q else 49152, 1 if q else 3)
    out = args.out or os.path.join(results_dir, f"real_cpu{'_quick' if q else ''}.json")
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    print_table(report)
    print(f"wrote {out}")


def print_table(report: dict):
    print("\npart      measure                                    value")
    g = report.get("generate")
    if g:
        print(f"generate  tokens/s ours / transformers             {g['sgpo']['tokens_per_s']:.0f} / "
              f"{g['transformers']['tokens_per_s']:.0f} ({g['speedup_vs_transformers']:.2f}x)")
        print(f"generate  GEMM-rate fraction ours / transformers   {g['gemm_fraction']:.2f} / "
              f"{g['transformers_gemm_fraction']:.2f}")
    t = report.get("train")
    if t and "speedup_vs_trl" in t:
        o, r = t["sgpo_grpo"], t["trl_grpo"]
        print(f"train     step s ours / TRL                        {o['step_seconds']:.1f} / {r['step_seconds']:.1f} "
              f"({t['speedup_vs_trl']:.2f}x tokens/s; rollout {t['rollout_speedup_vs_trl']:.2f}x, "
              f"update {t['update_speedup_vs_trl']:.2f}x)")
        print(f"train     peak RSS ours / TRL                      {o['peak_rss_bytes'] / 2**30:.2f} / "
              f"{r['peak_rss_bytes'] / 2**30:.2f} GiB ({t['peak_memory_vs_trl']:.2f}x)")
    elif t:
        print(f"train     errors: {[k for k, v in t.items() if 'error' in v]}")
    lo = report.get("loss")
    if lo:
        R = lo["results"]
        print(f"loss      seconds ours / eager / liger              {R['sgpo']['seconds']:.2f} / "
              f"{R['eager']['seconds']:.2f} / {R['liger']['seconds'] if 'liger' in R else float('nan'):.2f}")
        print(f"loss      extra MiB ours / eager / liger            {R['sgpo']['peak_extra_bytes'] / 2**20:.0f} / "
              f"{R['eager']['peak_extra_bytes'] / 2**20:.0f} / "
              f"{R['liger']['peak_extra_bytes'] / 2**20 if 'liger' in R else float('nan'):.0f}")
        print(f"loss      ours extra / returned gradients           {lo['sgpo_extra_vs_gradients']:.2f}x")


if __name__ == "__main__":
    main()
