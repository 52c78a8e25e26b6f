"""Op benchmarks: each op against its baseline, measured in the same run.

    python bench/bench_ops.py                  # CPU, the issue's shapes
    python bench/bench_ops.py --device cuda    # on a GPU
    python bench/bench_ops.py --quick          # small shapes, a smoke run

Writes bench/results/ops_<device>.json and prints a table. Ratios are
baseline / ours (time: > 1 means we are faster; memory: ours / baseline).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sgpo_engine as se  # noqa: E402
from sgpo_engine import reference  # noqa: E402
from sgpo_engine.options import CREDIT  # noqa: E402


# ---------------------------------------------------------------- measurement
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    """Median wall time of fn() over `repeat` runs after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_peak_reset():
    """Resets the process's peak RSS (Linux clear_refs 5); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_extra_bytes(fn, device):
    """Peak memory of fn() above what was allocated before it (bytes)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if not _rss_peak_reset():
        return float("nan")
    base = _rss_kb("VmRSS:")
    fn()
    return (_rss_kb("VmHWM:") - base) * 1024


# ---------------------------------------------------------------- cases
def bench_policy_loss_cases(tokens: int, seq: int, H: int, V: int, device) -> tuple[dict, dict]:
    """name -> a closure running fwd + bwd of that loss (eager, sgpo, liger when
    installed) on one set of random inputs, and the shape / gradient bytes."""
    B, T = tokens // seq, seq
    g = torch.Generator().manual_seed(0)
    mk = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device)
    hidden = mk(B, T, H, scale=0.5).requires_grad_()
    weight = mk(V, H, scale=H ** -0.5).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g).to(device)
    mask = (torch.rand(B, T, generator=g) < 0.9).float().to(device)
    adv = mk(B)
    with torch.no_grad():
        old = se.fused_logprobs(hidden, weight, targets) + mk(B, T, scale=0.05)

    def step(loss_fn):
        def run():
            hidden.grad = weight.grad = None
            loss = loss_fn()
            loss.backward()
        return run

    cases = {
        "eager": step(lambda: reference.fused_policy_loss(hidden, weight, targets, mask, adv, old_logp=old)[0]),
        "sgpo": step(lambda: se.fused_policy_loss(hidden, weight, targets, mask, adv, old_logp=old)[0]),
    }
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
        liger = LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False, loss_type="dapo")
        cases["liger"] = step(lambda: liger(hidden, weight, targets, mask, adv, old_per_token_logps=old)[0])
    except ImportError as e:
        print(f"  (liger-kernel not installed: {e}; pip install liger-kernel to compare)")
    # The gradients any implementation must return (hidden and weight).
    info = {"shape": {"tokens": B * T, "B": B, "T": T, "H": H, "V": V, "dtype": "float32"},
            "gradient_bytes": (hidden.numel() + weight.numel()) * hidden.element_size()}
    return cases, info


def bench_policy_loss(args, device):
    cases, info = bench_policy_loss_cases(args.loss_tokens, args.loss_seq, args.hidden, args.vocab, device)
    rows = {}
    for name, fn in cases.items():
        mem = peak_extra_bytes(fn, device)
        t = timed(fn, device, args.repeat)
        rows[name] = {"seconds": t, "peak_extra_bytes": mem}
        print(f"  fused_policy_loss {name:6s} {t * 1e3:9.1f} ms  peak extra {mem / 2**20:8.1f} MiB")
    rows["gradient_bytes"] = info["gradient_bytes"]
    return {"shape": info["shape"], "results": rows}


def eager_group_advantages(rewards, correct, rts, G, credit_beta=CREDIT.credit_beta, credit_gamma=CREDIT.credit_gamma,
                           eps=CREDIT.eps):
    """SGPO advantages in plain torch ops: what a trainer writes without the op."""
    all_neg = ~correct.view(-1, G).any(1)
    admit = ~correct & ~torch.isnan(rts) & all_neg.repeat_interleave(G)
    used = torch.where(admit, torch.sigmoid(credit_beta * (rts - credit_gamma)), rewards).view(-1, G)
    mean, std = used.mean(1, keepdim=True), used.std(1, keepdim=True)
    return ((used - mean) / (std + eps)).view(-1)


