"""LoRA measured: the engine's trainer with adapters against full fine-tuning and
against TRL + PEFT, rollouts with the adapters unmerged against a merged copy,
and the memory model of a 7B / 8B, one run.

    python bench/bench_lora.py                  # SmolLM2-135M and a 0.5B-shaped random model (~30 min, 2 CPU cores)
    python bench/bench_lora.py --only rollout   # train | rollout | memory, comma-separated
    python bench/bench_lora.py --quick          # smaller sizes, a smoke run

1. train: a GRPO step on GSM8K questions in the chat template (bench_train.py,
   one engine per process so each peak RSS is its own; one untimed step, then
   one timed): ours full fine-tuning,
   ours LoRA r 8 and r 64, TRL's GRPOTrainer + PEFT at r 8 and r 64 (the 0.5B: r 8; alpha 2r,
   every linear of attention and MLP, dropout 0, lr 1e-6, fp32, no KL, no
   checkpointing). Per run: step and update seconds, peak RSS, and the
   gradient + AdamW state the optimizer holds (trainable parameters x 3 x their
   bytes), against full fine-tuning's. On SmolLM2-135M-Instruct and on a
   0.5B-shaped model with random weights (SmolLM2's tokenizer; hidden 1024,
   24 layers, MLP 5504, 16 heads / 4 KV heads, tied: 0.52B).
2. rollout: generate (P x G, EOS off, equal lengths) with the adapters in the
   forward (the trainer's way: the base weights never change) against a merged
   working copy (W + s B A per linear, what a merge each step would give), at
   1 x 1 and 8 x 8 sequences.
3. memory: the 7B / 8B model in bf16 (Qwen2.5-7B and Llama-3.1-8B shapes), by
   arithmetic: weights, gradients and AdamW moments (in the parameter dtype,
   as torch.optim.AdamW keeps them) for full fine-tuning and LoRA r 8 / 64,
   plus the saved activations of one micro-batch (34 x hidden bytes per token
   per layer in bf16, Korthikanti et al. 2022 without the attention-score term,
   which SDPA does not store): the packed update's micro_batch_tokens 4096, with
   and without gradient checkpointing (then 2 x hidden a token a layer, plus
   one layer's), and a padded micro-batch of 8 rows x 1536 positions (12288,
   most of them padding and repeated prompts); whether each
   fits on one 80 GB and one 141 GB GPU.

Writes bench/results/lora_cpu.json (lora_cpu_quick.json with --quick); with
--only, the other parts of an existing file are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

GSM8K = os.path.join(ROOT, "examples", "data", "gsm8k_sample.jsonl")
DEFAULT_MODEL = os.path.join(os.path.expanduser("~"), ".cache", "sgpo-engine", "smollm2-135m-instruct")
GIB = 1024 ** 3


# ---------------------------------------------------------------------- models
def random_half_b(smollm2: str, path: str) -> str:
    """A 0.52B Llama with random weights and SmolLM2's tokenizer (saved once)."""
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return path
    import sgpo_engine as se
    from sgpo_engine.model import Policy
    from sgpo_engine.model.config import ModelConfig
    base = se.load(smollm2)
    hf = {**base.config.to_hf_dict(), "hidden_size": 1024, "intermediate_size": 5504, "num_hidden_layers": 24,
          "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 64}
    cfg = ModelConfig.from_hf_dict(hf)
    Policy.from_config(cfg, base.tokenizer, seed=0).save(path)
    return path


def trainable_state(model: str, r: int) -> dict:
    """Parameters the optimizer holds, and their gradient + AdamW bytes (3 x the dtype's)."""
    import sgpo_engine as se
    from sgpo_engine.model.lora import LoRAConfig, add_lora
    policy = se.load(model, dtype="float32")
    total = sum(p.numel() for p in policy.parameters())
    if r:
        add_lora(policy, LoRAConfig(r=r, alpha=2.0 * r))
    n = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": n, "grad_and_adam_bytes": 3 * 4 * n}


# ---------------------------------------------------------------------- 1. train
def run_engine(model: str, engine: str, r: int, P: int, G: int, new: int, steps: int, out_dir: str) -> dict:
    out = os.path.join(out_dir, f"lora_{engine}_{r}.json")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "bench_train.py"), "--model", model, "--dataset", GSM8K,
           "--prompt-field", "question", "--chat-template", "--engines", engine, "--prompts", str(P), "--G", str(G),
           "--max-new-tokens", str(new), "--steps", str(steps), "--lr", "1e-6", "--lora-r", str(r),
           "--threads", str(torch.get_num_threads()), "--out", out]
    print(f"  train: {engine} r {r} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    with open(out) as f:
        rep = json.load(f)
    os.remove(out)
    res = rep["results"][engine]
    res.pop("per_step", None)
    return {**res, "peak_rss_bytes": rep["peak_rss_bytes"], "process_seconds": time.perf_counter() - t0}


def bench_train(model: str, label: str, P: int, G: int, new: int, steps: int, out_dir: str, ranks, trl: bool) -> dict:
    runs = {"full": {**run_engine(model, "sgpo_grpo", 0, P, G, new, steps, out_dir), **trainable_state(model, 0)}}
    for r in ranks:
        runs[f"lora_r{r}"] = {**run_engine(model, "sgpo_grpo", r, P, G, new, steps, out_dir),
                              **trainable_state(model, r)}
        if trl:
            runs[f"trl_peft_r{r}"] = run_engine(model, "trl_grpo", r, P, G, new, steps, out_dir)
    full = runs["full"]
    for r in ranks:
        ours, theirs = runs[f"lora_r{r}"], runs.get(f"trl_peft_r{r}", {})
        if "step_seconds" not in ours or "step_seconds" not in full:
            continue
        ours["state_vs_full"] = ours["grad_and_adam_bytes"] / full["grad_and_adam_bytes"]
        ours["step_time_vs_full"] = ours["step_seconds"] / full["step_seconds"]
        ours["update_time_vs_full"] = ours["update_seconds"] / full["update_seconds"]
        ours["peak_memory_vs_full"] = ours["peak_rss_bytes"] / full["peak_rss_bytes"]
        if "step_seconds" in theirs:  # tokens/s: completion lengths differ between engines
            ours["speedup_vs_trl_peft"] = ours["step_tokens_per_s"] / theirs["step_tokens_per_s"]
            ours["update_speedup_vs_trl_peft"] = ours["update_tokens_per_s"] / theirs["update_tokens_per_s"]
            ours["peak_memory_vs_trl_peft"] = ours["peak_rss_bytes"] / theirs["peak_rss_bytes"]
    return {"model": label, "prompts": P, "G": G, "max_new_tokens": new, "timed_steps": steps, "runs": runs}


# ---------------------------------------------------------------------- 2. rollout
def bench_rollout(model: str, r: int, new: int, shapes, repeats: int) -> dict:
    import sgpo_engine as se
    from sgpo_engine.model.lora import LoRAConfig, add_lora, lora_layers, merged_state_dict
    policy = se.load(model, dtype="float32")
    add_lora(policy, LoRAConfig(r=r, alpha=2.0 * r))
    with torch.no_grad():
        for _, m in lora_layers(policy.decoder):
            m.lora_B.weight.normal_(0, 0.01)
    merged = se.load(model, dtype="float32")
    merged.decoder.load_state_dict(merged_state_dict(policy))
    eos = policy.tokenizer.eos_token_ids
    policy.tokenizer.eos_token_ids = merged.tokenizer.eos_token_ids = []  # EOS off: equal lengths
    prompts = [row["question"] for row in map(json.loads, open(GSM8K))]
    out = {}
    for P, G in shapes:
        times = {}
        for name, p in (("unmerged", policy), ("merged", merged)):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                se.generate(p, prompts[:P], num_samples=G, max_new_tokens=new, seed=0, chat_template=True)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        tokens = P * G * new
        out[f"{P}x{G}"] = {"unmerged_seconds": times["unmerged"], "merged_seconds": times["merged"],
                           "unmerged_tokens_per_s": tokens / times["unmerged"],
                           "merged_speedup": times["unmerged"] / times["merged"]}
        print(f"  rollout {P}x{G}: unmerged {times['unmerged']:.2f} s, merged {times['merged']:.2f} s", flush=True)
    policy.tokenizer.eos_token_ids = eos
    return {"r": r, "max_new_tokens": new, "shapes": out}


# ---------------------------------------------------------------------- 3. memory
SHAPES = {  # hidden, layers, MLP, heads, KV heads, vocabulary, tied
    "Qwen2.5-7B": (3584, 28, 18944, 28, 4, 152064, False),
    "Llama-3.1-8B": (4096, 32, 14336, 32, 8, 128256, False),
}


def memory_model(ranks=(8, 64)) -> dict:
    out = {}
    for name, (h, L, mlp, heads, kv, V, tied) in SHAPES.items():
        d = h // heads
        linears = {"q": (h, heads * d), "k": (h, kv * d), "v": (h, kv * d), "o": (heads * d, h),
                   "gate": (h, mlp), "up": (h, mlp), "down": (mlp, h)}
        per_layer = sum(i * o for i, o in linears.values()) + 2 * h
        params = L * per_layer + V * h * (1 if tied else 2) + h
        bf16 = 2
        act_token_layer = 34 * h                         # bytes a token a layer, saved for backward (bf16)
        acts = {"packed_4096": 4096 * L * act_token_layer,
                "packed_4096_checkpointed": 4096 * (L * 2 * h + act_token_layer),
                "padded_8x1536": 8 * 1536 * L * act_token_layer}
        row = {"parameters": params, "weights_gib": params * bf16 / GIB,
               "activations_gib": {k: v / GIB for k, v in acts.items()}}
        modes = {"full": params}
        for r in ranks:
            modes[f"lora_r{r}"] = L * sum(r * (i + o) for i, o in linears.values())
        for mode, trainable in modes.items():
            state = 3 * trainable * bf16                   # gradient + 2 AdamW moments, bf16 like the parameters
            weights = params * bf16 + (trainable * bf16 if mode != "full" else 0)
            fixed = (weights + state) / GIB
            row[mode] = {"trainable": trainable, "grad_and_adam_gib": state / GIB, "weights_and_state_gib": fixed,
                         **{f"total_gib_{k}": fixed + a for k, a in row["activations_gib"].items()}}
            row[mode]["fits"] = {f"{gpu}GB": {k: row[mode][f"total_gib_{k}"] * GIB / 1e9 <= gpu * 0.92 for k in acts}
                                 for gpu in (80, 141)}  # 8% for the CUDA context, allocator slack, rollouts' KV
        out[name] = row
    return out


# ----------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an HF folder (default: SmolLM2-135M-Instruct, made once)")
    ap.add_argument("--only", default="train,rollout,memory")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-half-b", action="store_true", help="skip the 0.5B-shaped model")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    parts = args.only.split(",")
    if args.model is None:
        from get_smollm2 import get_smollm2
        args.model = get_smollm2(os.environ.get("SGPO_SMOLLM2_DIR", DEFAULT_MODEL))
    out_path = args.out or os.path.join(ROOT, "bench", "results", f"lora_cpu{'_quick' if args.quick else ''}.json")
    report = json.load(open(out_path)) if os.path.isfile(out_path) else {}
    report.update({"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__})
    q = args.quick
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in parts:
            ranks = (8,) if q else (8, 64)
            report["train"] = {"smollm2": bench_train(args.model, "SmolLM2-135M-Instruct", 4, 4, 16 if q else 128,
                                                      1, tmp, ranks, trl=True)}
            if not args.no_half_b and not q:
                half = random_half_b(args.model, os.path.join(os.path.dirname(DEFAULT_MODEL), "random-0.5b"))
                report["train"]["random_0.5b"] = bench_train(half, "0.5B-shaped, random weights", 2, 4, 64, 1, tmp,
                                                             (8,), trl=True)
        if "rollout" in parts:
            report["rollout"] = bench_rollout(args.model, 8, 16 if q else 64, [(1, 1), (8, 8)], 1 if q else 2)
        if "memory" in parts:
            report["memory"] = memory_model()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(out_path + ".tmp", out_path)
    print(json.dumps({k: v for k, v in report.items() if k != "memory"}, indent=1)[:6000])
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
