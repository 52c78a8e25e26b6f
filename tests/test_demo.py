"""`sgpo demo --quick` end to end: the three arms (and the learning-rate
sweep) train from the shipped warm start and the outputs are well-formed."""
import json
import math
import os
import pathlib

from sgpo_engine import cli
from sgpo_engine.demo.arms import ARMS, DEMO_ARMS, GRPO_LR, SWEEP_LRS
from sgpo_engine.demo.runs import make_plan, read_runs, results_settings
from sgpo_engine.demo.stats import SWEEP_TAIL
from sgpo_engine.demo.sweep import SWEEP_EVAL_EVERY, earlier_runs

SHIPPED_SWEEP = pathlib.Path(__file__).resolve().parent.parent / "docs" / "demo" / "sweep.json"


def test_demo_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["runs"]) == {"grpo", "sgpo", "sgpo-prefix"}
    st = res["settings"]
    steps = st["steps"]
    for arm, by_seed in res["runs"].items():
        for run in by_seed.values():
            for curve in ("accuracy", "all_negative_frac", "credited_frac", "reward_mean", "correct_prefix_frac",
                          "premature_answer_frac"):
                assert len(run["steps"][curve]) == steps
                assert all(v is None or 0.0 <= v <= 1.0 for v in run["steps"][curve])
            assert all(v > 0 for v in run["steps"]["response_len_mean"])
            # held-out accuracy at the start, every eval_every steps and at the end
            assert [p[0] for p in run["heldout"]] == list(range(0, steps + 1, st["eval_every"]))
            assert run["heldout"][0][1] == res["heldout_start_accuracy"]
            assert run["heldout"][-1][1] == run["heldout_end_accuracy"]
            assert set(run["heldout_end"]) == {f"k{k}" for k in st["ks"]}
            assert run["lr"] == ARMS[arm].lr and st["lr"] == GRPO_LR
            assert run["arm"] == arm  # a record names its run's key, (arm, lr)
            if arm == "grpo":  # scope off: nothing is ever credited
                assert all(v == 0.0 for v in run["steps"]["credited_frac"])
            assert (out / f"{arm}-seed0" / "metrics.jsonl").exists()
    prefix_metrics = [json.loads(line) for line in (out / "sgpo-prefix-seed0" / "metrics.jsonl").open()]
    assert all(m["credit_fallbacks"] == 0 for m in prefix_metrics)  # every judged response mapped onto its tokens
    s = res["summary"]
    assert not math.isnan(s["sgpo"]["heldout_accuracy_mean"])
    target = s["grpo"]["target_accuracy"]
    assert target == s["grpo"]["heldout_accuracy_mean"]
    for arm, v in s.items():  # the first evaluated step at or above GRPO's final accuracy
        run = res["runs"][arm]["0"]
        want = next((step for step, acc in run["heldout"] if acc >= target - 1e-9), None)
        assert v["steps_to_reach"] == [want]
        assert v["steps_to_reach_ratio"] == (None if want is None else want / steps)
    assert s["grpo"]["steps_to_reach"][0] is not None  # GRPO reaches its own final accuracy
    assert os.path.getsize(out / "demo.png") > 1000
    table = capsys.readouterr().out
    assert all(a in table for a in ("grpo", "sgpo-prefix", "held-out", "to reach", "premature"))


def _sweep_scores(runs: dict) -> dict:
    tail = lambda acc: acc[-SWEEP_TAIL:]
    return {run: sum(tail(r["steps"]["accuracy"])) / len(tail(r["steps"]["accuracy"]))
            for run, by_seed in runs.items() for r in by_seed.values()}


