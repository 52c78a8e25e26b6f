"""SGPO inside TRL: SGPOReward for the rewards, SGPOGRPOTrainer for the fused loss.

    python examples/trl_sgpo.py                       # the built-in task, 2 steps on CPU (~1 min)
    python examples/trl_sgpo.py --model PATH --judge-url http://127.0.0.1:8000/v1 --judge-model NAME \
        --dataset examples/data/gsm8k_sample.jsonl --prompt-field question --max-steps 50

With --model, PATH is any Hugging Face causal LM folder and the rows'
`answer` fields are checked by sgpo_engine's answer verifier (GSM8K's
"#### N" works); without it, the built-in arithmetic task's small model, its
exact step-wise judge and its verifier are used, so nothing needs a server.
"""
from __future__ import annotations

import argparse
import json

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from sgpo_engine import tasks
from sgpo_engine.integrations.trl import SGPOGRPOTrainer, SGPOReward
from sgpo_engine.judge import HTTPJudge


def builtin_rows(n: int) -> list[dict]:
    return [{"prompt": e.prompt, "answer": e.answer} for e in tasks.ArithSource(8, 10, 0).batch(0, n)]


def jsonl_rows(path: str, prompt_field: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    # chat prompts: TRL applies the model's chat template
    return [{"prompt": [{"role": "user", "content": r[prompt_field]}], "answer": r["answer"]} for r in rows]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an HF model folder (default: the built-in task's model)")
    ap.add_argument("--dataset", default=None, help="JSONL rows with the prompt field and 'answer'")
    ap.add_argument("--prompt-field", default="prompt")
    ap.add_argument("--judge-url", default=None, help="an OpenAI-compatible server's API root, e.g. .../v1")
    ap.add_argument("--judge-model", default=None)
    ap.add_argument("--max-steps", type=int, default=2)
    ap.add_argument("--output", default="runs/trl_sgpo")
    args = ap.parse_args(argv)

    if args.model is None:  # the built-in task: its model, problems, exact judge and verifier
        model_path, rows = tasks.warm_start_path(), builtin_rows(16)
        reward = SGPOReward(tasks.exact_judge(), verifier=tasks.verify, scope="all_negative")
    else:
        if not (args.dataset and args.judge_url and args.judge_model):
            ap.error("--model needs --dataset, --judge-url and --judge-model")
        model_path, rows = args.model, jsonl_rows(args.dataset, args.prompt_field)
        reward = SGPOReward(HTTPJudge(args.judge_url, args.judge_model), scope="all_negative")

    config = GRPOConfig(
        output_dir=args.output, max_steps=args.max_steps, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=48, learning_rate=1e-4, beta=0.0, loss_type="dapo", scale_rewards="group",
        use_cpu=not torch.cuda.is_available(), bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = SGPOGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                              reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(model_path))
    trainer.train()
    for h in trainer.state.log_history:
        if "loss" in h:
            print(f"step {h['step']}: loss {h['loss']:.4f}  reward {h.get('reward', float('nan')):.3f}  "
                  f"judged {h.get('sgpo/judged', 0):.0f}")


if __name__ == "__main__":
    main()
