"""`sgpo demo --quick` end to end: both arms train from the shipped warm start
and the outputs are well-formed."""
import json
import math
import os

from sgpo_engine import cli


def test_demo_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["runs"]) == {"grpo", "sgpo"}
    steps = res["settings"]["steps"]
    for method, by_seed in res["runs"].items():
        for run in by_seed.values():
            for curve in ("accuracy", "all_negative_frac", "credited_frac", "reward_mean"):
                assert len(run["steps"][curve]) == steps
                assert all(v is None or 0.0 <= v <= 1.0 for v in run["steps"][curve])
            assert 0.0 <= run["heldout_end_accuracy"] <= 1.0
            assert set(run["heldout_end"]) == {f"k{k}" for k in res["settings"]["ks"]}
            if method == "grpo":  # scope off: nothing is ever credited
                assert all(v == 0.0 for v in run["steps"]["credited_frac"])
            assert (out / f"{method}-seed0" / "metrics.jsonl").exists()
    assert not math.isnan(res["summary"]["sgpo"]["heldout_accuracy_mean"])
    assert os.path.getsize(out / "demo.png") > 1000
    table = capsys.readouterr().out
    assert "grpo" in table and "sgpo" in table and "held-out" in table
