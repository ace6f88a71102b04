"""The program check: grading a program's printed answer, the summary, the checks file, the whole check on a tiny
policy that writes a real program, the per-round measurement, and the script over a run's pool."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIT_PROBLEM
from transformers import AutoModelForCausalLM

from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.programs import (
    PROGRAM_CHECKS_FILE,
    ProgramCheck,
    check_problems,
    format_summary,
    grade_program,
    read_checks,
    regrade,
    run_programs,
    summarize_checks,
    write_checks,
)
from opensir_lite.sandbox import ProgramResult, isolation_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
needs_isolation = pytest.mark.skipif(
    isolation_unavailable_reason() is not None, reason=f"no namespaces here: {isolation_unavailable_reason()}"
)


def ran(line=None, failure=None):
    """A sandbox result as run_program returns it."""
    return ProgramResult(line, failure, 0 if failure is None else 1, 0.1, "", True)


# (result, majority, gold, expected fields)
GRADES = [
    # the program prints the majority's number
    (ran("11"), "11", None, {"program_answer": "11", "agrees": True, "failure": None}),
    # the same number in another form: equivalence, as the grader everywhere else
    (ran("11.0"), "11", None, {"program_answer": "11.0", "agrees": True}),
    # a fraction against a decimal
    (ran("3/4"), "0.75", None, {"agrees": True}),
    # Python's float form against the student's integer (the vote's string rule would split them)
    (ran("15.0"), "15", None, {"agrees": True}),
    # a different answer: disagreement
    (ran("14"), "11", None, {"program_answer": "14", "agrees": False}),
    # no majority (no valid student answer): nothing to agree with
    (ran("14"), None, None, {"program_answer": "14", "agrees": None}),
    # no code block in the completion
    (None, "11", None, {"failure": "no_program", "program_answer": None, "agrees": None}),
    # the sandbox ended it
    (ran(None, "timeout"), "11", None, {"failure": "timeout", "agrees": None}),
    # it printed a word, not an answer
    (ran("done"), "11", None, {"failure": "no_answer", "program_answer": None}),
    # with gold: program right, majority wrong
    (ran("18"), "11", "18", {"agrees": False, "program_gold": True, "majority_gold": False}),
    # with gold and a failed program: the majority is still graded
    (None, "18", "18", {"failure": "no_program", "majority_gold": True}),
]


@pytest.mark.parametrize("result, majority, gold, expected", GRADES)
def test_grade_program(result, majority, gold, expected):
    fields = grade_program(result, majority, gold)
    assert {k: fields.get(k) for k in expected} == expected


def test_regrade_from_stored_answers(tmp_path):
    """--regrade_only: stored program answers graded again, failures kept, no generation and no sandbox."""
    rows = [
        {"id": 1, "problem": "p", "majority_answer": "15", "program_answer": "15.0", "agrees": False},  # stale verdict
        {"id": 2, "problem": "p", "majority_answer": "15", "program_answer": None, "failure": "timeout"},
        {"id": 3, "problem": "p", "majority_answer": "15", "program_answer": None, "failure": "no_program"},
        {"id": 4, "problem": "p", "majority_answer": "7", "program_answer": "8", "gold": "8"},
    ]
    checks = regrade(rows)
    assert [c.agrees for c in checks] == [True, None, None, False]
    assert [c.failure for c in checks] == [None, "timeout", "no_program", None]
    assert checks[3].program_gold is True and checks[3].majority_gold is False


def test_summary_and_predictive_split():
    """Agreement among checks with both answers; on gold rows, the majority's accuracy where the program agrees."""
    rows = [
        ProgramCheck(1, "p", "5", "5", True, gold="5", program_gold=True, majority_gold=True),
        ProgramCheck(2, "p", "6", "6", True, gold="7", program_gold=False, majority_gold=False),
        ProgramCheck(3, "p", "4", "9", False, gold="9", program_gold=True, majority_gold=False),
        ProgramCheck(4, "p", "3", None, None, failure="timeout", gold="3", majority_gold=True),
    ]
    s = summarize_checks(rows)
    assert s["checked"] == 4 and s["with_both_answers"] == 3
    assert s["agreement"] == pytest.approx(2 / 3)
    assert s["failures"] == {"timeout": 1}
    g = s["gold"]
    assert g["majority_gold"] == 0.5 and g["program_gold"] == 0.5
    assert g["majority_gold_when_agree"] == 0.5 and g["rows_agree"] == 2
    assert g["majority_gold_when_disagree"] == 0.0 and g["rows_disagree"] == 1
    assert "66.7%" in format_summary(s)


