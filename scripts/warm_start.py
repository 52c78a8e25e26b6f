#!/usr/bin/env python
"""Train the built-in task's warm-start model and write it into the package.

    PYTHONPATH=. nice -n 10 python scripts/warm_start.py            # -> sgpo_engine/tasks/warm_start/
    PYTHONPATH=. python scripts/warm_start.py --steps 50 --eval-n 20 --output /tmp/ws   # smoke run

Supervised training on worked solutions (k = 1..12 weighted toward k <= 3,
batch 64, AdamW 1e-3, 1000 steps: see sgpo_engine/tasks/warmup.py for why not
2000), then held-out greedy accuracy per k; writes
model.safetensors, config.json, generation_config.json, the tokenizer files
and warm_start.json (recipe, timings, accuracies). See
sgpo_engine/tasks/warmup.py and docs/design.md section 6.8.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from sgpo_engine.tasks.warmup import DEFAULT_K_WEIGHTS, EVAL_KS, WARM_START_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default=WARM_START_DIR, help="folder to write (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--k-weights", type=float, nargs="+", default=list(DEFAULT_K_WEIGHTS),
                    help="relative weight of k = 1, 2, ... (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=300, help="held-out problems per k (0: no evaluation)")
    ap.add_argument("--eval-ks", type=int, nargs="+", default=list(EVAL_KS))
    ap.add_argument("--micro-batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared CPU, more threads are much slower)")
    ap.add_argument("--eval-every", type=int, default=500,
                    help="log a quick held-out accuracy every N steps (0: never)")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)

    from sgpo_engine.tasks.warmup import warm_start
    _, info = warm_start(args.output, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_steps=args.warmup_steps, k_weights=args.k_weights, seed=args.seed,
                         eval_ks=args.eval_ks, eval_n=args.eval_n, micro_batches=args.micro_batches,
                         eval_every=args.eval_every, threads=args.threads, log_every=args.log_every)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