def bench_group_advantages(args, device):
    N, G = args.rewards, 8
    g = torch.Generator().manual_seed(1)
    correct = (torch.rand(N, generator=g) < 0.2).to(device)
    rewards = correct.float()
    rts = torch.rand(N, generator=g).to(device)
    rts[correct] = float("nan")
    cases = {
        "eager": lambda: eager_group_advantages(rewards, correct, rts, G),
        "sgpo": lambda: se.group_advantages(rewards, group_size=G, correct=correct, rts=rts),
    }
    torch.testing.assert_close(cases["sgpo"]().advantages, cases["eager"](), rtol=1e-4, atol=1e-4)
    rows = {}
    for name, fn in cases.items():
        t = timed(fn, device, args.repeat * 5)
        rows[name] = {"seconds": t}
        print(f"  group_advantages  {name:6s} {t * 1e3:9.3f} ms")
    return {"shape": {"N": N, "group_size": G}, "results": rows}


def eager_sample(logits, temperature, top_p):
    """softmax + sort + top-p + multinomial: the usual eager sampler."""
    probs = torch.softmax(logits / temperature, -1)
    sorted_p, idx = torch.sort(probs, descending=True)
    cum = torch.cumsum(sorted_p, -1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p >= top_p, 0.0)
    tok = idx.gather(-1, torch.multinomial(sorted_p, 1)).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, -1).gather(-1, tok[:, None]).squeeze(-1)
    return tok, logp


def bench_sample(args, device):
    B, V = args.sample_batch, args.vocab
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(B, V, generator=g) * 3).to(device)
    cases = {
        "eager": lambda: eager_sample(logits, 0.8, 0.95),
        "sgpo": lambda: se.sample(logits, temperature=0.8, top_p=0.95),
        "sgpo_topk50": lambda: se.sample(logits, temperature=0.8, top_k=50, top_p=0.95),
        "sgpo_plain": lambda: se.sample(logits, temperature=0.8),
    }
    rows = {}
    for name, fn in cases.items():
        t = timed(fn, device, args.repeat * 3)
        rows[name] = {"seconds": t}
        print(f"  sample            {name:11s} {t * 1e3:9.2f} ms")
    return {"shape": {"B": B, "V": V, "temperature": 0.8, "top_p": 0.95}, "results": rows}


# ---------------------------------------------------------------- main
def ratio(rows, base, ours, key="seconds"):
    return rows[base][key] / rows[ours][key]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ops_<device>.json)")
    args = ap.parse_args(argv)
    args.loss_tokens, args.loss_seq, args.hidden, args.vocab = 4096, 512, 1024, 32768
    args.rewards, args.sample_batch = 1 << 20, 256
    if args.quick:
        args.loss_tokens, args.loss_seq, args.hidden, args.vocab = 256, 64, 128, 4096
        args.rewards, args.sample_batch, args.repeat = 1 << 14, 32, 1
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"extension {'yes' if se.ops.HAS_EXTENSION else 'NO (reference fallback)'}")
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "fused_policy_loss": bench_policy_loss(args, device),
        "group_advantages": bench_group_advantages(args, device),
        "sample": bench_sample(args, device),
    }
    L = report["fused_policy_loss"]["results"]
    summary = {
        "policy_loss_time_vs_eager": L["eager"]["seconds"] / L["sgpo"]["seconds"],
        "policy_loss_mem_vs_eager": L["sgpo"]["peak_extra_bytes"] / L["eager"]["peak_extra_bytes"],
        "group_advantages_speedup": ratio(report["group_advantages"]["results"], "eager", "sgpo"),
        "sample_speedup": ratio(report["sample"]["results"], "eager", "sgpo"),
    }
    if "liger" in L:
        summary["policy_loss_time_vs_liger"] = L["liger"]["seconds"] / L["sgpo"]["seconds"]
        summary["policy_loss_mem_vs_liger"] = L["sgpo"]["peak_extra_bytes"] / L["liger"]["peak_extra_bytes"]
    report["summary"] = summary
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"ops_{device.type}{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    print("\nsummary (time: baseline / ours, > 1 is faster; memory: ours / baseline)")
    for k, v in summary.items():
        print(f"  {k:28s} {v:8.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
