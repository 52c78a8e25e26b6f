"""The task's tiny model and its supervised warm start (docs/design.md section 6.8).

`model_config()` is a Llama decoder of about 0.6M parameters (hidden 128,
3 layers, 4 heads, SwiGLU 352, tied embeddings): the Llama counterpart of the
prototype's pre-norm GPT (d=128, 3 layers, MLP 512). `warm_start()` trains it
from scratch on worked solutions (k = 1..12, weighted toward k <= 3) so that it
is weak but not hopeless on long chains, and saves it as a Hugging Face folder.
`load_warm_start()` returns the shipped model (sgpo_engine/tasks/warm_start/),
or trains one and caches it under the user cache dir when it is missing.

Why 1000 steps, not the prototype's 2000: this model learns the task faster
than the prototype's GPT. Held-out greedy accuracy (seed 0, 1 thread):
  step 1000 (100 per k):  k4 0.62  k6 0.40  k8 0.20   <- the shipped model
  step 1500 (100 per k):  k4 0.87  k6 0.59  k8 0.62
  step 2000 (300 per k):  k4 0.90  k6 0.82  k8 0.67  k9 0.03  k10 0.02
The prototype's warm start had k4 0.75, k6 0.45, k8 0.09: weak but not
hopeless, so that the hardest prompts give mostly all-negative groups. Step
1000 is the closest. The curve is steep there (k8 0.02 at step 500), so a run
with other numerics (another BLAS, more threads) can land somewhat apart.

The shipped model (recipe 2) trains on k = 1..12 (k <= 3 at weight 3, the
rest 1), 1000 steps: held-out greedy accuracy k1 0.81, k4 0.26, k8 0.27,
k10 0.27, k11 0.21, k12 0.17 (100 per k). Recipe 1 (k = 1..8, the numbers
above) left every chain longer than 8 out of distribution: the model always
answered after 8 lines, so RL on k >= 9 failed for a structural reason.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Callable, Optional, Sequence

import torch

from .arith import ArithTask
from .tokenizer import BOS_ID, EOS_ID, GENERATION_CONFIG, PAD_ID, VOCAB, build_tokenizer, encode_chars

WARM_START_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_start")
INFO_FILE = "warm_start.json"
RECIPE_VERSION = 2          # bump when the recipe changes, so stale user caches are retrained

DEFAULT_K_WEIGHTS = (3.0, 3.0, 3.0) + (1.0,) * 9  # k = 1..12: the demo trains on k 10-12
EVAL_KS = tuple(range(1, 13))


def model_config():
    from ..model import ModelConfig
    return ModelConfig(
        architecture="LlamaForCausalLM", vocab_size=len(VOCAB), hidden_size=128, intermediate_size=352,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=True, dtype=torch.float32,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)


def new_policy(seed: int = 0, device=None):
    """A randomly initialized task model with the task tokenizer."""
    from ..model import Policy
    policy = Policy.from_config(model_config(), build_tokenizer(), dtype=torch.float32, device=device, seed=seed)
    policy.generation_config = dict(GENERATION_CONFIG)
    return policy


def num_parameters(policy) -> int:
    return sum(p.numel() for p in policy.parameters())


# ----------------------------------------------------------------------
# supervised batches
# ----------------------------------------------------------------------
def sft_batch(problems, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """<bos> prompt reference <eos>, right-padded -> (input_ids [B, T],
    targets [B, T], mask [B, T]) with mask = 1 on the targets that are response
    tokens (the worked solution and the EOS), 0 on the prompt and the padding."""
    seqs, starts = [], []
    for p in problems:
        prompt = [BOS_ID] + encode_chars(p.prompt)
        seqs.append(prompt + encode_chars(p.reference) + [EOS_ID])
        starts.append(len(prompt))
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), PAD_ID, dtype=torch.int64)                    # [B, L]
    mask = torch.zeros(len(seqs), L - 1)                                           # [B, T]
    for i, (s, st) in enumerate(zip(seqs, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, st - 1:len(s) - 1] = 1.0       # target j is token j + 1: response tokens are st..len-1
    return ids[:, :-1].to(device), ids[:, 1:].to(device), mask.to(device)


def sft_loss(policy, input_ids, targets, mask, num_tokens=None) -> torch.Tensor:
    """-sum over response tokens of log p(target) / num_tokens (default: the
    mask's token count, i.e. the mean); fused: no [B, T, V] logits."""
    from .. import ops
    hidden = policy.hidden_states(input_ids)                                        # [B, T, H]
    logp = ops.fused_logprobs(hidden, policy.lm_head_weight, targets)              # [B, T]
    if num_tokens is None:
        num_tokens = mask.sum().clamp(min=1)
    return -(logp * mask).sum() / num_tokens


def sft_step(policy, problems, micro_batches: int = 8) -> float:
    """Forward and backward of the SFT loss (mean over all response tokens of
    the batch) on `problems`, in up to micro_batches length-sorted chunks so
    that short chains are not padded to the longest one; returns the loss.
    Gradients accumulate into .grad (the caller zeroes them and steps)."""
    problems = sorted(problems, key=lambda p: len(p.prompt) + len(p.reference))
    total = sum(len(p.reference) + 1 for p in problems)      # response tokens: solution + EOS
    n = max(1, min(micro_batches, len(problems)))
    bounds = [round(i * len(problems) / n) for i in range(n + 1)]
    loss_sum = 0.0
    for a, b in zip(bounds, bounds[1:]):
        inputs, targets, mask = sft_batch(problems[a:b], policy.device)
        loss = sft_loss(policy, inputs, targets, mask, num_tokens=total)
        loss.backward()
        loss_sum += loss.item()
    return loss_sum


# ----------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy, ks: Sequence[int] = EVAL_KS, n: int = 300, seed: int = 0, batch_size: int = 300
             ) -> dict[str, dict[str, float]]:
    """Greedy accuracy on n held-out problems per k, with the correct-prefix
    share and the premature-answer rate: {"k4": {"accuracy": ..., ...}, ...}.
    The engine's one evaluation path (sgpo_engine.evaluation), shaped per k;
    seed: the sampling streams' (greedy: unused); the problems are arith.eval_set's."""
    from ..evaluation import EvalSettings, evaluate as evaluate_heldout, local_sampler
    from .builtin import BuiltinTask, heldout_examples
    task = BuiltinTask(min(ks), max(ks))
    settings = EvalSettings(num_samples=1, temperature=0.0, seed=seed, batch_size=batch_size)
    m = evaluate_heldout(local_sampler(policy), heldout_examples(ks, n), settings, task.verify,
                         task.sample_metrics).metrics
    return {f"k{k}": {name: m[f"eval/k{k}/{name}"] for name in ("accuracy", "correct_prefix", "premature_answer")}
            for k in ks}


