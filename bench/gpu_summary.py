"""The last table of bench/gpu_check.sh: the card, each step's outcome, a
pass / fail per kernel (from the JUnit XML of tests/test_cuda.py), and the
benchmark ratios (from the JSON files). Printed and written to OUT/summary.txt.

    python bench/gpu_summary.py OUT "build=0:95" "tests=1:61" "memcheck=skip:no GPU" ...
"""
from __future__ import annotations

import json
import os
import platform
import sys
import xml.etree.ElementTree as ET

import torch

# Which tests of tests/test_cuda.py prove which kernel (a test name contains the key).
KERNELS = {
    "group_advantages": ("group_advantages",),
    "fused_policy_loss": ("policy_loss",),
    "fused_logprobs": ("logprobs",),
    "sample": ("sample",),
    "decode_attention": ("decode_attention",),
    "generate (engine)": ("generate_greedy",),
    "5 train steps (engine)": ("training_steps",),
    "packed update layout": ("packed_layout",),
}
BENCHES = ("ops", "generate", "generate_large", "train")


def card() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"no GPU: CPU rehearsal on {platform.processor() or platform.machine()} (torch {torch.__version__})"


def kernel_results(xml_path: str) -> dict[str, str]:
    if not os.path.exists(xml_path):
        return {k: "not run" for k in KERNELS}
    counts = {k: [0, 0, 0] for k in KERNELS}  # passed, failed, skipped
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome = 1 if case.find("failure") is not None or case.find("error") is not None else \
            2 if case.find("skipped") is not None else 0
        for kernel, keys in KERNELS.items():
            if any(k in name for k in keys):
                counts[kernel][outcome] += 1
    out = {}
    for kernel, (ok, bad, skipped) in counts.items():
        if bad:
            out[kernel] = f"FAIL ({bad} of {ok + bad} tests)"
        elif ok:
            out[kernel] = f"pass ({ok} tests)"
        else:
            out[kernel] = f"not run ({skipped} skipped)"
    return out


def bench_ratios(out_dir: str, device: str) -> list[str]:
    lines = []
    for name in BENCHES:
        path = os.path.join(out_dir, f"{name}_{device}.json")
        if not os.path.exists(path):
            lines.append(f"  {name:15s} (no result)")
            continue
        with open(path) as f:
            report = json.load(f)
        summary = report.get("summary", {})
        ratios = "  ".join(f"{k}={v:.3g}" for k, v in summary.items() if isinstance(v, (int, float)))
        errors = report.get("errors") or {}
        lines.append(f"  {name:15s} {ratios or '(no ratios)'}" + "".join(f"\n  {'':15s} {k}: {v}"
                                                                         for k, v in errors.items()))
    return lines


def main() -> None:
    out_dir, steps = sys.argv[1], sys.argv[2:]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lines = [f"== gpu_check summary: {card()}", "steps (outcome: seconds or reason):"]
    for s in steps:
        name, _, rest = s.partition("=")
        code, _, info = rest.partition(":")
        verdict = {"0": "ok", "skip": "skipped", "124": "TIMED OUT"}.get(code, f"FAILED (exit {code})")
        lines.append(f"  {name:15s} {verdict:18s} {info}")
    lines.append("kernels (tests/test_cuda.py):")
    lines += [f"  {k:24s} {v}" for k, v in kernel_results(os.path.join(out_dir, "tests.xml")).items()]
    lines.append("benchmarks (ratios: > 1 is faster than the baseline; mem: ours / baseline):")
    lines += bench_ratios(out_dir, device)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
