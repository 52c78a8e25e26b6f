"""One small call of every kernel, each of its launch paths once: the program
bench/gpu_check.sh runs under compute-sanitizer (memcheck), where every
launch is slow, so the shapes are tiny but awkward (sizes off every tile).

    python bench/gpu_smoke.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sgpo_engine import ops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    dev = ap.parse_args().device
    g = torch.Generator().manual_seed(0)
    rand = lambda *s, dtype=torch.float32: torch.randn(*s, generator=g).to(dev, dtype)

    # group_advantages: fixed groups, ragged offsets, batch scale
    r = (torch.rand(37, generator=g) < 0.3).float().to(dev)
    rts = torch.rand(37, generator=g).to(dev)
    ops.group_advantages(r[:36], group_size=4, correct=r[:36] > 0, rts=rts[:36])
    ops.group_advantages(r, group_offsets=torch.tensor([0, 1, 9, 37]), correct=r > 0, rts=rts, scale="batch")

    # fused_policy_loss (token and sequence level, each surrogate, bf16) and fused_logprobs with its backward
    B, T, H, V = 3, 5, 24, 1001
    for dtype, level, loss_type in ((torch.float32, "token", "dapo"), (torch.bfloat16, "sequence", "sapo"),
                                    (torch.float32, "sequence", "cispo")):
        h = rand(B, T, H, dtype=dtype).requires_grad_()
        w = (rand(V, H, dtype=dtype) * 0.1).requires_grad_()
        t = torch.randint(0, V, (B, T), generator=g).to(dev)
        mask = torch.ones(B, T, device=dev)
        mask[1, 3:] = 0
        old = -torch.rand(B, T, generator=g).to(dev) - 6.0
        loss, _ = ops.fused_policy_loss(h, w, t, mask, rand(B), old_logp=old, ref_logp=old, beta=0.04,
                                        importance_sampling_level=level, loss_type=loss_type, chunk_size=4)
        loss.backward()
        logp = ops.fused_logprobs(h, w, t, chunk_size=7)
        logp.sum().backward()

    # sample: the small-block and the large-block kernels, with every filter
    for vocab in (50, 9001):
        logits = rand(4, vocab)
        ops.sample(logits, temperature=torch.tensor([0.0, 0.7, 1.0, 1.3], dtype=torch.float64, device=dev),
                   top_k=torch.tensor([0, 5, 0, 40], device=dev), top_p=0.9, min_p=0.02, generator=None)

    # decode_attention: GQA, a sliding window, a head dim off the warp width
    S, Hq, Hkv, D, P, Lp, C, Ls = 5, 6, 2, 40, 2, 7, 6, 9
    q = rand(S, Hq, D)
    pk, pv, sk, sv = rand(P, Hkv, Lp, D), rand(P, Hkv, Lp, D), rand(C, Hkv, Ls, D), rand(C, Hkv, Ls, D)
    plen = torch.tensor([0, 7], device=dev)
    pof = torch.tensor([0, 1, 1, 0, 1], device=dev)
    slen = torch.tensor([1, 3, 9, 0, 5], device=dev)
    slot = torch.tensor([5, 0, 2, 3, 1], device=dev)
    for window in (0, 3):
        ops.decode_attention(q, pk, pv, plen, pof, sk, sv, slen, slot, window=window)

    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    print(f"gpu_smoke: every kernel ran once on {dev}")


if __name__ == "__main__":
    main()
