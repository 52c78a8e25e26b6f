"""Per-rank memory of the training state under FSDP2 against unsharded (DDP keeps
a whole copy per rank): parameters, gradients and AdamW moments, on a randomly
initialized SmolLM2-135M-shaped decoder, 2 processes (gloo, CPU).

    python bench/bench_fsdp.py                 # launches itself under torchrun
    python bench/bench_fsdp.py --world 4

Each rank shards the decoder the way the trainer does (train/fsdp.py), runs one
forward, fused-loss backward and AdamW step (so the moments exist), then counts
the bytes of the tensors it holds: its parameter shards, gradient shards and
moment shards. The unsharded figure is the same count for the whole model. Also
each rank's peak RSS (which includes torch itself and the transient
all-gathered layers). Writes bench/results/fsdp_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
               tie_word_embeddings=True)


def local_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def worker(out: str) -> None:
    import torch.distributed as dist

    from sgpo_engine import ops
    from sgpo_engine.model import ModelConfig, Policy
    from sgpo_engine.train import fsdp
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    policy = Policy.from_config(ModelConfig("LlamaForCausalLM", **SMOLLM2), None, seed=0)
    n_params = sum(p.numel() for p in policy.parameters())
    fsdp.shard(policy.decoder, torch.device("cpu"))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(0, SMOLLM2["vocab_size"], (2, 64), generator=g)
    hidden = policy.decoder(ids)                                       # [2, 64, H]
    loss, _ = ops.fused_policy_loss(hidden, fsdp.gathered_lm_head(policy.lm_head_weight), ids, torch.ones(2, 64),
                                    torch.randn(2, generator=g))
    loss.backward()
    opt.step()
    params = local_bytes(policy.parameters())
    grads = local_bytes(p.grad for p in policy.parameters())
    moments = local_bytes(v for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq"))
    mine = {"rank": rank, "param_bytes": params, "grad_bytes": grads, "moment_bytes": moments,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    got = [None] * world
    dist.all_gather_object(got, mine)
    if rank == 0:
        whole = n_params * 4  # fp32
        per_rank = max(r["param_bytes"] + r["grad_bytes"] + r["moment_bytes"] for r in got)
        report = {"model": "SmolLM2-135M shape, random, fp32", "parameters": n_params, "world": world,
                  "unsharded_state_bytes": 4 * whole, "per_rank_state_bytes_max": per_rank,
                  "per_rank_over_unsharded": per_rank / (4 * whole),
                  "per_rank_params_plus_moments_over_unsharded":
                      max(r["param_bytes"] + r["moment_bytes"] for r in got) / (3 * whole),
                  "ranks": got}
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"{n_params / 1e6:.0f}M parameters, {world} ranks: per-rank parameters + gradients + moments "
              f"{per_rank / 2**20:.0f} MiB vs unsharded {4 * whole / 2**20:.0f} MiB "
              f"({report['per_rank_over_unsharded']:.3f}x); peak RSS per rank "
              f"{max(r['peak_rss_bytes'] for r in got) / 2**20:.0f} MiB")
        print(f"wrote {out}")
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "fsdp_cpu.json"))
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.world), "--master_addr",
           "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000), os.path.abspath(__file__), "--worker",
           "--out", args.out]
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
