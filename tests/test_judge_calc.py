"""The calculator step judge (judge/calc.py), the cascade (judge/cascade.py), and
`sgpo judge-eval` (evaluation/judge_eval.py) on hand-made items and on the shipped
labelled set (examples/data/judge_gsm8k.jsonl, built by scripts/build_judge_set.py)."""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import pytest

from sgpo_engine import cli
from sgpo_engine.evaluation import read_items, score
from sgpo_engine.evaluation.judge_eval import run_judge_eval
from sgpo_engine.judge import FunctionJudge, make_judge
from sgpo_engine.judge.calc import CalcJudge, evaluate, step_equations
from sgpo_engine.judge.cascade import CascadeJudge
from sgpo_engine.judge.verdict import Verdict
from sgpo_engine.train import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "examples", "data", "judge_gsm8k.jsonl")


def first_error(text: str):
    v = CalcJudge().judge(["p"], [text])[0]
    return v.first_error if not v.failed else v.reason


# ---------------------------------------------------------------------- the arithmetic
@pytest.mark.parametrize("expr, value", [
    ("16-3-4", 9), ("2*3+4", 10), ("2+3*4", 14), ("(2+3)*4", 20), ("10/4", Fraction(5, 2)), ("8/2/2", 2),
    ("$80,000 + $50,000", 130000), ("3 x 4", 12), ("50 * 20%", 10), (".5*10", 5), ("-3 + 5", 2),
    ("12 ÷ 4 × 3", 9), ("7 − 2", 5)])
def test_evaluate_is_exact(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["2^3", "2**3", "1/0", "3 apples + 2", "(1+2", "1+", "x", "9" * 40, "(" * 40 + "1"])
def test_evaluate_refuses_what_it_cannot_read(expr):
    assert evaluate(expr) is None


@pytest.mark.parametrize("text, want", [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 a day.\n#### 18",
     "no_error_found"),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=19>>19 a day.\n#### 19", 1),  # annotation
    ("She has 16 - 3 = <<16-3=13>>12 eggs.\n#### 12", 0),                       # the number after the annotation
    ("Step one: 3 + 4 = 7\nStep two: 7 x 6 = 41\n#### 41", 1),                  # written, with x
    ("It costs $1,200 + $300 = $1,500.\nHalf is 1,500 / 2 = 750\n#### 750", "no_error_found"),
    ("10 / 3 = 3.33 each\n10 / 3 = 3 whole\n#### 3", "no_error_found"),         # rounding and truncation
    ("10 / 3 = 3.5 each\n#### 3.5", 0),
    ("11/18*162 = <<11/18*162=99.00000000000001>>99 years\n#### 99", "no_error_found"),  # a float printed in full
    ("The share is 1/4 = 25%\nThe drop is 100 - 75 = 25%\n#### 25", "no_error_found"),
    ("5 apples + 3 apples = 9 apples\n#### 9", "no_error_found"),            # words cut the expression: not read
    ("he has 9 eggs - 2 * 3 = 1\n#### 1", "no_error_found"),                 # cut by words before an operator
    ("the total = 18\n#### 18", "no_error_found"),                           # nothing to check
    ("2 + 2 = 5 = 5\n#### 5", 0),
    ("2^10 = 1000\n#### 1000", "no_error_found"),                            # powers are not read
])
def test_calc_names_the_first_wrong_step(text, want):
    assert first_error(text) == want


def test_calc_on_untrusted_text_is_bounded():
    """Huge, nested or repetitive text finishes and names nothing it cannot read."""
    for text in ["(" * 100000 + "1) = 1", "1+" * 50000 + "1 = 3", "= " * 100000, "9" * 100000 + " + 1 = 2",
                 "<<" * 50000 + "1+1=3>>", "\n".join(["1 + 1 = 2"] * 2000)]:
        v = CalcJudge().judge(["p"], [text])[0]
        assert v.reason in ("ok", "no_error_found")
    assert len(step_equations("1 + 1 = 3 " * 10000)) <= 10000


def test_no_error_found_keeps_the_outcome_reward_and_is_not_a_failure():
    from sgpo_engine.judge import sgpo_rewards
    out = sgpo_rewards(["p"], [["#1", "3 + 4 = 8\n#8"]], [7], CalcJudge(), verifier=lambda t, a: False)
    assert out.verdicts[0].reason == "no_error_found" and math.isnan(float(out.rts[0]))
    assert out.verdicts[1].first_error == 0 and out.judged == 1 and out.failed == 0
    assert not Verdict.no_error_found(2).is_failure and Verdict.failure("timeout", 2).is_failure


