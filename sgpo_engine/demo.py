"""`sgpo demo`: GRPO vs SGPO vs SGPO with step-level credit, from one warm start.

Three arms train with identical settings except what defines them (`ARMS`)
and their learning rate, each its own best from `sgpo demo --full --sweep`
(ARM_LRS; `--lr X` puts every arm at X): plain GRPO (scope "off"), SGPO as
published (sequence-level credit) and SGPO with prefix credit
(`credit_assignment = "prefix"`: in credited groups the advantage reaches only
the judged steps, see train/credit.py). The task is the hardest chains the
warm start has seen (10-12 operations), where most groups start all-negative.
Runs go in parallel, one process and one torch thread each (tiny models do not
scale across threads). Writes

    OUTPUT/results.json   per arm and seed: per-step training curves, the
                          held-out greedy accuracy every eval_every steps,
                          steps to reach GRPO's final held-out accuracy
    OUTPUT/demo.png       held-out and rollout accuracy, all-negative fraction,
                          and the anti-gaming view: correct prefix, premature
                          answers, response length
    OUTPUT/<arm>-seed<s>/metrics.jsonl   the raw training metrics

and prints a short table. The numbers are what they are: if an arm does not
beat GRPO in a setting, the table says so.

`sgpo demo --sweep` trains each arm (default: the three above) at each of
SWEEP_LRS (one seed) and ranks every arm's learning rates by rollout accuracy
over the last steps (not by the held-out set the comparison reports); GRPO_LR
below is GRPO's pick. `--lrs` narrows the grid. A sweep reuses the runs of an
earlier sweep.json in the same folder with the same settings, so widening the
grid or adding an arm only trains what is new.

`--regime hard` trains on longer chains (13-16 operations) than the warm start
has seen, where about 90% of the groups start all-negative and GRPO mostly
starves. The `-guard` arms add the phantom-gradient guard (credited_std_floor,
docs/design.md section 1.5) to an SGPO arm.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from .train import SGPOTrainer, TrainConfig
from .train.config import apply_overrides, parse_overrides

# GRPO's learning rate: its best of SWEEP_LRS in `sgpo demo --full --sweep`
# (docs/demo/sweep.json), so SGPO is compared with a tuned GRPO. It is the
# base every arm starts from; ARM_LRS below sets each arm's own.
GRPO_LR = 3e-5
SWEEP_LRS = (1e-5, 3e-5, 1e-4, 3e-4)
# The guard's floor on a credited group's std. With beta 5, one step more of
# correct prefix in a 12-step chain raises the credit by about 0.1 near the
# middle: credits closer than one step's worth are not blown up to the unit
# scale of a right-vs-wrong group (whose std is at least 0.35 with 8 samples).
GUARD_FLOOR = 0.1
ARMS = {
    "grpo": dict(scope="off"),
    "sgpo": dict(scope="all_negative"),
    "sgpo-prefix": dict(scope="all_negative", credit_assignment="prefix"),
    "sgpo-guard": dict(scope="all_negative", credited_std_floor=GUARD_FLOOR),
    "sgpo-prefix-guard": dict(scope="all_negative", credit_assignment="prefix", credited_std_floor=GUARD_FLOOR),
}
DEMO_ARMS = ("grpo", "sgpo", "sgpo-prefix")  # what `sgpo demo` runs without --arms
# Each arm's learning rate: its best of SWEEP_LRS in `sgpo demo --full --sweep`
# (docs/demo/sweep.json). `--lr X` trains every arm at X instead.
ARM_LRS = {"grpo": GRPO_LR, "sgpo": 1e-4, "sgpo-prefix": 1e-4, "sgpo-guard": 1e-4, "sgpo-prefix-guard": 1e-4}

ARM_COLORS = {"grpo": "tab:gray", "sgpo": "tab:blue", "sgpo-prefix": "tab:orange", "sgpo-guard": "tab:cyan",
              "sgpo-prefix-guard": "tab:red"}

# The task: the demo's chains (the warm start's hardest), or longer ones it has
# never seen (max_new_tokens: 9 per operation + 8, tasks/warmup.py).
REGIMES = {
    "default": {},
    "hard": dict(task_min_ops=13, task_max_ops=16, max_new_tokens=152),
}

# The shared training settings of every arm (docs/design.md section 6.8).
BASE = dict(task_min_ops=10, task_max_ops=12, prompts_per_step=16, num_samples=8, max_new_tokens=112,
            temperature=1.0, lr=GRPO_LR, lr_schedule="constant", max_grad_norm=1.0, loss_type="dapo",
            micro_batch_size=64, tensorboard=False, keep_checkpoints=1)
PROFILES = {
    "quick": dict(steps=4, seeds=1, eval_n=10, eval_every=2, base=dict(prompts_per_step=4, num_samples=4)),
    "default": dict(steps=24, seeds=3, eval_n=100, eval_every=8, base={}),
    "full": dict(steps=100, seeds=3, eval_n=300, eval_every=10, base={}),
}
SWEEP_EVAL_EVERY = {"full": 20}  # the sweep ranks by rollout accuracy: a coarser held-out view will do
CURVES = ("accuracy", "all_negative_frac", "credited_frac", "reward_mean", "sgpo_reward_mean",
          "correct_prefix_frac", "premature_answer_frac", "response_len_mean", "rts_mean",
          "adv_abs_credited", "adv_abs_mixed")
SWEEP_TAIL = 20  # steps of rollout accuracy the sweep ranks by


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _run_arm(arm: str, settings: dict, seed: int, base: dict, overrides: list, output: str, ks: list,
             eval_n: int, eval_every: int) -> dict:
    """One training run from the warm start (a worker process)."""
    from .tasks import evaluate
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**base, "save_every": base["max_steps"], "seed": seed, "eval_every": eval_every,
                         "eval_problems": eval_n, "output": os.path.join(output, f"{arm}-seed{seed}"),
                         "progress": False})
    cfg = apply_overrides(cfg, overrides)
    for k, v in {**settings, "seed": seed}.items():  # the arms differ in their settings only
        setattr(cfg, k, v)
    _log(f"[{arm} seed {seed}] {cfg.max_steps} steps of {cfg.prompts_per_step} prompts x "
         f"{cfg.num_samples} samples, k {cfg.task_min_ops}-{cfg.task_max_ops}, lr {cfg.lr:g}")
    t = time.perf_counter()
    trainer = SGPOTrainer(cfg)  # loads cfg.model: the shipped warm start unless overridden
    history = trainer.train()
    evals = [(h["step"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
    last = history[-1] if history else {}
    if "eval_accuracy" in last:  # the trainer evaluated at the last step: per k, as evaluate() gives it
        end_eval = {f"k{k}": {n: last[f"eval_k{k}_{n}"] for n in ("accuracy", "correct_prefix", "premature_answer")}
                    for k in ks}
    else:
        end_eval = evaluate(trainer.policy, ks=ks, n=eval_n)
        evals.append((trainer.step, _mean_acc(end_eval)))
    _log(f"[{arm} seed {seed}] held-out accuracy {evals[-1][1]:.3f} ({time.perf_counter() - t:.0f} s)")
    return {"steps": {c: [h.get(c) for h in history] for c in CURVES}, "heldout": evals,
            "heldout_end": end_eval, "heldout_end_accuracy": evals[-1][1], "lr": cfg.lr,
            "train_seconds": time.perf_counter() - t}


def run_demo(output: str = "runs/demo", quick: bool = False, full: bool = False, seeds: Optional[int] = None,
             overrides: Sequence[str] = (), jobs: Optional[int] = None, sweep: bool = False,
             arms: Optional[Sequence[str]] = None, regime: str = "default",
             lrs: Optional[Sequence[float]] = None) -> dict:
    from .tasks import evaluate, load_policy
    name = "quick" if quick else "full" if full else "default"
    prof = PROFILES[name]
    unknown = sorted(set(arms or ()) - set(ARMS))
    if unknown:
        raise ValueError(f"arms: unknown {', '.join(unknown)} (expected some of {', '.join(ARMS)})")
    if regime not in REGIMES:
        raise ValueError(f"regime: unknown {regime!r} (expected one of {', '.join(REGIMES)})")
    if sweep:
        arms = _sweep_arms(arms or DEMO_ARMS, lrs or SWEEP_LRS)
    else:  # each arm at its own best rate, or every arm at the one `--lr` names
        common = "lr" in parse_overrides(list(overrides))
        arms = {a: ARMS[a] if common else {**ARMS[a], "lr": ARM_LRS[a]} for a in (arms or DEMO_ARMS)}
    n_seeds = seeds or (1 if sweep else prof["seeds"])
    eval_every = SWEEP_EVAL_EVERY.get(name, prof["eval_every"]) if sweep else prof["eval_every"]
    base = {**BASE, **REGIMES[regime], **prof["base"], "max_steps": prof["steps"]}
    shared = apply_overrides(TrainConfig(**base), list(overrides))  # what every arm trains on
    ks = list(range(shared.task_min_ops, shared.task_max_ops + 1))
    os.makedirs(output, exist_ok=True)
    t0 = time.perf_counter()
    start_eval = evaluate(load_policy(shared.model), ks=ks, n=prof["eval_n"])
    _log("warm start held-out greedy accuracy: " +
         ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in start_eval.items()))
    start_acc = _mean_acc(start_eval)
    settings = {**base, "task_min_ops": shared.task_min_ops, "task_max_ops": shared.task_max_ops,
                "model": shared.model, "steps": prof["steps"], "seeds": n_seeds, "eval_problems_per_k": prof["eval_n"],
                "eval_every": eval_every, "ks": ks, "arms": arms, "overrides": list(overrides), "regime": regime}
    runs: dict = {a: {} for a in arms}
    if sweep:
        runs = _earlier_sweep_runs(os.path.join(output, "sweep.json"), settings, runs)
        settings["arms"] = {**{a: {**ARMS[_arm_of(a)], "lr": _lr_of(r)} for a, r in runs.items() if r}, **arms}
    todo = [(a, s) for s in range(n_seeds) for a in arms if str(s) not in runs[a]]
    jobs = jobs or max(1, min(len(todo), os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_arm, a, arms[a], s, base, list(overrides), output, ks, prof["eval_n"],
                               eval_every): (a, s) for a, s in todo}
        for fut in concurrent.futures.as_completed(futures):
            a, s = futures[fut]
            run = fut.result()
            run["heldout"] = [(0, start_acc)] + [tuple(p) for p in run["heldout"]]  # curves start at the warm start
            runs[a][str(s)] = run
    runs = {a: dict(sorted(r.items())) for a, r in sorted(runs.items(), key=_arm_order)}
    results = {"settings": settings, "heldout_start": start_eval, "heldout_start_accuracy": start_acc,
               "runs": runs, "summary": _summary(runs, baseline="grpo" if "grpo" in runs else None),
               "seconds": time.perf_counter() - t0}
    if sweep:
        results["sweep"] = _rank_sweep(runs)
    name = "sweep" if sweep else "results"
    _write_json(os.path.join(output, f"{name}.json"), results)
    plot = _plot_sweep(results, os.path.join(output, "sweep.png")) if sweep else \
        _plot(results, os.path.join(output, "demo.png"))
    print(_sweep_table(results) if sweep else _table(results))
    print(f"results: {os.path.join(output, name + '.json')}" + (f", plot: {plot}" if plot else ""))
    return results


def _arm_of(run: str) -> str:
    """The arm a run name belongs to: "sgpo-prefix-lr3e-05" (a sweep's) -> "sgpo-prefix"."""
    return run.rsplit("-lr", 1)[0]


def _lr_of(by_seed: dict) -> float:
    """The learning rate of a run (every seed of a run trains at the same one)."""
    return next(iter(by_seed.values()))["lr"]


def _arm_order(item) -> tuple:
    """Arms in ARMS order, a sweep's learning rates rising within each arm."""
    run, by_seed = item
    return list(ARMS).index(_arm_of(run)), _lr_of(by_seed) if by_seed else 0


def _sweep_arms(arms: Sequence[str], lrs: Sequence[float]) -> dict:
    """Each arm at each learning rate: {"sgpo-lr3e-05": {..., "lr": 3e-05}, ...}."""
    return {f"{a}-lr{lr:g}": {**ARMS[a], "lr": lr} for a in arms for lr in lrs}


def _earlier_sweep_runs(path: str, settings: dict, runs: dict) -> dict:
    """The runs of an earlier sweep at `path` whose settings equal these (the
    learning rates aside), for the arms this sweep has; `runs` otherwise."""
    if not os.path.exists(path):
        return runs
    with open(path) as f:
        old = json.load(f)
    same = lambda st: {k: v for k, v in st.items() if k not in ("arms", "lr")}  # each arm sets its lr
    if same(old["settings"]) != same(json.loads(json.dumps(settings))):
        _log(f"{path}: another sweep's settings, not reused")
        return runs
    kept = {a: dict(old["runs"].get(a, {})) for a in runs}
    _log(f"{path}: reusing {sum(map(len, kept.values()))} run(s) of an earlier sweep")
    return {**old["runs"], **kept}  # the earlier sweep's other arms stay in the file (and the ranking)


def _mean_acc(ev: dict) -> float:
    return sum(v["accuracy"] for v in ev.values()) / len(ev)


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _curve_mean(by_seed: dict, curve: str) -> float:
    """Mean of a per-step curve over every step and seed that has a value (None, NaN: none)."""
    xs = [x for r in by_seed.values() for x in r["steps"].get(curve, []) if x is not None and x == x]
    return statistics.fmean(xs) if xs else float("nan")


def _steps_to_reach(curve: list, target: float) -> Optional[int]:
    """The first evaluated step whose held-out accuracy is >= target (None: never)."""
    return next((step for step, acc in curve if acc >= target - 1e-9), None)


def _summary(runs: dict, baseline: Optional[str]) -> dict:
    """Per arm: held-out accuracy at the end (mean, std over seeds), the
    training curves' last 10 steps, and the steps each seed took to reach the
    baseline's final held-out accuracy (its mean over seeds)."""
    target = None
    if baseline in runs:
        target = statistics.fmean(r["heldout_end_accuracy"] for r in runs[baseline].values())
    out = {}
    for arm, by_seed in runs.items():
        tail = lambda c: [statistics.fmean([x for x in r["steps"][c][-10:] if x is not None] or [float("nan")])
                          for r in by_seed.values()]
        acc, acc_sd = _mean_std([r["heldout_end_accuracy"] for r in by_seed.values()])
        out[arm] = {"heldout_accuracy_mean": acc, "heldout_accuracy_std": acc_sd,
                    "train_accuracy_last10": _mean_std(tail("accuracy"))[0],
                    "all_negative_frac_last10": _mean_std(tail("all_negative_frac"))[0],
                    "credited_frac_last10": _mean_std(tail("credited_frac"))[0],
                    "correct_prefix_last10": _mean_std(tail("correct_prefix_frac"))[0],
                    "premature_answer_last10": _mean_std(tail("premature_answer_frac"))[0],
                    "response_len_last10": _mean_std(tail("response_len_mean"))[0],
                    # the phantom-gradient gauge: mean |advantage| in credited vs mixed groups, all steps
                    "adv_abs_credited_mean": _curve_mean(by_seed, "adv_abs_credited"),
                    "adv_abs_mixed_mean": _curve_mean(by_seed, "adv_abs_mixed")}
        if target is not None:
            reach = [_steps_to_reach(r["heldout"], target) for r in by_seed.values()]
            got = [x for x in reach if x is not None]
            # against the baseline's whole run (its final accuracy is the target); a seed that never
            # reached it leaves the ratio undefined rather than flattering
            steps = len(next(iter(runs[baseline].values()))["steps"]["accuracy"])
            out[arm].update(target_accuracy=target, steps_to_reach=reach,
                            steps_to_reach_mean=statistics.fmean(got) if got else None,
                            steps_to_reach_ratio=statistics.fmean(got) / steps if got and len(got) == len(reach)
                            else None)
    return out


def _rank_sweep(runs: dict) -> dict:
    """Each arm's learning rates ranked by mean rollout accuracy over the last
    SWEEP_TAIL steps (training prompts: the held-out set stays out of the
    choice). best: {arm: {"run": sweep arm, "lr": its learning rate}}."""
    score = {run: statistics.fmean(statistics.fmean(x for x in r["steps"]["accuracy"][-SWEEP_TAIL:] if x is not None)
                                   for r in by_seed.values()) for run, by_seed in runs.items()}
    best = {}
    for run in runs:
        arm = _arm_of(run)
        if arm not in best or score[run] > score[best[arm]["run"]]:
            best[arm] = {"run": run, "lr": _lr_of(runs[run])}
    for arm, b in best.items():
        _log(f"sweep: best {arm} learning rate {b['lr']:g} (rollout accuracy, last {SWEEP_TAIL} steps: "
             + ", ".join(f"{run} {v:.3f}" for run, v in score.items() if _arm_of(run) == arm) + ")")
    return {"criterion": f"rollout accuracy, mean of the last {SWEEP_TAIL} steps", "scores": score, "best": best}


def _table(results: dict) -> str:
    s = results["summary"]
    w = max(12, *(len(a) for a in s))
    has_reach = any("steps_to_reach" in v for v in s.values())
    rows = [f"{'arm':{w}s} {'lr':>6s} {'held-out acc':>15s} {'to reach':>9s} {'train acc':>9s} {'all-neg':>7s} "
            f"{'credited':>8s} {'prefix':>6s} {'premature':>9s} {'length':>6s}",
            f"{'warm start':{w}s} {'':6s} {results['heldout_start_accuracy']:15.3f}"]
    for arm, v in s.items():
        reach = "-"
        if has_reach:
            got = sum(x is not None for x in v["steps_to_reach"])
            mean = f"{v['steps_to_reach_mean']:.0f}" if got else "-"
            reach = f"{mean} ({got}/{len(v['steps_to_reach'])})"
        lr = _lr_of(results["runs"][arm])
        rows.append(f"{arm:{w}s} {lr:6.0e} {v['heldout_accuracy_mean']:7.3f} ± {v['heldout_accuracy_std']:.3f} {reach:>9s} "
                    f"{v['train_accuracy_last10']:9.3f} {v['all_negative_frac_last10']:7.2f} "
                    f"{v['credited_frac_last10']:8.2f} {v['correct_prefix_last10']:6.2f} "
                    f"{v['premature_answer_last10']:9.2f} {v['response_len_last10']:6.1f}")
    rows.append("mean |advantage|, credited groups / mixed groups: " + ", ".join(
        f"{arm} {v.get('adv_abs_credited_mean', float('nan')):.2f} / {v.get('adv_abs_mixed_mean', float('nan')):.2f}"
        for arm, v in s.items()))
    if has_reach:
        rows.append("steps to reach GRPO's final accuracy / GRPO's steps: " + ", ".join(
            f"{arm} {v['steps_to_reach_ratio']:.2f}x" if v.get("steps_to_reach_ratio") is not None else f"{arm} -"
            for arm, v in s.items()))
    st = results["settings"]
    rows.append(f"({st['seeds']} seed(s), {st['steps']} steps, k {st['ks'][0]}-{st['ks'][-1]}, held-out: "
                f"{st['eval_problems_per_k']} problems per k every {st['eval_every']} steps; 'to reach': mean "
                f"steps to GRPO's final held-out accuracy over the seeds that reached it; train columns: "
                f"mean of the last 10 steps)")
    return "\n".join(rows)


def _sweep_table(results: dict) -> str:
    """Per arm and learning rate: the ranking score, where the run ended and
    whether it broke (held-out accuracy below the warm start's)."""
    s, sw, start = results["summary"], results["sweep"], results["heldout_start_accuracy"]
    w = max(len(run) for run in s)
    rows = [f"{'run':{w}s} {'rollout acc':>11s} {'held-out':>8s} {'premature':>9s} {'length':>6s} "
            f"{'|adv| credited/mixed':>20s}"]
    for run, v in s.items():
        mark = "best" if sw["best"][_arm_of(run)]["run"] == run else "broke" if v["heldout_accuracy_mean"] < start else ""
        adv = " / ".join("-" if x != x else f"{x:.2f}" for x in (v["adv_abs_credited_mean"], v["adv_abs_mixed_mean"]))
        rows.append(f"{run:{w}s} {sw['scores'][run]:11.3f} {v['heldout_accuracy_mean']:8.3f} "
                    f"{v['premature_answer_last10']:9.2f} {v['response_len_last10']:6.1f} {adv:>20s}  {mark}")
    st = results["settings"]
    rows.append(f"(one seed, {st['steps']} steps, k {st['ks'][0]}-{st['ks'][-1]}; rollout acc: {sw['criterion']}, "
                f"what ranks; held-out: {st['eval_problems_per_k']} problems per k at the end, warm start "
                f"{start:.3f}; broke: ended below the warm start)")
    return "\n".join(rows)


PANELS = (("heldout", "held-out greedy accuracy"), ("accuracy", "rollout accuracy"),
          ("all_negative_frac", "all-negative group fraction"), ("correct_prefix_frac", "correct prefix (mean RTS)"),
          ("premature_answer_frac", "premature answers"), ("response_len_mean", "response length (tokens)"))


def _plot(results: dict, path: str) -> Optional[str]:
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    colors = dict(zip(results["runs"], ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red")))
    colors.update({a: c for a, c in ARM_COLORS.items() if a in results["runs"]})  # the same arm, the same color
    for ax, (curve, title) in zip(axes.flat, PANELS):
        for arm, by_seed in results["runs"].items():
            if curve == "heldout":  # evaluated every eval_every steps, the same steps for every seed
                steps = [p[0] for p in next(iter(by_seed.values()))["heldout"]]
                series = torch.tensor([[p[1] for p in r["heldout"]] for r in by_seed.values()], dtype=torch.float64)
                mean, lo, hi = series.mean(0).tolist(), series.min(0).values.tolist(), series.max(0).values.tolist()
            else:
                series = torch.tensor([[x if x is not None else float("nan") for x in r["steps"][curve]]
                                       for r in by_seed.values()], dtype=torch.float64)
                mean, lo, hi = _smooth(series.nanmean(0)), _smooth(series.min(0).values), _smooth(series.max(0).values)
                steps = list(range(1, len(mean) + 1))
            ax.plot(steps, mean, color=colors.get(arm), label=arm, marker="o" if curve == "heldout" else None,
                    markersize=3)
            if series.shape[0] > 1:
                ax.fill_between(steps, lo, hi, color=colors.get(arm), alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    st = results["settings"]
    fig.suptitle(f"{' vs '.join(results['runs'])} from one warm start, k {st['ks'][0]}-{st['ks'][-1]}, "
                 f"{st['seeds']} seed(s) (band: min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


SWEEP_PANELS = (("score", "rollout accuracy, last 20 steps (ranks)"), ("heldout_accuracy_mean", "held-out accuracy, end"),
                ("premature_answer_last10", "premature answers, last 10 steps"),
                ("response_len_last10", "response length, last 10 steps"))


def _plot_sweep(results: dict, path: str) -> Optional[str]:
    """One line per arm across the learning rates: what ranks, where it ends,
    and the gaming gauges."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    by_arm: dict = {}
    for run, v in results["summary"].items():
        by_arm.setdefault(_arm_of(run), []).append((_lr_of(results["runs"][run]),
                                                     {**v, "score": results["sweep"]["scores"][run]}))
    for ax, (key, title) in zip(axes, SWEEP_PANELS):
        for arm, points in by_arm.items():
            points.sort(key=lambda p: p[0])
            ax.plot([p[0] for p in points], [p[1][key] for p in points], marker="o", color=ARM_COLORS.get(arm),
                    ls="--" if arm.endswith("-guard") else "-", label=arm)
        if key == "heldout_accuracy_mean":
            ax.axhline(results["heldout_start_accuracy"], color="black", lw=0.8, ls=":", label="warm start")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    st = results["settings"]
    fig.suptitle(f"learning-rate sweep, k {st['ks'][0]}-{st['ks'][-1]}, {st['steps']} steps, one seed per rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        _log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None


def _smooth(x: torch.Tensor, w: int = 5) -> list:
    """Trailing moving average (the per-step rollout accuracy is noisy)."""
    out = []
    for i in range(len(x)):
        window = x[max(0, i - w + 1):i + 1]
        out.append(float(window[~torch.isnan(window)].mean()) if (~torch.isnan(window)).any() else float("nan"))
    return out


def _write_json(path: str, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: None)
    os.replace(tmp, path)
