"""SGPO inside verl: the "sgpo" reward manager and advantage estimator on one real batch.

In verl (0.9; GPUs, a rollout engine, a judge server), after `pip install -e .` here:

    python -m verl.trainer.main_ppo ... \\
        algorithm.adv_estimator=sgpo reward.reward_manager.name=sgpo \\
        +algorithm.sgpo.judge.url=http://judge:8000/v1 +algorithm.sgpo.judge.model=NAME \\
        reward.custom_reward_function.path=pkg://sgpo_engine.integrations.verl \\
        reward.custom_reward_function.name=verify_score     # or your own compute_score

This script (CPU, no server, ~30 s) runs what verl's trainer runs with those
settings for one step, with verl's own code: the built-in task's model rolls
out G responses per problem (sgpo_engine's generate, standing in for verl's
rollout), each response goes through the "sgpo" reward manager's run_single
(verl's reward loop), and verl's compute_advantage calls the "sgpo" estimator,
which judges the all-negative groups (the task's exact judge, installed with
set_judge, standing in for the server). It prints each group's rewards, RTS and
advantages under verl's "grpo" and under "sgpo".

    python examples/verl_sgpo.py [--problems 8] [--group-size 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import uuid

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl import DataProto
from verl.trainer.ppo.ray_trainer import compute_advantage

import sgpo_engine
from sgpo_engine import tasks
from sgpo_engine.integrations import verl as sgpo_verl  # `import verl` registered it already (plugin)


def rollout_batch(policy, problems, G: int, seed: int, pad: int) -> DataProto:
    """verl's rollout output: left-padded prompts, right-padded responses, one uid per problem."""
    groups = sgpo_engine.generate(policy, [e.prompt for e in problems], num_samples=G, max_new_tokens=96,
                                  temperature=1.0, seed=seed)
    rows = [(e, c) for e, group in zip(problems, groups) for c in group]  # the G of a problem together
    Lp = max(len(c.prompt_ids) for _, c in rows)
    Lr = max(len(c.token_ids) for _, c in rows)
    prompts = torch.tensor([[pad] * (Lp - len(c.prompt_ids)) + c.prompt_ids for _, c in rows])
    responses = torch.tensor([c.token_ids + [pad] * (Lr - len(c.token_ids)) for _, c in rows])
    mask = torch.tensor([[0] * (Lp - len(c.prompt_ids)) + [1] * (len(c.prompt_ids) + len(c.token_ids))
                         + [0] * (Lr - len(c.token_ids)) for _, c in rows])
    uids = {id(e): str(uuid.uuid4()) for e in problems}
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "response_mask": mask[:, Lp:].clone()},
        non_tensors={"uid": np.array([uids[id(e)] for e, _ in rows], dtype=object),
                     "data_source": np.array(["arith"] * len(rows), dtype=object),
                     "reward_model": np.array([{"ground_truth": e.answer} for e, _ in rows], dtype=object),
                     "extra_info": np.array([{"question": e.prompt} for e, _ in rows], dtype=object)})


async def reward_loop(tokenizer, data: DataProto):
    """verl's RewardLoopWorker: builds the manager in its event loop, then (compute_score_batch)
    runs run_single on each response concurrently. Returns (rm_scores [B, T], the outputs)."""
    manager = sgpo_verl.SGPORewardManager(OmegaConf.create({}), tokenizer,
                                          compute_score=lambda solution_str, ground_truth, **_:
                                          float(tasks.verify(solution_str, ground_truth)))
    outs = await asyncio.gather(*(manager.run_single(data[i:i + 1]) for i in range(len(data))))
    return manager.assemble_rm_scores(data, [o["reward_score"] for o in outs]), outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    path = tasks.warm_start_path()
    policy = sgpo_engine.load(path)
    hf_tokenizer = AutoTokenizer.from_pretrained(path)  # verl hands reward managers an HF tokenizer
    problems = tasks.ArithSource(8, 10, args.seed).batch(0, args.problems)
    data = rollout_batch(policy, problems, args.group_size, args.seed, hf_tokenizer.pad_token_id)

    data.batch["token_level_rewards"], outs = asyncio.run(reward_loop(hf_tokenizer, data))
    for key in outs[0]["reward_extra_info"]:  # what the trainer does with reward_extra_info
        data.non_tensor_batch[key] = np.array([o["reward_extra_info"][key] for o in outs], dtype=object)

    grpo = compute_advantage(copy.deepcopy(data), "grpo", norm_adv_by_std_in_grpo=True)
    sgpo_verl.set_judge(tasks.exact_judge())
    sgpo = compute_advantage(data, "sgpo", config=OmegaConf.create({"norm_adv_by_std_in_grpo": True,
                                                                     "sgpo": {"scope": "all_negative"}}))

    G = args.group_size
    score = data.batch["token_level_rewards"].sum(-1)  # [B]
    adv = {"grpo": grpo.batch["advantages"][:, 0], "sgpo": sgpo.batch["advantages"][:, 0]}  # [B], first token
    signal = {name: 0 for name in adv}
    for p in range(args.problems):
        rows = range(p * G, (p + 1) * G)
        print(f"problem {p}{'' if any(score[i] > 0 for i in rows) else ' (all wrong)'}")
        for i in rows:
            rts = sgpo.non_tensor_batch["sgpo_rts"][i]
            print(f"  reward {score[i]:.0f}  rts {'  -  ' if np.isnan(rts) else f'{rts:.3f}'}  "
                  f"advantage grpo {adv['grpo'][i]:+.3f}  sgpo {adv['sgpo'][i]:+.3f}")
        for name, a in adv.items():
            signal[name] += bool((a[list(rows)] != 0).any())
    print(f"groups with signal: grpo {signal['grpo']}, sgpo {signal['sgpo']} of {args.problems}")


if __name__ == "__main__":
    main()