def test_demo_sweep_ranks_each_arms_learning_rates(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep = ["demo", "--quick", "--sweep", "--output", str(out), "--max-steps", "2"]
    assert cli.main(sweep + ["--arms", "grpo,sgpo-guard", "--lrs", "1e-5,3e-4"]) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert set(res["runs"]) == {"grpo-lr1e-05", "grpo-lr0.0003", "sgpo-guard-lr1e-05", "sgpo-guard-lr0.0003"}
    assert res["settings"]["arms"]["sgpo-guard-lr0.0003"] == {**ARMS["sgpo-guard"].settings, "lr": 3e-4}
    sw = res["sweep"]
    scores = _sweep_scores(res["runs"])
    assert sw["scores"] == scores
    for arm in ("grpo", "sgpo-guard"):  # each arm's best rate among its own runs
        mine = {run: v for run, v in scores.items() if run.startswith(arm + "-lr")}
        assert sw["best"][arm]["run"] == max(mine, key=mine.get)
        assert sw["best"][arm]["lr"] == res["runs"][sw["best"][arm]["run"]]["0"]["lr"]
    assert all(r["steps"]["credited_frac"] == [0.0] * 2 for r in res["runs"]["grpo-lr1e-05"].values())
    assert "best grpo learning rate" in capsys.readouterr().err
    # another rate for one arm: the earlier runs are reused and every arm stays in the file
    assert cli.main(sweep + ["--arms", "grpo", "--lrs", "1e-5,1e-4"]) == 0
    assert "1 run(s) of these arms and rates there" in capsys.readouterr().err
    again = json.loads((out / "sweep.json").read_text())
    assert set(again["runs"]) == set(res["runs"]) | {"grpo-lr0.0001"}
    assert all(again["runs"][run] == res["runs"][run] for run in res["runs"])
    assert set(again["settings"]["arms"]) == set(again["runs"]) and set(again["sweep"]["best"]) == {"grpo", "sgpo-guard"}
    keys = list(read_runs(res["runs"]))
    assert set(keys) == {("grpo", 1e-5), ("grpo", 3e-4), ("sgpo-guard", 1e-5), ("sgpo-guard", 3e-4)}
    path = str(out / "sweep.json")
    assert earlier_runs(path, {**again["settings"], "lr": 1.0}, keys) == read_runs(again["runs"])  # arms set the lr
    assert earlier_runs(path, {**again["settings"], "steps": 3}, keys) == {}
    assert "other settings" in capsys.readouterr().err


def test_shipped_sweep_is_reused_by_a_full_sweep(capsys):
    """docs/demo/sweep.json holds every swept arm at every rate of `sgpo demo --full --sweep`
    (grpo-ds at three of them): run again in that folder, the sweep would train nothing of it.
    The arms it lacks are not swept (sgpo-prefix-ds, sgpo-prefix-cosine: the rate of the arm
    they extend, arms.py)."""
    plan = make_plan("unused", "full", "default", [], SWEEP_EVAL_EVERY["full"])
    keys = [(arm, lr) for arm in DEMO_ARMS + ("sgpo-guard", "sgpo-prefix-guard") for lr in SWEEP_LRS]
    keys += [("grpo-ds", lr) for lr in SWEEP_LRS[1:]]
    got = earlier_runs(str(SHIPPED_SWEEP), results_settings(plan, {}, seeds=1), keys)
    assert sorted(got) == sorted(keys) and all(set(by_seed) == {"0"} for by_seed in got.values())
    assert "23 run(s) of these arms and rates there" in capsys.readouterr().err
    assert {arm for arm, _ in got} | {"sgpo-prefix-ds", "sgpo-prefix-cosine"} == set(ARMS)


def test_sweep_without_arms_in_its_records_is_not_reused(tmp_path, capsys):
    plan = make_plan(str(tmp_path), "quick", "default", [], 2)
    settings = results_settings(plan, {}, seeds=1)
    old = {"settings": settings, "runs": {"grpo-lr1e-05": {"0": {"lr": 1e-5}}}}  # written before records named it
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    assert earlier_runs(str(tmp_path / "sweep.json"), settings, [("grpo", 1e-5)]) == {}
    assert "do not name their arm" in capsys.readouterr().err


def test_demo_hard_regime_trains_on_longer_chains(tmp_path):
    out = tmp_path / "hard"
    assert cli.main(["demo", "--quick", "--regime", "hard", "--arms", "sgpo-prefix-guard", "--output", str(out),
                     "--max-steps", "1", "--lr=1e-4"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["runs"]["sgpo-prefix-guard"]["0"]["lr"] == 1e-4  # --lr: every arm at that rate, not its own best
    st = res["settings"]
    assert st["regime"] == "hard" and st["ks"] == [13, 14, 15, 16] and st["max_new_tokens"] == 152
    assert set(res["heldout_start"]) == {"k13", "k14", "k15", "k16"}
    metrics = [json.loads(line) for line in (out / "sgpo-prefix-guard-seed0" / "metrics.jsonl").open()]
    assert metrics[0]["all_negative_frac"] >= 0.5  # the warm start mostly fails chains this long


def test_demo_unknown_arm_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--arms", "sgpo,ppo", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "arms: unknown ppo" in err and "sgpo-prefix" in err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_demo_dynamic_sampling_arm_at_equal_compute(tmp_path, capfd):
    """GRPO + dynamic sampling draws more rollouts a step; the equal-compute block compares the
    arms on rollout tokens, with the target rule written down."""
    first = tmp_path / "grpo"
    assert cli.main(["demo", "--quick", "--arms", "grpo", "--output", str(first)]) == 0
    # beside the earlier run: only the new arm trains (--reuse), the rollout-token curve of the
    # earlier record is made from its response lengths
    old = json.loads((first / "results.json").read_text())["runs"]["grpo"]["0"]
    measured = old["steps"].pop("rollout_tokens_total")
    assert set(old["steps"].pop("judge_read_tokens_total")) == {0}  # GRPO never asks the judge
    path = first / "results.json"
    earlier = json.loads(path.read_text())
    earlier["runs"]["grpo"]["0"] = old
    path.write_text(json.dumps(earlier))
    out = tmp_path / "ds"
    assert cli.main(["demo", "--quick", "--seeds", "2", "--arms", "grpo,grpo-ds", "--reuse", str(path),
                     "--output", str(out)]) == 0
    # the earlier file's seed is kept and only the seed it lacks trains
    assert not (out / "grpo-seed0").exists() and (out / "grpo-seed1").exists() and (out / "grpo-ds-seed1").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["runs"]["grpo"]["0"]["heldout"] == old["heldout"]
    assert res["runs"]["grpo"]["0"]["steps"]["rollout_tokens_total"] == measured  # made again, exactly
    assert set(res["runs"]["grpo"]["0"]["steps"]["judge_read_tokens_total"]) == {0}
    assert sorted(res["runs"]["grpo"]) == ["0", "1"]
    runs = {arm: by_seed["0"] for arm, by_seed in res["runs"].items()}
    tokens = {arm: r["steps"]["rollout_tokens_total"] for arm, r in runs.items()}
    assert all(t == sorted(t) and t[0] > 0 for t in tokens.values())  # cumulative
    assert max(runs["grpo-ds"]["steps"]["sample_batches"]) > 1 and set(runs["grpo"]["steps"]["sample_batches"]) == {1}
    assert tokens["grpo-ds"][-1] > tokens["grpo"][-1]
    c = res["equal_compute"]
    assert c["rule"].startswith("the target is") and c["baseline"] in ("grpo", "grpo-ds")
    every_run = [r for by_seed in res["runs"].values() for r in by_seed.values()]
    assert c["equal_budget_rollout_tokens"] == min(r["steps"]["rollout_tokens_total"][-1] for r in every_run)
    for arm, v in c["arms"].items():
        assert 0 <= v["accuracy_at_equal_budget"] <= 1 and len(v["rollout_tokens_to_reach"]) == 2
    printed = capfd.readouterr()
    assert "at equal rollout compute" in printed.out and "rollout tok to target" in printed.out
    # a line per evaluation of each run, as it trains
    assert "[grpo-ds seed 0] step 2: held-out accuracy" in printed.err


def test_sweep_ranks_dynamic_sampling_by_every_drawn_group():
    """Dynamic sampling keeps no all-right group: the kept groups' accuracy would rank it by
    what it threw away. The sweep ranks by drawn_accuracy where a record has it."""
    from sgpo_engine.demo.stats import rollout_scores
    tail = [None] * 3 + [0.5] * SWEEP_TAIL
    old = {"steps": {"accuracy": [0.9] * (SWEEP_TAIL + 3)}}  # before the drawn curve: no dynamic sampling
    ds = {"steps": {"accuracy": [0.5] * (SWEEP_TAIL + 3), "drawn_accuracy": tail}}
    ds_high = {"steps": {"accuracy": [0.5] * (SWEEP_TAIL + 3), "drawn_accuracy": [0.7] * (SWEEP_TAIL + 3)}}
    scores = rollout_scores({("grpo", 3e-5): {"0": old}, ("grpo-ds", 3e-5): {"0": ds, "1": ds_high}})
    assert scores[("grpo", 3e-5)] == 0.9 and math.isclose(scores[("grpo-ds", 3e-5)], 0.6)