# ---------------------------------------------------------------------- the cascade and the registry
def test_cascade_asks_the_next_judge_only_where_calc_cannot_settle():
    asked = []

    def llm(problem, steps, reference):
        asked.append(steps)
        return 0

    cascade = CascadeJudge([CalcJudge(), FunctionJudge(llm, step_mode="line")])
    out = cascade.judge(["p", "p", "p"], ["1 + 1 = 3\n#3", "the dog ran\n#4", "1 + 1 = 2\nso 5\n#5"])
    assert [v.first_error for v in out] == [0, 0, 0] and [v.reason for v in out] == ["ok"] * 3
    assert len(asked) == 2  # calc settled the first; the other two went on
    stats = cascade.stats
    assert stats["responses"] == 3 and stats["judged"] == 3 and stats["failed"] == 0
    assert [s["answered"] for s in stats["stages"]] == [1, 2]
    with pytest.raises(ValueError, match="step modes"):
        CascadeJudge([CalcJudge(), FunctionJudge(llm, step_mode="paragraph")])


def test_registry_builds_calc_and_its_cascades():
    assert isinstance(make_judge("calc", {"step_mode": "line"}), CalcJudge)
    with pytest.raises(ValueError, match="'calc\\+http' needs url and model"):
        make_judge("calc+http", {})
    cascade = make_judge("calc+http", {"url": "http://127.0.0.1:9/v1", "model": "m", "step_mode": "line"})
    assert isinstance(cascade, CascadeJudge) and type(cascade.judges[1]).__name__ == "HTTPJudge"
    cfg = TrainConfig(judge="calc+http", judge_url="http://127.0.0.1:9/v1", judge_model="m").validate()
    assert cfg.judge == "calc+http"
    with pytest.raises(ValueError, match="config field 'judge'"):
        TrainConfig(judge="calc+nothing").validate()


