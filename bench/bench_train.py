"""Full RL steps on the built-in task: sgpo_engine vs TRL's GRPOTrainer, one run.

    python bench/bench_train.py              # 16 prompts x G=8, k = 8..10, 96 new tokens, 8 timed steps
    python bench/bench_train.py --quick      # 2 timed steps (smoke run)
    python bench/bench_train.py --no-trl     # ours only
    python bench/bench_train.py --model DIR --dataset examples/data/gsm8k_sample.jsonl --prompt-field question \
        --chat-template --engines sgpo_grpo      # a real model on GSM8K (bench_real.py runs this per engine)

Every engine trains the same tiny task model (the shipped warm start when it
exists, else a fresh random one; --model picks), loaded from one HF folder (TRL
through transformers' AutoModelForCausalLM), on the same prompts in the same
order (the built-in task's prompts of steps 0, 1, ...), with the same settings:
G samples per prompt, max_new_tokens, temperature 1, top_k 0 / top_p 1, AdamW
at the same lr (constant), grad clip 1, the "dapo" loss with eps 0.2, no KL,
one optimizer step per rollout (TRL: num_iterations 1, one batch of P*G
completions per step, no gradient checkpointing, fp32, CPU).

Engines:
  sgpo_grpo   sgpo_engine, scope "off": plain GRPO, reward = the task's verifier
  sgpo_grpo_padded  the same with update_layout "padded" (each row padded to the
              step's longest, each prompt computed per completion): the packed
              layout's before (not run by default)
  sgpo_sgpo   sgpo_engine, SGPO: + the task's exact step judge (RTS credit in
              all-negative groups); the judge runs in the reward phase
  trl_grpo    trl.GRPOTrainer, reward = the same verifier
  trl_fused   the same with sgpo_engine's SGPOGRPOTrainer: TRL's trainer with
              the fused loss (not run by default; --engines trl_fused)
  trl_liger   TRL's GRPOTrainer with use_liger_kernel=True: Liger's fused
              linear GRPO loss (not run by default; --engines trl_liger)

Phases of a step (seconds, then completion tokens / second):
  rollout   sampling the completions (ours: generate; TRL: model.generate)
  reward    verifier (+ judge and advantages for ours)
  update    forward, loss, backward and optimizer step (ours: batch building,
            old log-probs when needed, fused loss; TRL: everything from the
            scored batch to the end of the optimizer step)
  other     the rest of the step (TRL: prompt tokenization, decoding, reward
            normalization and logging inside its rollout; ours: prompts, metrics)
"step tokens/s" is completion tokens per second of the whole step. Completion
lengths differ between engines (different random streams), so compare tokens/s,
not seconds. The first `--warmup` steps of each engine are not timed. The
engines take turns step by step (TRL step, our GRPO step, our SGPO step, ...),
so load from other processes on a shared machine falls on all alike.
With --dataset the prompts are that file's (the same for every engine) and
there is no step judge, so sgpo_sgpo is not run. The report holds the
process's peak RSS (`peak_rss_bytes`): run one engine per process
(--engines) to read each engine's peak memory.
Writes bench/results/train_cpu.json (train_cpu_quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sgpo_engine import tasks  # noqa: E402
from sgpo_engine.tasks import BUILTIN, make_task  # noqa: E402
from sgpo_engine.train import SGPOTrainer, TrainConfig  # noqa: E402

PHASES = ("rollout", "reward", "update", "other")


def model_folder(choice: str, tmp: str) -> tuple[str, str]:
    """(path, description) of the model every engine starts from."""
    if choice == "auto":
        try:
            return tasks.warm_start_path(train_if_missing=False, log=None), "warm start"
        except FileNotFoundError:
            choice = "fresh"
    if choice == "fresh":
        path = os.path.join(tmp, "fresh")
        tasks.new_policy(seed=0).save(path)
        return path, "fresh random (seed 0)"
    return choice, choice


def summarize(steps: list[dict]) -> dict:
    """Sums over the timed steps -> seconds per step and tokens/s per phase."""
    n = len(steps)
    tokens = sum(s["tokens"] for s in steps)
    total = sum(s["step"] for s in steps)
    out = {"steps": n, "completion_tokens": tokens, "mean_completion_len": tokens / max(1, sum(s["completions"]
                                                                                             for s in steps)),
           "step_seconds": total / n, "step_tokens_per_s": tokens / total}
    for ph in PHASES:
        sec = sum(s[ph] for s in steps)
        out[f"{ph}_seconds"] = sec / n
        out[f"{ph}_tokens_per_s"] = tokens / sec if sec > 0 else None
        out[f"{ph}_share"] = sec / total
    out["accuracy"] = sum(s["accuracy"] for s in steps) / n
    if steps and "update_positions" in steps[0]:  # ours: what the update's layout computed
        out["update_positions"] = sum(s["update_positions"] for s in steps) / n
        out["update_padding_frac"] = sum(s["update_padding_frac"] for s in steps) / n
    out["per_step"] = steps
    return out


# ----------------------------------------------------------------------
# sgpo_engine
# ----------------------------------------------------------------------
class Ours:
    """One sgpo_engine trainer, stepped from outside (so engines can take turns)."""

    def __init__(self, path, args, scope, examples_log, layout="packed"):
        cfg = TrainConfig(model=path, device=args.device, dataset=args.dataset, task_min_ops=args.min_ops,
                          task_max_ops=args.max_ops, prompt_field=args.prompt_field, chat_template=args.chat_template,
                          judge="builtin" if args.dataset == BUILTIN else "none",
                          prompts_per_step=args.prompts, num_samples=args.G, max_new_tokens=args.max_new_tokens,
                          temperature=1.0, scope=scope, loss_type="dapo", eps_low=0.2,
                          eps_high=0.2, beta=0.0, mu=1, micro_batch_size=args.micro_batch, update_layout=layout,
                          lr=args.lr,
                          lr_schedule="constant", max_grad_norm=1.0, max_steps=args.warmup + args.steps,
                          seed=args.seed, output=os.path.join(args.tmp, f"ours_{scope}_{layout}"), save_every=10 ** 9,
                          tensorboard=False, progress=False, lora_r=args.lora_r, lora_alpha=2.0 * max(args.lora_r, 1))
        self.args, self.trainer, self.timer, self.counts, self.steps = args, SGPOTrainer(cfg), {}, {}, []
        tr = self.trainer
        rollout = tr.rollout

        def counting_rollout(examples, seeds):
            groups = rollout(examples, seeds)
            examples_log.append([e.prompt for e in examples])
            self.counts["tokens"] = sum(len(c.token_ids) for g in groups for c in g)
            self.counts["completions"] = sum(len(g) for g in groups)
            return groups

        tr.rollout = self._timed("rollout", counting_rollout)
        tr._score_groups = self._timed("reward", tr._score_groups)
        tr._batch = self._timed("update", tr._batch)
        tr._update = self._timed("update", tr._update)

    def _timed(self, name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.timer[name] = self.timer.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    def step(self):
        self.timer.clear()
        t0 = time.perf_counter()
        m = self.trainer.train_step()
        total = time.perf_counter() - t0
        if self.trainer.step <= self.args.warmup:
            return
        rec = {"step": total, **{ph: self.timer.get(ph, 0.0) for ph in PHASES[:3]}, **self.counts,
               "accuracy": m["accuracy"], "all_negative_frac": m["all_negative_frac"],
               "update_positions": m["update_positions"], "update_padding_frac": m["update_padding_frac"]}
        rec["other"] = total - rec["rollout"] - rec["reward"] - rec["update"]
        self.steps.append(rec)

    def done(self) -> bool:
        return self.trainer.step >= self.trainer.cfg.max_steps

    def summary(self) -> dict:
        if self.trainer.metrics:
            self.trainer.metrics.close()
        return summarize(self.steps)


# ----------------------------------------------------------------------
# TRL
# ----------------------------------------------------------------------
TRL_ENGINES = ("trl_grpo", "trl_fused", "trl_liger")


def run_trl(path, args, prompts_by_step, examples_log, between=(), engine="trl_grpo"):
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if engine == "trl_liger" and args.device == "cpu":
        raise RuntimeError("trl_liger needs a GPU: use_liger_kernel patches the model with Liger's Triton kernels")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    as_prompt = (lambda p: [{"role": "user", "content": p}]) if args.chat_template else (lambda p: p)
    rows = [{"prompt": as_prompt(e.prompt), "answer": e.answer} for step in prompts_by_step for e in step]
    verify = args.task.verify
    timer = {}
    counts = {}

    def reward(prompts, completions, answer, **kw):
        t0 = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # chat: the reply
        out = [1.0 if verify(t, a) else 0.0 for t, a in zip(texts, answer)]
        timer["reward"] = timer.get("reward", 0.0) + time.perf_counter() - t0
        unwrap = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        examples_log.append(list(dict.fromkeys(unwrap)))  # unique prompts, in order
        counts["completions"] = len(completions)
        counts["accuracy"] = sum(out) / len(out)
        return out

    P, G = args.prompts, args.G
    config = GRPOConfig(
        # one optimizer step = one generation batch of P * G, in micro-batches of args.micro_batch
        output_dir=os.path.join(args.tmp, "trl"), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=P * G // args.micro_batch, num_generations=G,
        steps_per_generation=P * G // args.micro_batch, num_iterations=1, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_k=0, top_p=1.0, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.0, loss_type="dapo", epsilon=0.2, scale_rewards="group",
        shuffle_dataset=False, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=args.device == "cpu",
        max_steps=args.warmup + args.steps, logging_steps=1, report_to="none", save_strategy="no", seed=args.seed,
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
        use_liger_kernel=engine == "trl_liger")
    if engine == "trl_fused":
        from sgpo_engine.integrations.trl import SGPOGRPOTrainer as GRPOTrainer  # noqa: F811
    peft_config = None
    if args.lora_r:  # TRL + PEFT at the same rank, alpha and modules as ours
        from peft import LoraConfig
        from sgpo_engine.model.lora import ALL_LINEARS
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                 target_modules=list(ALL_LINEARS), task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=peft_config)

    generate = model.generate

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        try:
            out = generate(*a, **k)
        finally:
            timer["rollout"] = timer.get("rollout", 0.0) + time.perf_counter() - t0
        return out

    model.generate = timed_generate
    score = trainer._generate_and_score_completions

    def timed_score(*a, **k):
        t0 = time.perf_counter()
        try:
            return score(*a, **k)
        finally:
            timer["scored_at"] = time.perf_counter()
            timer["score"] = timer.get("score", 0.0) + time.perf_counter() - t0

    trainer._generate_and_score_completions = timed_score
    steps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timer.clear()
            timer["begin"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            end = time.perf_counter()
            for engine in between:  # the other engines take their turn between TRL's steps
                engine.step()
            if state.global_step <= args.warmup:
                return
            total = end - timer["begin"]
            rec = {"step": total, "rollout": timer.get("rollout", 0.0), "reward": timer.get("reward", 0.0),
                   "update": end - timer["scored_at"], "completions": counts["completions"],
                   "accuracy": counts["accuracy"]}
            rec["other"] = total - rec["rollout"] - rec["reward"] - rec["update"]
            steps.append(rec)

    trainer.add_callback(Clock())
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would drown the table
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    for rec, mean_len in zip(steps, lengths[args.warmup:]):
        rec["tokens"] = round(mean_len * rec["completions"])
    return summarize(steps)


# ----------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (both engines)")
    ap.add_argument("--quick", action="store_true", help="2 timed steps per engine")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per engine (default 8, quick 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps per engine")
    ap.add_argument("--model", default="auto", help="auto (warm start if shipped, else fresh) | fresh | PATH")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="sequences per forward/backward, both engines (default: all prompts x G; must divide it)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--min-ops", type=int, default=8)
    ap.add_argument("--max-ops", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared 2-core CPU)")
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL baseline")
    ap.add_argument("--engines", default=None,
                    help="comma-separated subset of sgpo_grpo,sgpo_sgpo,trl_grpo,trl_fused,trl_liger")
    ap.add_argument("--dataset", default=BUILTIN, help="builtin:arith (default) or a .jsonl / .parquet file")
    ap.add_argument("--prompt-field", default="prompt")
    ap.add_argument("--chat-template", action="store_true", help="prompts as a user turn of the chat template")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank for every engine (alpha 2r, every linear of "
                    "attention and MLP; TRL through PEFT); 0: full fine-tuning")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 8)
    args.micro_batch = args.micro_batch or args.prompts * args.G
    if (args.prompts * args.G) % args.micro_batch:
        ap.error(f"--micro-batch {args.micro_batch} must divide prompts x G = {args.prompts * args.G}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    report = {"device": card or platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "prompts": args.prompts, "samples": args.G,
              "max_new_tokens": args.max_new_tokens, "micro_batch": args.micro_batch, "task_ops": [args.min_ops, args.max_ops], "lr": args.lr,
              "dataset": args.dataset, "chat_template": args.chat_template, "lora_r": args.lora_r,
              "warmup_steps": args.warmup, "timed_steps": args.steps, "results": {}, "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        path, what = model_folder(args.model, tmp)
        report["model"] = what
        print(f"model: {what} ({path}); {args.prompts} prompts x G={args.G}, k={args.min_ops}..{args.max_ops}, "
              f"{args.max_new_tokens} new tokens, lr {args.lr}, {args.threads} thread(s), "
              f"{args.warmup} warm-up + {args.steps} timed steps per engine")
        args.task = make_task(argparse.Namespace(dataset=args.dataset, task_min_ops=args.min_ops,
                                                 task_max_ops=args.max_ops, seed=args.seed,
                                                 prompt_field=args.prompt_field, answer_field="answer",
                                                 reference_field="reference", eval_dataset="",
                                                 eval_group_field=""))
        src = args.task.source()
        prompts_by_step = [src.batch(s, args.prompts) for s in range(args.warmup + args.steps)]
        engines = args.engines.split(",") if args.engines else \
            ["sgpo_grpo", "trl_grpo"] + (["sgpo_sgpo"] if args.dataset == BUILTIN else [])
        seen = {name: [] for name in engines}
        variants = {"sgpo_grpo": ("off", "packed"), "sgpo_grpo_padded": ("off", "padded"),
                    "sgpo_sgpo": ("all_negative", "packed")}
        ours = {name: Ours(path, args, variants[name][0], seen[name], layout=variants[name][1])
                for name in engines if name in variants}
        trl_engines = [n for n in TRL_ENGINES if n in engines]
        trl_error = None
        if args.no_trl or not trl_engines:
            trl_error = "skipped"
        else:
            try:
                import trl
                report["trl"] = trl.__version__
            except Exception as e:  # not installed
                trl_error = f"trl is not importable ({type(e).__name__}: {e}); pip install trl"
        t0 = time.time()
        for i, name in enumerate(trl_engines if trl_error is None else []):
            # the engines take turns step by step, so a shared machine's load drifts onto all alike
            try:
                report["results"][name] = run_trl(path, args, prompts_by_step, seen[name],
                                                  between=list(ours.values()) if i == 0 else [],
                                                  engine=name)
            except Exception as e:
                traceback.print_exc()
                report["errors"][name] = f"TRL failed: {type(e).__name__}: {e}"
                seen.pop(name, None)
        if trl_error is not None:
            for name in trl_engines or ["trl_grpo"]:
                report["errors"][name] = trl_error
                seen.pop(name, None)
        while not all(o.done() for o in ours.values()):  # without TRL (or after it failed)
            for o in ours.values():
                if not o.done():
                    o.step()
        for name, o in ours.items():
            report["results"][name] = o.summary()
        print(f"  measured in {time.time() - t0:.0f} s")
        want = [[e.prompt for e in step] for step in prompts_by_step]
        report["same_prompts"] = {name: got == want for name, got in seen.items()}

    R = report["results"]
    print()
    print(f"{'engine':10s} {'step s':>7s} {'step tok/s':>10s} {'rollout tok/s':>13s} {'reward tok/s':>12s} "
          f"{'update tok/s':>12s}   share rollout/reward/update/other   len   acc")
    fmt = lambda v: f"{v:.0f}" if v is not None else "-"
    R = {name: R[name] for name in ("sgpo_grpo", "sgpo_grpo_padded", "sgpo_sgpo") + TRL_ENGINES if name in R}
    report["results"] = R
    for name, r in R.items():
        print(f"{name:10s} {r['step_seconds']:7.2f} {r['step_tokens_per_s']:10.0f} "
              f"{fmt(r['rollout_tokens_per_s']):>13s} "
              f"{fmt(r['reward_tokens_per_s']):>12s} {fmt(r['update_tokens_per_s']):>12s}   "
              f"{r['rollout_share']:.2f} / {r['reward_share']:.2f} / {r['update_share']:.2f} / "
              f"{r['other_share']:.2f}       {r['mean_completion_len']:5.1f} {r['accuracy']:.3f}")
    for name, err in report["errors"].items():
        print(f"{name}: NOT MEASURED: {err}")
    summary = {}
    if "trl_grpo" in R:
        t = R["trl_grpo"]
        for name in (n for n in ("sgpo_grpo", "sgpo_grpo_padded", "sgpo_sgpo", "trl_fused", "trl_liger") if n in R):
            for key in ("step", "rollout", "update"):
                summary[f"{name}_vs_trl_{key}_tokens_per_s"] = R[name][f"{key}_tokens_per_s"] / t[f"{key}_tokens_per_s"]
        print()
        for k, v in summary.items():
            print(f"  {k:38s} {v:6.2f}x")
    report["summary"] = summary
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    out = args.out or os.path.join(ROOT, "bench", "results", f"train_{args.device}{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    print(f"same prompts: {report['same_prompts']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