def test_checks_file_round_trip(tmp_path):
    """write_checks then read_checks by id; a line cut by a crash is skipped."""
    path = write_checks(tmp_path / PROGRAM_CHECKS_FILE, [ProgramCheck(3, "p", "1", "1", True)])
    with open(path, "a") as f:
        f.write('{"id": 4, "program_answer": ')
    rows = read_checks(tmp_path)
    assert list(rows) == [3] and rows[3]["agrees"] is True
    assert read_checks(tmp_path / "missing.jsonl") == {}


@needs_isolation
def test_run_programs_in_the_sandbox():
    """Completion texts: code cut out and run; text without a block is not run."""
    texts = ["Here:\n```python\nprint(sum(range(5)))\n```", "no code", "```python\nraise SystemExit(3)\n```"]
    out = run_programs(texts)
    assert out[0][1].answer_line == "10"
    assert out[1] == (None, None)
    assert out[2][1].failure == "error"


@needs_isolation
def test_check_problems_on_a_policy_that_writes_programs(program_model_dir, tokenizer):
    """The tiny policy writes print(4 * 2 + 3) for FIT_PROBLEM: the sandbox prints 11, graded against each majority."""
    model = AutoModelForCausalLM.from_pretrained(program_model_dir)
    checks = check_problems(model, tokenizer, [(1, FIT_PROBLEM, "11", "11"), (2, FIT_PROBLEM, "14", None)],
                            max_new_tokens=32)  # fmt: skip
    assert [c.program_answer for c in checks] == ["11", "11"]
    assert [c.agrees for c in checks] == [True, False]
    assert checks[0].program_gold is True and checks[0].majority_gold is True
    assert checks[0].program.startswith("print(4 * 2 + 3)")


@needs_isolation
def test_round_with_program_check(program_model_dir, tokenizer, embedder):
    """program_check on: programs/... stats for the round and program fields in its evidence; rewards unchanged."""
    from test_selfplay import make_args

    from opensir_lite.parsing import answers_equal
    from opensir_lite.selfplay import SelfPlay

    model = AutoModelForCausalLM.from_pretrained(program_model_dir)
    results = {}
    for on in (False, True):
        torch.manual_seed(0)
        args = make_args(program_check=on, program_max_new_tokens=32, allow_unisolated_sandbox=False)
        sp = SelfPlay(args, ProblemPool.from_seed(), embedder)
        results[on] = (sp.play_round(model, tokenizer, step=1), sp.take_evidence())
    (off, _), (on, evidence) = results[False], results[True]
    assert "programs/checked" not in off.stats
    answered = [r for r in on.records if r.legal and r.majority_answer is not None]
    assert answered, "the tiny policy writes legal problems that its student answers"
    assert on.stats["programs/checked"] == len(answered)
    assert [r.rewards for r in on.records] == [r.rewards for r in off.records]  # a measurement, not a reward
    by_id = {row["id"]: row for row in evidence}
    for r in answered:
        row = by_id[r.id]
        assert row["program_answer"] == "11"
        assert row["program_agrees"] == answers_equal("11", r.majority_answer, "equivalence")
    agree = sum(by_id[r.id]["program_agrees"] for r in answered)
    assert on.stats["programs/agreement"] == pytest.approx(agree / len(answered))