# ----------------------------------------------------------------------
# training
# ----------------------------------------------------------------------
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def warm_start(output_dir: Optional[str] = WARM_START_DIR, steps: int = 1000, batch_size: int = 64,
               lr: float = 1e-3, warmup_steps: int = 100, weight_decay: float = 0.01, grad_clip: float = 1.0,
               k_weights: Sequence[float] = DEFAULT_K_WEIGHTS, seed: int = 0,
               eval_ks: Sequence[int] = EVAL_KS, eval_n: int = 300, log_every: int = 100,
               micro_batches: int = 8, eval_every: int = 0, threads: Optional[int] = None, device=None,
               log: Optional[Callable[[str], None]] = _log):
    """Supervised warm start on worked solutions; returns (policy, info).

    Each step draws batch_size training problems (k = 1..len(k_weights) with
    the given relative weights), and minimizes the mean negative log-prob of
    the response tokens (prompt masked out) with AdamW (linear warm-up over
    warmup_steps, then constant lr). Then measures held-out greedy accuracy
    per k (eval_n problems each; eval_n = 0 skips it) and, when output_dir is
    given, saves the policy there (Policy.save) plus warm_start.json (recipe,
    timings, final loss, accuracies).

    micro_batches: length-sorted chunks per step (same gradient, less padding).
    eval_every: also log a quick held-out accuracy (100 problems, k = 4, 6, 8)
    every that many steps (0: never); recorded in info["progress"].
    threads: torch intra-op threads for the run (None: leave as is). On a
    shared, oversubscribed CPU, 1 thread is many times faster than 2.
    """
    log = log or (lambda msg: None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    policy = new_policy(seed=seed, device=device)
    policy.train()
    task = ArithTask(1, len(k_weights), seed=seed, split="train", weights=k_weights)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    params = num_parameters(policy)
    log(f"warm start: {params:,} parameters, {steps} steps x batch {batch_size}, lr {lr}")
    t0 = time.time()
    losses, progress = [], []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = sft_step(policy, task.batch(batch_size), micro_batches)
        torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(loss)
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"warm start: loss is {losses[-1]} at step {step}")
        if log_every and (step % log_every == 0 or step == steps):
            window = losses[-log_every:]
            log(f"step {step}/{steps}  loss {sum(window) / len(window):.4f}  {time.time() - t0:.0f}s")
        if eval_every and step % eval_every == 0 and step < steps:
            quick = evaluate(policy, (4, 6, 8), n=100, seed=0)
            progress.append({"step": step, "seconds": round(time.time() - t0, 1),
                             **{k: v["accuracy"] for k, v in quick.items()}})
            log(f"step {step}: held-out greedy accuracy (100 per k) " +
                "  ".join(f"{k} {v['accuracy']:.2f}" for k, v in quick.items()))
    train_s = time.time() - t0
    tail = losses[-100:]
    final_loss = sum(tail) / len(tail) if tail else float("nan")
    policy.eval()

    if output_dir is not None:
        policy.save(output_dir)          # before the evaluation, so a failure there loses no training
        log(f"saved to {output_dir}")
    info = {
        "recipe_version": RECIPE_VERSION,
        "parameters": params,
        "steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps,
        "weight_decay": weight_decay, "grad_clip": grad_clip, "k_weights": list(k_weights), "seed": seed,
        "micro_batches": micro_batches,
        "final_loss": final_loss,
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(), "device": str(policy.device),
        "eval_problems_per_k": eval_n,
        "heldout_greedy": {},
        "progress": progress,
    }
    if eval_n:
        t1 = time.time()
        info["heldout_greedy"] = evaluate(policy, eval_ks, n=eval_n, seed=0)
        info["eval_seconds"] = round(time.time() - t1, 1)
        log("held-out greedy accuracy: " +
            "  ".join(f"{k} {v['accuracy']:.3f}" for k, v in info["heldout_greedy"].items()))
    if output_dir is not None:
        with open(os.path.join(output_dir, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    return policy, info


# ----------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------
def cache_dir() -> str:
    """Where a warm start trained on this machine is cached: $SGPO_ENGINE_CACHE,
    else $XDG_CACHE_HOME/sgpo_engine, else ~/.cache/sgpo_engine."""
    root = os.environ.get("SGPO_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sgpo_engine")
    return os.path.join(root, f"arith_warm_start_v{RECIPE_VERSION}")


def _complete(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in ("config.json", "model.safetensors", "tokenizer.json"))


def warm_start_path(train_if_missing: bool = True, log: Optional[Callable[[str], None]] = _log) -> str:
    """The folder of the warm start: the shipped one, else the user cache
    (trained there first when missing and train_if_missing)."""
    if _complete(WARM_START_DIR):
        return WARM_START_DIR
    cached = cache_dir()
    if not _complete(cached):
        if not train_if_missing:
            raise FileNotFoundError(f"no warm start at {WARM_START_DIR} or {cached}")
        if log:
            log(f"warm start: {WARM_START_DIR} is missing; training one into {cached} "
                f"(about 10-20 minutes on a 2-core CPU)")
        warm_start(cached, log=log)
    return cached


def load_warm_start(dtype=None, device=None, train_if_missing: bool = True):
    """The warm-started task policy (see warm_start_path)."""
    from ..model import load
    policy = load(warm_start_path(train_if_missing), dtype=dtype, device=device)
    return policy