# ---------------------------------------------------------------------- judge-eval
def write_rows(path, rows):
    with open(path, "w") as f:
        f.write("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_scores_by_hand(tmp_path):
    """Four items and verdicts whose scores are known: one exact, one too late, one too early
    on a correct item, one correct item left alone; a failed verdict names no step."""
    path = write_rows(tmp_path / "d.jsonl", [
        {"problem": "a", "steps": ["1", "2", "3"], "label": 1},
        {"problem": "b", "steps": ["1", "2", "3", "4"], "label": 0},
        {"problem": "c", "response": "1\n2", "label": -1},
        {"problem": "d", "steps": ["1", "2"], "label": -1}])
    items = read_items(path, "line")
    verdicts = [Verdict.judged(1, 3), Verdict.failure("timeout", 4), Verdict.judged(0, 2), Verdict.judged(None, 2)]
    s = score(items, verdicts)
    assert (s["accuracy_erroneous"], s["accuracy_correct"]) == (0.5, 0.5) and s["f1"] == pytest.approx(0.5)
    assert (s["too_early"], s["too_late"], s["within_one_step"]) == (1, 1, 0.5)
    assert s["outcomes"] == {"timeout": 1} and s["rts_scored"] == 3
    assert s["rts_mae"] == pytest.approx((0 + 1 + 0) / 3)  # |1/3-1/3|, |0-1|, |1-1|


@pytest.mark.parametrize("row, needle", [
    ('{"steps": ["a"], "label": 0}', ":1: field 'problem'"),
    ('{"problem": "p", "steps": ["a"], "label": 1}', ":1: field 'label' is 1, but the item has 1 steps"),
    ('{"problem": "p", "steps": ["a"], "label": true}', ":1: field 'label' must be an integer"),
    ('{"problem": "p", "steps": ["a\\nb"], "label": 0}', ":1: field 'steps' does not split back"),
    ('{"problem": "p", "label": 0}', ":1: needs field 'steps'"),
    ('{"problem": "p", "steps": [], "label": 0}', ":1: field 'steps' must be a non-empty list"),
    ('{"problem": "p", "steps": ["a"], "label": 0', ":1: invalid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, needle):
    path = write_rows(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=f"bad.jsonl{needle}".replace("[", r"\[").replace("(", r"\(")):
        read_items(path, "line")


def test_judge_eval_cli_on_the_shipped_set(tmp_path, capsys):
    """The shipped set end to end with calc: its goals on arithmetic slips (exact earliest step
    >= 0.9) and on correct solutions (no false alarm >= 0.99); report, items and plot written."""
    out = tmp_path / "je"
    assert cli.main(["judge-eval", "--data", SHIPPED, "--judge", "calc", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ProcessBench F1" in printed and "exact, slip" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == 400 and report["by_kind"]["slip"]["exact"] >= 0.9
    assert report["accuracy_correct"] >= 0.99 and report["too_early"] == 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and {r["reason"] for r in rows} <= {"ok", "no_error_found"}
    assert (out / "judge_eval.png").stat().st_size > 1000 or not _has_matplotlib()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_judge_eval_cli_errors(tmp_path, capsys):
    bad = write_rows(tmp_path / "bad.jsonl", ['{"problem": "p", "steps": ["a"], "label": 3}'])
    assert cli.main(["judge-eval", "--data", bad, "--judge", "calc", "--output", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: field 'label' is 3" in capsys.readouterr().err
    assert cli.main(["judge-eval", "--data", bad, "--judge", "none", "--scope", "off", "--output",
                     str(tmp_path / "o")]) == 2
    assert "'none' has nothing to evaluate" in capsys.readouterr().err


def test_judge_eval_runs_the_judge_as_training_does(tmp_path):
    """judge_eval builds the judge from the training config (the registry, its options) and
    sends every item in one call, as a training step would."""
    cfg = TrainConfig(judge="calc", step_mode="line").validate()
    path = write_rows(tmp_path / "d.jsonl", [{"problem": "p", "steps": ["1 + 1 = 3", "#### 3"], "label": 0},
                                             {"problem": "q", "steps": ["1 + 1 = 2", "#### 2"], "label": -1}])
    report = run_judge_eval(path, cfg, str(tmp_path / "o"))
    assert report["f1"] == 1.0 and report["judge_stats"]["responses"] == 2


# ---------------------------------------------------------------------- a PRM behind vLLM's pooling API
class _PoolingHandler(__import__("http.server").server.BaseHTTPRequestHandler):
    """vLLM's POST /pooling for a STEP-pooled PRM: [p_wrong, p_right] per step separator; a
    step holding "9" scores 0.2, the others 0.9. `fail_first` 5xx replies first, to test retries."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append((self.path, body))
        if srv.fail_first > 0:
            srv.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        steps = body["input"].split("<|im_start|>assistant\n")[1].split(srv.separator)[:-1]
        rows = [[0.8, 0.2] if "9" in s else [0.1, 0.9] for s in steps] + srv.extra
        out = json.dumps({"object": "list", "data": [{"index": 0, "object": "pooling", "data": rows}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def pooling_server():
    from http.server import ThreadingHTTPServer
    import threading
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _PoolingHandler)
    srv.requests, srv.fail_first, srv.separator, srv.extra = [], 0, "<extra_0>", []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_prm_judge_reads_the_first_low_step(pooling_server):
    url = f"http://127.0.0.1:{pooling_server.server_address[1]}"
    cfg = TrainConfig(judge="prm", judge_url=url + "/v1", judge_model="prm-7b", prm_threshold=0.5).validate()
    judge = make_judge("prm", cfg.judge_options())
    out = judge.judge(["p", "p"], ["1 + 1 = 2\n2 + 9 = 11\n#11", "1 + 1 = 2\n#2"])
    assert [(v.first_error, v.reason) for v in out] == [(1, "ok"), (None, "ok")]
    # the two responses go out concurrently: their requests arrive in either order
    assert [path for path, _ in pooling_server.requests] == ["/pooling"] * 2  # the server root, not /v1
    bodies = sorted((body for _, body in pooling_server.requests), key=lambda b: b["input"].count("<extra_0>"))
    assert [b["input"].count("<extra_0>") for b in bodies] == [2, 3]  # one separator after each step
    assert all(b["model"] == "prm-7b" and "<|im_start|>user\np<|im_end|>" in b["input"] for b in bodies)
    pooling_server.fail_first = 1  # a 503 is retried
    assert judge.judge(["q"], ["3 + 9 = 12\n#12"])[0].first_error == 0
    pooling_server.extra = [[0.5, 0.5]]  # one score too many: a failed verdict, not a guess
    v = judge.judge(["r"], ["1 + 2 = 3\n#3"])[0]
    assert v.failed and v.reason == "bad_response" and "scored 3 steps" in v.detail


def test_calc_then_prm_cascade(pooling_server):
    url = f"http://127.0.0.1:{pooling_server.server_address[1]}/v1"
    judge = make_judge("calc+prm", {"url": url, "model": "m", "step_mode": "line"})
    out = judge.judge(["p", "p"], ["1 + 1 = 3\n#3", "I count 9 birds\n#9"])
    assert [v.first_error for v in out] == [0, 0] and len(pooling_server.requests) == 1  # calc settled the first