@needs_isolation
@pytest.mark.slow
@pytest.mark.parametrize("label", ["program_confirmed", "program_rule"])
def test_real_round_with_the_label_filter(program_model_dir, tokenizer, embedder, label):
    """student_label program_confirmed (one greedy program) or program_rule ("confirm 1 of 2": two sampled
    programs) on a real round (the tiny policy writes the problems, answers them and writes the programs; the
    sandbox runs them): only problems whose program printed the majority answer train the student or earn
    solvability."""
    from test_selfplay import make_args

    from opensir_lite.parsing import answers_equal
    from opensir_lite.rewards import STUDENT
    from opensir_lite.selfplay import SelfPlay

    model = AutoModelForCausalLM.from_pretrained(program_model_dir)
    torch.manual_seed(0)
    args = make_args(student_label=label, label_rule="confirm 1 of 2", program_max_new_tokens=32,
                     allow_unisolated_sandbox=False)  # fmt: skip
    sp = SelfPlay(args, ProblemPool.from_seed(), embedder)
    result = sp.play_round(model, tokenizer, step=1)
    evidence = {row["id"]: row for row in sp.take_evidence()}
    answered = [r for r in result.records if r.legal and r.solve_rate is not None]
    assert answered, "the tiny policy writes legal problems that its student answers"
    for r in answered:
        programs = evidence[r.id].get("program_answers") or [evidence[r.id]["program_answer"]]
        assert len(programs) == (2 if label == "program_rule" else 1)
        agrees = any(p is not None and answers_equal(p, r.majority_answer, "equivalence") for p in programs)
        assert r.label_confirmed is agrees and evidence[r.id]["label_confirmed"] is agrees
        if not agrees:
            assert r.rewards["solvability"] == 0.0
    trained = {pid for pid, role in zip(result.rows["problem_id"], result.rows["role"], strict=True) if role == STUDENT}
    assert trained <= {r.id for r in answered if r.label_confirmed}
    assert result.stats["labels/confirmed"] == sum(r.label_confirmed for r in answered)
    assert result.stats["time/programs"] > 0


def make_pool_run(folder: Path) -> None:
    pool = ProblemPool.from_seed()
    pool.add([
        ProblemRecord(id=1, problem=FIT_PROBLEM, step=1, legal=True, in_pool=True, majority_answer="11", solve_rate=0.75),
        ProblemRecord(id=2, problem=FIT_PROBLEM, step=1, legal=True, in_pool=True, majority_answer="14", solve_rate=0.5),
        ProblemRecord(id=3, problem="", step=1, legal=False, reason="no_problem"),
    ])  # fmt: skip
    pool.save(folder)


@needs_isolation
@pytest.mark.slow
def test_script_over_a_run_then_explorer(program_model_dir, tmp_path):
    """scripts/check_programs.py writes RUN/program_checks.jsonl; the explorer shows it and filters disagreements."""
    from opensir_lite.exploration import explorer_rows, filter_rows, load_program_checks, problem_detail

    run = tmp_path / "run"
    make_pool_run(run)
    summary = tmp_path / "summary.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "check_programs.py"), "--config", "smoke", "--model_name_or_path",
           str(program_model_dir), "--run_dir", str(run), "--program_max_new_tokens", "32", "--json", str(summary)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "program agrees with majority 50.0%" in proc.stdout
    checks = load_program_checks(run)
    assert {i: c["agrees"] for i, c in checks.items()} == {1: True, 2: False}  # legal problems with a majority only
    assert json.loads(summary.read_text())["agreement"] == 0.5
    assert json.loads(summary.read_text())["dtype"] == "float32"  # smoke's rollout_dtype auto: the CPU's fp32
    bf16 = [*cmd, "--rollout_dtype", "bfloat16", "--limit", "1", "--output", str(tmp_path / "bf16.jsonl")]
    assert subprocess.run(bf16, capture_output=True, text=True, cwd=ROOT, timeout=600).returncode == 0
    assert json.loads(summary.read_text())["dtype"] == "bfloat16"  # the recipe's rollout dtype, as the round samples
    again = subprocess.run([*cmd, "--regrade_only", "true"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "program agrees with majority 50.0%" in again.stdout  # no model loaded
    rows = explorer_rows(ProblemPool.from_jsonl(run / "pool.jsonl"), None, programs=checks)
    assert [r["id"] for r in filter_rows(rows, program="disagrees")] == [2]
    assert [r["id"] for r in filter_rows(rows, program="checked")] == [1, 2]
    assert "**disagrees** with the majority" in problem_detail(next(r for r in rows if r["id"] == 2))


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one of --run_dir"),  # neither a run nor the probe
        (["--run_dir", "x", "--probe", "true"], "exactly one of --run_dir"),  # both
        (["--probe", "true"], "--probe needs --output"),  # the probe has no run folder to write into
        (["--run_dir", "/nonexistent/run"], "no pool file"),  # a missing run
    ],
)
def test_script_bad_input(argv, message, capsys, monkeypatch):
    # the script as __main__ in this process (a subprocess per case cost 6 s of imports each)
    monkeypatch.setattr(sys, "argv", ["scripts/check_programs.py", "--config", "smoke", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / "check_programs.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().count("\n") == 0 and message in err
