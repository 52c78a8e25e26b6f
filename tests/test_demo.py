"""`sgpo demo --quick` end to end: the three arms (and the GRPO learning-rate
sweep) train from the shipped warm start and the outputs are well-formed."""
import json
import math
import os

from sgpo_engine import cli, demo


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
            assert run["lr"] == st["lr"] == demo.GRPO_LR
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
    assert s["grpo"]["steps_to_reach"][0] is not None  # GRPO reaches its own final accuracy
    assert os.path.getsize(out / "demo.png") > 1000
    table = capsys.readouterr().out
    assert all(a in table for a in ("grpo", "sgpo-prefix", "held-out", "to reach", "premature"))


def test_demo_sweep_ranks_grpo_learning_rates(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["demo", "--quick", "--sweep", "--output", str(out), "--max-steps", "2"]) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert set(res["runs"]) == {f"grpo-lr{lr:g}" for lr in demo.SWEEP_LRS}
    sw = res["sweep"]
    scores = {arm: sum(r["steps"]["accuracy"][-demo.SWEEP_TAIL:]) / len(r["steps"]["accuracy"][-demo.SWEEP_TAIL:])
              for arm, by_seed in res["runs"].items() for r in by_seed.values()}
    assert sw["scores"] == scores and sw["best_arm"] == max(scores, key=scores.get)
    assert sw["best_lr"] == res["runs"][sw["best_arm"]]["0"]["lr"]
    assert all(r["steps"]["credited_frac"] == [0.0] * 2
               for by_seed in res["runs"].values() for r in by_seed.values())
    assert "best GRPO learning rate" in capsys.readouterr().err
    # the same sweep again reuses every run; other settings are not mixed in
    assert cli.main(["demo", "--quick", "--sweep", "--output", str(out), "--max-steps", "2"]) == 0
    assert f"reusing {len(demo.SWEEP_LRS)} run(s)" in capsys.readouterr().err
    assert json.loads((out / "sweep.json").read_text())["runs"] == res["runs"]
    empty = {a: {} for a in res["runs"]}
    path = str(out / "sweep.json")
    assert demo._earlier_sweep_runs(path, {**res["settings"], "lr": 1.0}, empty) == res["runs"]  # arms set the lr
    assert demo._earlier_sweep_runs(path, {**res["settings"], "steps": 3}, empty) == empty
    assert "another sweep's settings" in capsys.readouterr().err


def test_demo_unknown_arm_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--arms", "sgpo,ppo", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "arms: unknown ppo" in err and "sgpo-prefix" in err
    assert not any(tmp_path.iterdir())  # nothing ran
