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
   each decode step's row counts), timed alone in this process, per row count
   in the faster of the engine's layout and the fused one (q|k|v and gate|up
   as one matrix each); gemm_fraction = that time / the engine's generation
   time, the share of this machine's matrix-multiply rate the rollout achieves.
2. train: a full GRPO step (rollout, reward, update) of sgpo_engine against
   TRL's GRPOTrainer, same model, questions, G, token budget, fp32, no
   gradient checkpointing: bench_train.py with one engine per process, so
   each process's peak RSS is its own; once with all P x G sequences in one
   forward/backward, once in micro-batches of 4 (both engines accumulate).
   sgpo_grpo_padded: ours with update_layout "padded" (each completion padded to
   the step's longest, its prompt computed again): what the packed layout saves,
   with the decoder positions each update computed (update_positions) and the
   share beyond computing each token once (update_padding_frac).
   trl_fused: TRL's trainer with the fused loss (SGPOGRPOTrainer), same run;
   trl_liger (--train-engines, GPU only): TRL's trainer with use_liger_kernel.
3. loss: fused_policy_loss forward + backward at 4096 tokens, H 576, V 49152
   (fp32) against TRL-style eager (full logits) and Liger's chunked loss:
   time (median, one process) and peak extra memory (a fresh process per
   case, so one case's freed memory cannot hide another's), next to the
   gradient bytes any implementation must return.

Writes bench/results/real_cpu.json (real_cpu_quick.json with --quick); with
--only, the other parts of an existing file are kept.
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
def layer_weight_shapes(cfg, fused: bool) -> list[tuple[int, int]]:
    """(out, in) of each weight GEMM of one layer for one token: q, k, v, o,
    gate, up, down as the engine runs them, or with q|k|v and gate|up as one
    matrix each (fused, as vLLM stores them)."""
    d, h = cfg.head_dim, cfg.hidden_size
    q, kv, i = cfg.num_attention_heads * d, cfg.num_key_value_heads * d, cfg.intermediate_size
    if fused:
        return [(q + 2 * kv, h), (h, q), (2 * i, h), (h, i)]
    return [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]


def median_seconds(shapes, m: int, repeat: int) -> float:
    """Median time of one y = x W^T per shape, in sequence, at m rows."""
    weights = [torch.randn(*s) * 0.02 for s in shapes]
    x = {s[1]: torch.randn(m, s[1]) for s in shapes}
    times = []
    for _ in range(repeat + 1):  # the first round warms up
        t0 = time.perf_counter()
        for s, w in zip(shapes, weights):
            torch.nn.functional.linear(x[s[1]], w)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def gemm_seconds(cfg, rows: list[int], repeat: int = 3) -> dict:
    """Time of the weight GEMMs alone for forwards of `rows` rows each (one
    entry per forward: the prefill, then each decode step), summed: per layer
    in the engine's layout and fused, and the LM head (once per forward).
    `best` takes the faster layout per row count: the ceiling any layout
    reaches on this machine. Weights are random fp32."""
    out = {"unfused": 0.0, "fused": 0.0, "best": 0.0}
    head = [(cfg.vocab_size, cfg.hidden_size)]
    for m in set(rows):
        n, L = rows.count(m), cfg.num_hidden_layers
        lm = median_seconds(head, m, repeat)
        un = median_seconds(layer_weight_shapes(cfg, False), m, repeat) * L + lm
        fu = median_seconds(layer_weight_shapes(cfg, True), m, repeat) * L + lm
        out["unfused"] += un * n
        out["fused"] += fu * n
        out["best"] += min(un, fu) * n
    return out


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
            "gemm_fraction": ceiling["best"] / ours, "transformers_gemm_fraction": ceiling["best"] / theirs}


# ----------------------------------------------------------------------
# 2. a training step, one engine per process
# ----------------------------------------------------------------------
TRAIN_ENGINES = ("sgpo_grpo", "sgpo_grpo_padded", "trl_grpo", "trl_fused")


