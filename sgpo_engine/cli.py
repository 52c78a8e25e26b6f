"""The `sgpo` command.

    sgpo demo [--quick | --full] [--output DIR]   GRPO vs SGPO on the built-in task
    sgpo train --config FILE.toml [--field value ...]
    sgpo generate --model DIR --prompt TEXT [-n G] [--max-new-tokens N] ...
    sgpo eval --model DIR [--model DIR2 ...] --dataset FILE [-k 4 --temperature 1]   held-out accuracy, pass@k
    sgpo plot RUN_DIR                               the eval curves beside the training metrics
    sgpo merge --adapter CKPT [--base DIR] --output DIR   a LoRA checkpoint merged into an HF folder
    sgpo judge-eval --data FILE.jsonl --judge NAME [--judge-url URL ...]   score a step judge
    sgpo serve --model DIR [--host 127.0.0.1] [--port 8000]

Under torchrun: `torchrun --nproc_per_node N -m sgpo_engine.cli train ...`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

# Before torch loads OpenMP: threads waiting for work sleep instead of spinning.
# On a shared CPU a spinning team steals the cores its own slowest thread
# needs; measured, a step ran 2-4x slower with one core busy elsewhere, about
# as fast as with 1 thread when sleeping (docs/design.md section 6.7).
if "GOMP_SPINCOUNT" not in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _train(args, overrides: list[str]) -> int:
    from .train import SGPOTrainer, load_config
    cfg = load_config(args.config, overrides)
    trainer = SGPOTrainer(cfg)
    history = trainer.train()
    if trainer.dist.main and history:
        last = history[-1]
        print(f"done: step {last['step']}, accuracy {last['accuracy']:.3f}, "
              f"all-negative {last['all_negative_frac']:.2f}, metrics in {cfg.output}/metrics.jsonl")
    trainer.close()
    return 0


def _generate(args, _overrides) -> int:
    from . import generate
    from .tasks.factory import load_policy
    policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    prompts = args.prompt if not args.token_ids else [json.loads(p) for p in args.prompt]
    out = generate(policy, prompts, num_samples=args.n, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                   stop=args.stop or None, seed=args.seed, chat_template=args.chat)
    for prompt, group in zip(args.prompt, out):
        for i, c in enumerate(group):
            if args.json:
                print(json.dumps({"prompt": prompt, "sample": i, "text": c.text, "token_ids": c.token_ids,
                                  "logprobs": c.logprobs, "finish_reason": c.finish_reason}))
            else:
                print(f"--- prompt {prompt!r} sample {i} ({c.finish_reason}, {len(c.token_ids)} tokens)")
                print(c.text)
    return 0


def _judge_eval(args, overrides: list[str]) -> int:
    from .evaluation import run_judge_eval
    from .evaluation.judge_eval import table
    from .train import load_config
    cfg = load_config(args.config, overrides)
    report = run_judge_eval(args.data, cfg, args.output)
    print(table(report))
    print(f"wrote {args.output}/report.json, items.jsonl and judge_eval.png")
    return 0


def _eval(args, _overrides) -> int:
    from .evaluation.heldout import EvalSettings
    from .evaluation.report import candidates, run_eval, table
    from .tasks import BUILTIN, BuiltinTask, DatasetTask
    columns = candidates(args.model, args.server, args.served_model)
    settings = EvalSettings(num_samples=args.samples, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, top_p=args.top_p, stop=args.stop,
                            chat_template=args.chat_template, seed=args.seed, batch_size=args.batch_size
                            ).validated(lambda f: "-k" if f == "num_samples" else f"--{f.replace('_', '-')}")
    if args.dataset == BUILTIN:
        task = BuiltinTask(args.min_ops, args.max_ops)
    else:
        task = DatasetTask(args.dataset, args.prompt_field, args.answer_field, None, eval_path=args.dataset,
                           group_field=args.group_field)
    report = run_eval(task, columns, settings, args.problems, args.seed, args.output,
                      dtype=args.dtype, device=args.device)
    print(table(report))
    print(f"wrote {args.output}/report.json and one .jsonl per model")
    return 0


def _merge(args, _overrides) -> int:
    from .model.lora import ADAPTER_CONFIG, load_adapter
    from .model.files import read_json
    from .tasks.factory import load_policy
    config = read_json(os.path.join(args.adapter, ADAPTER_CONFIG))
    if config is None:
        raise ValueError(f"--adapter: {args.adapter}/{ADAPTER_CONFIG} not found (is it a LoRA run's checkpoint?)")
    base = args.base or config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"--base: {args.adapter}/{ADAPTER_CONFIG} names no base model; give --base DIR")
    policy = load_policy(base, dtype=args.dtype)
    names = load_adapter(policy, args.adapter)
    policy.save(args.output)  # the merged weights: W + (alpha / r) B A
    print(f"merged {len(names)} adapted linears of {args.adapter} into {base}: wrote {args.output}")
    return 0


def _plot(args, _overrides) -> int:
    from .evaluation.curves import plot_run
    print(f"wrote {plot_run(args.run, args.output)}")
    return 0


def _demo(args, overrides) -> int:
    from .demo import run_demo
    run_demo(output=args.output, quick=args.quick, full=args.full, seeds=args.seeds, overrides=overrides,
             jobs=args.jobs, sweep=args.sweep, arms=args.arms.split(",") if args.arms else None,
             regime=args.regime, lrs=[float(x) for x in args.lrs.split(",")] if args.lrs else None,
             reuse=args.reuse)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sgpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    from .judge.registry import judges_help
    from .train.config import JUDGE_OPTION_FIELDS, fields_help
    t = sub.add_parser("train", help="train with SGPO/GRPO from a TOML config (extra --field value overrides)",
                       usage="sgpo train [--config FILE.toml] [--FIELD VALUE ...]",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every field below can be set in the TOML file (tables are for reading "
                                   "comfort only) and\noverridden on the command line: --max-steps 3, --lr=1e-6, "
                                   "--resume (a bool alone means true).",
                       epilog="config fields, by TOML table:\n\n" + fields_help() + "\n\njudges (config field "
                              "'judge'; * marks a field the judge needs):\n"
                              + judges_help(lambda o: JUDGE_OPTION_FIELDS[o]))
    t.add_argument("--config", default=None, help="TOML file (default: the built-in task's defaults)")
    t.set_defaults(func=_train, overrides_ok=True)

    g = sub.add_parser("generate", help="sample completions from a model folder")
    g.add_argument("--model", required=True, help="Hugging Face-format folder, or builtin:arith")
    g.add_argument("--prompt", action="append", required=True, help="repeatable")
    g.add_argument("--token-ids", action="store_true", help="prompts are JSON lists of token ids")
    g.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    g.add_argument("-n", type=int, default=1, help="samples per prompt")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--stop", action="append", default=[])
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--dtype", default=None)
    g.add_argument("--device", default=None)
    g.add_argument("--json", action="store_true", help="one JSON object per completion")
    g.set_defaults(func=_generate, overrides_ok=False)

    e = sub.add_parser("eval", help="held-out accuracy and pass@k of models or a server on a dataset",
                       usage="sgpo eval (--model DIR ... | --server URL --served-model NAME) --dataset FILE [...]",
                       description="Each model is evaluated on the same problems (a fixed subset with --problems) "
                                   "and sampling streams as the trainer's eval_every; --seed is the config's seed.")
    e.add_argument("--model", action="append", default=[], help="HF folder or builtin:arith (repeatable)")
    e.add_argument("--server", default=None, help="an OpenAI-compatible API root (vLLM, SGLang, sgpo serve)")
    e.add_argument("--served-model", default=None, help="the model id the server serves")
    e.add_argument("--dataset", required=True, help=".jsonl / .parquet held-out rows, or builtin:arith")
    e.add_argument("--prompt-field", default="prompt")
    e.add_argument("--answer-field", default="answer")
    e.add_argument("--group-field", default=None, help="a row field to break the metrics down by")
    e.add_argument("--chat-template", action="store_true", help="string prompts as a user turn of the chat template")
    e.add_argument("--problems", type=int, default=0, help="a fixed, seeded subset of this many (0: all; "
                   "builtin:arith: per k, default 100)")
    e.add_argument("-k", "--samples", type=int, default=1, help="samples per problem (pass@k, mean@k)")
    e.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--stop", action="append", default=[])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=16, help="problems per generate call (or requests in flight)")
    e.add_argument("--min-ops", type=int, default=10, help="builtin:arith: the chain lengths evaluated")
    e.add_argument("--max-ops", type=int, default=12)
    e.add_argument("--dtype", default=None)
    e.add_argument("--device", default=None)
    e.add_argument("--output", default="runs/eval", help="where report.json and the per-problem rows go")
    e.set_defaults(func=_eval, overrides_ok=False)

    pl = sub.add_parser("plot", help="plot a run's eval curves and training metrics (OUTPUT/curves.png)")
    pl.add_argument("run", help="a training run's output folder (with metrics.jsonl)")
    pl.add_argument("--output", default=None, help="the PNG (default: RUN/curves.png)")
    pl.set_defaults(func=_plot, overrides_ok=False)

    mg = sub.add_parser("merge", help="merge a LoRA checkpoint (PEFT format) into its base: an HF folder")
    mg.add_argument("--adapter", required=True, help="a checkpoint of a LoRA run, or any PEFT LoRA adapter folder")
    mg.add_argument("--base", default=None, help="the base model folder (default: the adapter's "
                    "base_model_name_or_path)")
    mg.add_argument("--output", required=True)
    mg.add_argument("--dtype", default=None)
    mg.set_defaults(func=_merge, overrides_ok=False)

    from .judge.registry import judge_names
    j = sub.add_parser("judge-eval", help="score a step judge on labelled first errors (ProcessBench format)",
                       usage="sgpo judge-eval --data FILE.jsonl [--config FILE.toml] [--output DIR] [--FIELD VALUE ...]",
                       description="The judge comes from the training config fields (--judge, --judge-url, "
                                   f"--judge-model, --step-mode, ...; judges: {', '.join(judge_names())}), "
                                   "built and run as in training.")
    j.add_argument("--data", required=True, help='JSONL rows {"problem", "steps": [...] or "response", "label"}')
    j.add_argument("--config", default=None, help="TOML file with the judge fields (optional)")
    j.add_argument("--output", default="runs/judge_eval", help="where report.json, items.jsonl and the plot go")
    j.set_defaults(func=_judge_eval, overrides_ok=True)

    # allow_abbrev off: `--seed 1` and `--lr 3e-4` are training overrides, not --seeds or --lrs
    d = sub.add_parser("demo", help="GRPO vs SGPO vs SGPO-prefix on the built-in multistep task (the embedded default)",
                       allow_abbrev=False)
    d.add_argument("--output", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="a 2-minute smoke version (CI)")
    d.add_argument("--full", action="store_true", help="the longer, more seeds version")
    d.add_argument("--seeds", type=int, default=None)
    d.add_argument("--jobs", type=int, default=None, help="parallel runs (default: one per core)")
    d.add_argument("--arms", default=None, help="comma-separated arms: grpo, sgpo, sgpo-prefix (the default), "
                   "sgpo-guard, sgpo-prefix-guard (with the phantom-gradient guard)")
    d.add_argument("--sweep", action="store_true", help="each arm at each learning rate of the sweep (one seed)")
    d.add_argument("--lrs", default=None, help="comma-separated learning rates for --sweep (default: 1e-5,3e-5,1e-4,3e-4)")
    d.add_argument("--reuse", default=None, help="an earlier results.json: its runs of the same settings, arm and "
                   "rate are kept, the others trained (e.g. docs/demo/results.json beside a new arm)")
    d.add_argument("--regime", default="default", choices=("default", "hard"),
                   help="hard: chains of 13-16 operations, longer than the warm start has seen")
    d.set_defaults(func=_demo, overrides_ok=True)

    from . import serve
    serve.add_parser(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "overrides_ok", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest)
    except ValueError as e:  # bad config, data or arguments: one clear line, no traceback
        print(f"sgpo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
