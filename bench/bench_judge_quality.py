"""How well each step judge finds the first wrong step, measured here.

    python bench/bench_judge_quality.py                  # calc, and SmolLM2 as a local judge on 100 items
    python bench/bench_judge_quality.py --local-items 0  # calc only (seconds)
    python bench/bench_judge_quality.py --serve          # also SmolLM2 behind `sgpo serve` as an HTTP judge

1. The shipped labelled set (examples/data/judge_gsm8k.jsonl, 400 items:
   correct solutions, arithmetic slips, wrong copied numbers, wrong
   operations): `sgpo judge-eval`'s scores for calc on all of it, and for
   SmolLM2-135M-Instruct as a local judge (and, with --serve, behind
   `sgpo serve` as an HTTP judge) on the first --local-items items.
2. calc on the GSM8K model solutions (../shared/data/gsm8k/
   example_model_solutions.jsonl when present: 4 GPT-3 solutions of each of
   1319 problems, labelled right or wrong as a whole): how often calc names a
   step in a wrong solution, and how often it fires on a right one (each such
   step is listed in the JSON, to read whether the arithmetic really is wrong).

Writes bench/results/judge_quality.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from sgpo_engine.evaluation.judge_eval import run_judge_eval  # noqa: E402
from sgpo_engine.judge.calc import CalcJudge  # noqa: E402
from sgpo_engine.train import TrainConfig  # noqa: E402

SHIPPED = os.path.join(ROOT, "examples", "data", "judge_gsm8k.jsonl")
MODEL_SOLUTIONS = os.path.join(ROOT, "..", "shared", "data", "gsm8k", "example_model_solutions.jsonl")
DEFAULT_MODEL = os.path.join(os.path.expanduser("~"), ".cache", "sgpo-engine", "smollm2-135m-instruct")
KEYS = ("accuracy_erroneous", "accuracy_correct", "f1", "within_one_step", "rts_mae", "too_early", "too_late",
        "verdicts_per_s", "outcomes", "by_kind")


def judge_eval(cfg: TrainConfig, data: str, tmp: str, name: str) -> dict:
    report = run_judge_eval(data, cfg.validate(), os.path.join(tmp, name))
    return {k: report[k] for k in KEYS} | {"items": report["items"], "judge": report["judge"]}


def first_lines(path: str, n: int, tmp: str) -> str:
    out = os.path.join(tmp, f"first{n}.jsonl")
    with open(path) as f, open(out, "w") as g:
        for _, line in zip(range(n), f):
            g.write(line)
    return out


def calc_on_model_solutions(path: str) -> dict:
    """How often calc names a step in wrong / right GPT-3 solutions."""
    judge = CalcJudge()
    fired = {True: 0, False: 0}
    total = {True: 0, False: 0}
    on_right = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                sol = row[key]
                v = judge.judge([row["question"]], [sol["solution"]])[0]
                total[sol["is_correct"]] += 1
                if not v.failed:
                    fired[sol["is_correct"]] += 1
                    if sol["is_correct"]:
                        on_right.append(sol["solution"].split("\n")[v.first_error])
    return {"wrong_solutions": total[False], "named_a_step_in_wrong": fired[False] / total[False],
            "right_solutions": total[True], "fired_on_right": fired[True] / total[True],
            "steps_named_in_right_solutions": on_right}


def serve(model: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sgpo_engine.cli", "serve", "--model", model, "--port", str(port),
                             "--served-model-name", "judge"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("sgpo serve did not start")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="the LLM judge's HF folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--local-items", type=int, default=100, help="items for the LLM judges (0: calc only)")
    ap.add_argument("--serve", action="store_true", help="also the model behind sgpo serve (HTTP judge)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "judge_quality.json"))
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    report = {"device": platform.processor() or platform.machine(), "data": os.path.relpath(SHIPPED, ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        report["calc"] = judge_eval(TrainConfig(judge="calc"), SHIPPED, tmp, "calc")
        if os.path.isfile(MODEL_SOLUTIONS):
            report["calc_on_model_solutions"] = calc_on_model_solutions(MODEL_SOLUTIONS)
        if args.local_items:
            if args.model is None:
                from get_smollm2 import get_smollm2
                args.model = get_smollm2(os.environ.get("SGPO_SMOLLM2_DIR", DEFAULT_MODEL))
            subset = first_lines(SHIPPED, args.local_items, tmp)
            report["local"] = judge_eval(TrainConfig(judge="local", model=args.model, judge_max_tokens=24), subset,
                                         tmp, "local")
            report["calc_on_the_same_items"] = judge_eval(TrainConfig(judge="calc"), subset, tmp, "calc_subset")
            if args.serve:
                proc = serve(args.model, 8931)
                try:
                    cfg = TrainConfig(judge="http", judge_url="http://127.0.0.1:8931/v1", judge_model="judge",
                                      judge_max_tokens=24)
                    report["http_sgpo_serve"] = judge_eval(cfg, subset, tmp, "http")
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"{'judge':16s} {'items':>5s} {'acc err':>8s} {'acc ok':>7s} {'F1':>6s} {'verdicts/s':>10s}  no verdict")
    for name in ("calc", "calc_on_the_same_items", "local", "http_sgpo_serve"):
        r = report.get(name)
        if r:
            print(f"{name:16s} {r['items']:5d} {r['accuracy_erroneous']:8.3f} {r['accuracy_correct']:7.3f} "
                  f"{r['f1']:6.3f} {r['verdicts_per_s']:10.1f}  {r['outcomes']}")
    m = report.get("calc_on_model_solutions")
    if m:
        print(f"calc on GPT-3 solutions: names a step in {m['named_a_step_in_wrong']:.3f} of "
              f"{m['wrong_solutions']} wrong ones, fires on {m['fired_on_right']:.3f} of {m['right_solutions']} right ones")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