def bench_train(model: str, P: int, G: int, new: int, steps: int, out_dir: str, micro: int,
                engines=TRAIN_ENGINES, report=None) -> dict:
    """The engines at `micro` sequences per forward/backward (one optimizer
    step per P x G completions either way), each in its own process; adds to
    `report` (another run's engines at this micro-batch size are kept)."""
    report = dict(report or {}, micro_batch=micro, G=G)
    for engine in engines:
        out = os.path.join(out_dir, f"real_train_{engine}.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "bench_train.py"), "--model", model, "--dataset", GSM8K,
               "--prompt-field", "question", "--chat-template", "--engines", engine, "--prompts", str(P), "--G",
               str(G), "--micro-batch", str(micro), "--max-new-tokens", str(new), "--steps", str(steps), "--lr", "1e-6", "--threads",
               str(torch.get_num_threads()), "--out", out]
        print(f"  train: {engine}, micro-batch {micro} ...", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            report[engine] = {"error": r.stderr[-2000:]}
            continue
        with open(out) as f:
            run = json.load(f)
        os.remove(out)
        report[engine] = {**run["results"][engine], "peak_rss_bytes": run["peak_rss_bytes"]}
        report[engine].pop("per_step", None)
    trl = report.get("trl_grpo", {})
    for name, prefix in (("sgpo_grpo", ""), ("sgpo_grpo_padded", "padded_"), ("trl_fused", "trl_fused_"),
                         ("trl_liger", "trl_liger_")):
        ours = report.get(name, {})
        if "step_seconds" in ours and "step_seconds" in trl:
            report[f"{prefix}speedup_vs_trl"] = ours["step_tokens_per_s"] / trl["step_tokens_per_s"]
            report[f"{prefix}rollout_speedup_vs_trl"] = ours["rollout_tokens_per_s"] / trl["rollout_tokens_per_s"]
            report[f"{prefix}update_speedup_vs_trl"] = ours["update_tokens_per_s"] / trl["update_tokens_per_s"]
            report[f"{prefix}peak_memory_vs_trl"] = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
    return report


# ----------------------------------------------------------------------
# 3. the fused loss on the real shapes
# ----------------------------------------------------------------------
def loss_cases(tokens: int, H: int, V: int) -> tuple[dict, dict]:
    """name -> a fwd+bwd closure, and the shape; the inputs as bench_ops makes them."""
    from bench_ops import bench_policy_loss_cases
    return bench_policy_loss_cases(tokens, 512 if tokens >= 512 else tokens, H, V, torch.device("cpu"))


def peak_extra_in_fresh_process(case: str, tokens: int, H: int, V: int) -> float:
    """Peak RSS above the pre-call RSS of one call of `case`, in a new process.

    glibc serves large blocks from its heap and keeps freed ones, so RSS
    undercounts a buffer that reuses memory freed before the call (setting up
    the inputs frees a logits chunk) and overcounts fragmentation: the same
    case read 120 and 365 MiB in two runs. With every block over 64 KiB
    mmapped (MALLOC_MMAP_THRESHOLD_) a tensor's pages come and go with it and
    repeated runs agree within 0.1 MiB."""
    code = ("import sys, json; sys.argv = ['x']; import bench_real as b; "
            f"print(json.dumps(b.measure_one({case!r}, {tokens}, {H}, {V})))")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "bench"), "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.join(ROOT, "bench"), env=env)
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
    ap.add_argument("--train-engines", default=None,
                    help=f"engines of the train part, comma-separated (default: {','.join(TRAIN_ENGINES)}; "
                         "trl_liger, TRL with use_liger_kernel, needs a GPU)")
    ap.add_argument("--train-micro", default=None,
                    help="micro-batch sizes of the train part, comma-separated (default: P x G, then 4)")
    ap.add_argument("--train-G", default=None, help="G of the train part, comma-separated (default: 4)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.model is None:
        from get_smollm2 import get_smollm2
        args.model = get_smollm2(os.environ.get("SGPO_SMOLLM2_DIR", DEFAULT_MODEL))
    parts = args.only.split(",")
    q = args.quick
    out = args.out or os.path.join(ROOT, "bench", "results", f"real_cpu{'_quick' if q else ''}.json")
    report = {}
    if os.path.exists(out):  # --only: keep the parts not re-run
        with open(out) as f:
            report = json.load(f)
    report.update({"device": platform.processor() or platform.machine(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "model": os.path.basename(os.path.normpath(args.model)),
                   "quick": q})
    results_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    if "generate" in parts:
        print("generate ...", flush=True)
        report["generate"] = bench_generate(args.model, 2 if q else 8, 2 if q else 8, 16 if q else 256)
    if "train" in parts:
        print("train ...", flush=True)
        P = 2 if q else 4
        runs = {(t.get("G", 4), t["micro_batch"]): t for t in report.get("train", [])}  # kept: other sizes
        engines = args.train_engines.split(",") if args.train_engines else TRAIN_ENGINES
        for G in [int(g) for g in args.train_G.split(",")] if args.train_G else [2 if q else 4]:
            micros = [int(m) for m in args.train_micro.split(",")] if args.train_micro else [P * G, 2 if q else 4]
            for micro in micros:
                runs[G, micro] = bench_train(args.model, P, G, 16 if q else 128, 1 if q else 2, results_dir, micro,
                                             engines, runs.get((G, micro)))
        report["train"] = [runs[k] for k in sorted(runs, key=lambda k: (k[0], -k[1]))]
    if "loss" in parts:
        print("loss ...", flush=True)
        report["loss"] = bench_loss(512 if q else 4096, 576, 8192 if q else 49152, 1 if q else 3)
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
    for t in report.get("train", []):
        m = f"{t['micro_batch']:2d} G {t.get('G', 4)}"
        if "speedup_vs_trl" not in t:
            print(f"train     micro {m}: errors: {[k for k, v in t.items() if isinstance(v, dict) and 'error' in v]}")
            continue
        o, r = t["sgpo_grpo"], t["trl_grpo"]
        print(f"train     micro {m}: step s ours / TRL             {o['step_seconds']:.1f} / {r['step_seconds']:.1f} "
              f"({t['speedup_vs_trl']:.2f}x tokens/s; rollout {t['rollout_speedup_vs_trl']:.2f}x, "
              f"update {t['update_speedup_vs_trl']:.2f}x)")
        print(f"train     micro {m}: peak RSS ours / TRL           {o['peak_rss_bytes'] / 2**30:.2f} / "
              f"{r['peak_rss_bytes'] / 2**30:.2f} GiB ({t['peak_memory_vs_trl']:.2f}x)")
        if "padded_speedup_vs_trl" in t:
            p = t["sgpo_grpo_padded"]
            print(f"train     micro {m}: update positions packed / padded  {o['update_positions']:.0f} / "
                  f"{p['update_positions']:.0f} (padding {o['update_padding_frac']:.2f} / "
                  f"{p['update_padding_frac']:.2f}); padded / TRL step {t['padded_speedup_vs_trl']:.2f}x, "
                  f"update {t['padded_update_speedup_vs_trl']:.2f}x, peak RSS {t['padded_peak_memory_vs_trl']:.2f}x")
        if "trl_fused_speedup_vs_trl" in t:
            f = t["trl_fused"]
            print(f"train     micro {m}: TRL + fused loss / TRL         {f['step_seconds']:.1f} / "
                  f"{r['step_seconds']:.1f} s ({t['trl_fused_speedup_vs_trl']:.2f}x tokens/s, update "
                  f"{t['trl_fused_update_speedup_vs_trl']:.2f}x), peak RSS {t['trl_fused_peak_memory_vs_trl']:.2f}x")
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
