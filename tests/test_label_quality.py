"""The label-quality table: Wilson intervals, the solve-rate bins and the in-gate precision / recall of the
majority, the program-confirmed majority and the program alone, on hand-built probe readings and checks."""

import pytest

from opensir_lite.label_quality import format_table, label_table, share, wilson
from opensir_lite.rewards import in_gate


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (5, 5, 0.566, 1.0),  # all right on a small sample: the lower bound stays far from 1
        (5, 24, 0.092, 0.405),  # docs/programs.md's probe figure (5 of 24)
        (0, 10, 0.0, 0.278),  # none right
        (150, 300, 0.444, 0.556),  # a half on 300 rows
    ],
)
def test_wilson(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)


def test_share_of_nothing():
    """No rows: no proportion and no interval, rather than a division by zero."""
    assert share(0, 0) == {"k": 0, "n": 0, "p": None, "low": None, "high": None}
    assert wilson(0, 0) is None


@pytest.mark.parametrize(
    "rate, inside",
    [(0.5, True), (0.9, True), (0.75, True), (0.875, True), (0.375, False), (1.0, False), (None, False)],
)  # the gate's closed ends, a rate above it, and no valid answer
def test_in_gate(rate, inside):
    assert in_gate(rate, 0.5, 0.9) is inside


def _row(row, rate, right):
    return {"row": row, "solve_rate": rate, "majority_right": right, "answers": [], "majority": "1"}


def test_label_table():
    """In the gate: the majority's precision over every in-gate row; the confirmed label's precision over rows a
    program confirmed, its recall over the right majorities; the program alone over rows with a program answer."""
    samples = [
        _row(1, 0.75, True),  # in gate, right, confirmed
        _row(2, 0.625, True),  # in gate, right, program disagrees (a right majority the filter loses)
        _row(3, 0.5, False),  # in gate, wrong, confirmed (a wrong label the filter keeps)
        _row(4, 0.875, False),  # in gate, wrong, program failed
        _row(5, 0.25, False),  # below the gate, confirmed
        _row(6, 1.0, True),  # above the gate, no program
        _row(7, None, False),  # no valid answer
    ]
    checks = {
        1: {"agrees": True, "program_answer": "3", "program_gold": True},
        2: {"agrees": False, "program_answer": "4", "program_gold": False},
        3: {"agrees": True, "program_answer": "5", "program_gold": False},
        4: {"agrees": None, "program_answer": None, "program_gold": None, "failure": "error"},
        5: {"agrees": True, "program_answer": "9", "program_gold": False},
    }
    t = label_table(samples, checks, 0.5, 0.9)
    g = t["in_gate"]
    assert t["rows"] == 7 and t["programs"] == 5 and g["rows"] == 4
    assert (g["majority_precision"]["k"], g["majority_precision"]["n"]) == (2, 4)
    assert (g["confirmed_precision"]["k"], g["confirmed_precision"]["n"]) == (1, 2)
    assert (g["confirmed_recall"]["k"], g["confirmed_recall"]["n"]) == (1, 2)
    assert (g["confirmed_share"]["k"], g["confirmed_share"]["n"]) == (2, 4)
    assert (g["program_precision"]["k"], g["program_precision"]["n"]) == (1, 3)
    assert (g["program_accuracy"]["k"], g["program_accuracy"]["n"]) == (1, 4)
    assert (t["outside_gate"]["confirmed_precision"]["k"], t["outside_gate"]["confirmed_precision"]["n"]) == (0, 1)
    bins = {b["bin"]: (b["k"], b["n"]) for b in t["by_solve_rate"]}
    assert bins["0.7-0.8"] == (1, 1) and bins["0.9-1.0"] == (1, 1) and bins["0.2-0.3"] == (0, 1)
    assert sum(n for _, n in bins.values()) == 6 and t["no_valid_answer"]["n"] == 1
    text = format_table(t)
    assert "| majority | precision | 50.0%" in text and "no valid answer | 1 |" in text


def test_pool_table():
    """Where gold is absent: the share of answered pool problems whose program confirmed the majority, by bin and
    in the gate; illegal and unanswered problems are not counted."""
    from opensir_lite.label_quality import format_pool_table, pool_table
    from opensir_lite.pool import ProblemRecord

    records = [
        ProblemRecord(id=1, problem="a", solve_rate=0.75),  # in gate, confirmed
        ProblemRecord(id=2, problem="b", solve_rate=0.625),  # in gate, contradicted
        ProblemRecord(id=3, problem="c", solve_rate=0.5),  # in gate, never checked
        ProblemRecord(id=4, problem="d", solve_rate=1.0),  # above the gate, confirmed
        ProblemRecord(id=5, problem="e", solve_rate=None),  # no valid answer: not counted
        ProblemRecord(id=6, problem="", legal=False),  # illegal: not counted
    ]
    checks = {1: {"agrees": True}, 2: {"agrees": False}, 4: {"agrees": True}}
    t = pool_table(records, checks, 0.5, 0.9)
    assert t["answered"] == 4 and t["checked"] == 3
    assert (t["confirmed"]["k"], t["confirmed"]["n"]) == (2, 4)
    assert t["in_gate"]["rows"] == 3 and t["in_gate"]["checked"] == 2
    assert (t["in_gate"]["confirmed_share"]["k"], t["in_gate"]["confirmed_share"]["n"]) == (1, 3)
    assert "inside the gate [0.5, 0.9]: 3 problems, confirmed 33.3%" in format_pool_table(t)


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("opensir_lite.sandbox").sandbox.isolation_unavailable_reason() is not None, reason="no namespaces"
)
def test_script_end_to_end_and_resume(program_model_dir, tmp_path):
    """scripts/label_quality.py on a tiny policy: samples (with gold), one program per row run in the sandbox, the
    table, and the pool table; a second call resumes (nothing sampled or checked twice)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import FIT_PROBLEM

    from opensir_lite.pool import ProblemPool, ProblemRecord

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "bench"
    data.mkdir()
    questions = [FIT_PROBLEM, "Tom has 3 apples and buys 4 more. How many apples does he have?"]
    (data / "gsm8k.jsonl").write_text("".join(json.dumps({"question": q, "answer": f"#### {a}"}) + "\n"
                                              for q, a in zip(questions, ["11", "7"], strict=True)))  # fmt: skip
    pool = ProblemPool()
    pool.add([ProblemRecord(id=i, problem=q, in_pool=True, source="initial") for i, q in enumerate(questions)])
    pool.save(tmp_path / "initial")
    run = tmp_path / "run"  # a self-play pool whose checks are given
    ProblemPool.from_seed().save(run)
    (tmp_path / "checks.jsonl").write_text(json.dumps({"id": 0, "agrees": True}) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(root / "scripts" / "label_quality.py"), "--config", "smoke", "--model_name_or_path",
           str(program_model_dir), "--initial_pool_path", str(tmp_path / "initial" / "pool.jsonl"), "--data_dir",
           str(data), "--rows", "2", "--results_dir", str(out), "--probe_samples", "2", "--student_max_new_tokens",
           "16", "--program_max_new_tokens", "32", "--chunk", "1", "--pool_run", str(run), "--pool_checks",
           str(tmp_path / "checks.jsonl")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = [json.loads(line) for line in (out / "samples.jsonl").open()]
    assert [s["gold"] for s in samples] == ["11", "7"] and all(len(s["answers"]) == 2 for s in samples)
    checks = [json.loads(line) for line in (out / "program_checks.jsonl").open()]
    fit = next(c for c in checks if c["problem"] == FIT_PROBLEM)
    assert fit["program_answer"] == "11" and fit["program_gold"] is True  # the tiny policy's program, sandboxed
    table = json.loads((out / "table.json").read_text())
    assert table["rows"] == 2 and table["programs"] == 2 and "| solve rate | rows |" in proc.stdout
    assert json.loads((out / "pool_table.json").read_text())["answered"] == 0  # the seed pool has no answers
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "samples.jsonl").read_text().count("\n") == 2  # resumed: nothing sampled twice
    assert (out / "program_checks.jsonl").read_text().count("\n") == 2
    # the labelling-rule stages on the same rows: two sampled programs per row (in the gate or not), the test-time vote
    votes = subprocess.run([*cmd, "--stage", "votes,testtime", "--votes_k", "2", "--votes_k_outside", "2"],
                           capture_output=True, text=True, cwd=root, timeout=600)  # fmt: skip
    assert votes.returncode == 0, votes.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "program_votes.jsonl").open()]
    assert len(rows) == 2 and all(len(r["answers"]) == 2 and len(r["gold"]) == 2 for r in rows)
    fit = next(r for r in rows if r["row"] == samples[0]["row"])
    assert "11" in [str(a).removesuffix(".0") for a in fit["answers"]]  # the tiny policy's program, sampled
    assert json.loads((out / "testtime.json").read_text())["rows"] == 2


class ScriptedSampler:
    """A sampler whose programs print a row's scripted answer; it records every call's seeds."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.calls = tokenizer, answers, []

    def generate(self, texts, num_samples, sampling, sample_seeds=None):
        from opensir_lite.generation import Completion

        self.calls.append((len(texts), num_samples, sampling.temperature, sample_seeds))
        out = []
        for text in texts:
            answer = next(a for q, a in self.answers.items() if q in text)
            body = f"```python\nprint({answer})\n```"
            out += [Completion([1], self.tokenizer(body, add_special_tokens=False)["input_ids"], body)] * num_samples
        return out


@pytest.mark.skipif(
    __import__("opensir_lite.sandbox").sandbox.isolation_unavailable_reason() is not None, reason="no namespaces"
)
def test_write_votes_samples_k_programs_by_the_gate(tmp_path, tokenizer):
    """k programs for in-gate rows, another number for the others, each from the seeded stream (seed, 2, row, j),
    at the recipe's temperature; a second call writes nothing twice."""
    from types import SimpleNamespace

    from opensir_lite.generation import sequence_seed
    from opensir_lite.label_quality import PROGRAM_STREAM, read_votes, write_votes

    args = SimpleNamespace(seed=7, temperature=0.7, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
                           program_max_new_tokens=32, max_generate_batch=0, allow_unisolated_sandbox=False)  # fmt: skip
    rows = [{"row": 3, "question": "Q three?", "gold": "6", "majority": "6", "solve_rate": 0.75},  # in the gate
            {"row": 9, "question": "Q nine?", "gold": "2", "majority": "5", "solve_rate": 0.25}]  # fmt: skip
    sampler = ScriptedSampler(tokenizer, {"Q three?": 6, "Q nine?": 2})
    path = tmp_path / "program_votes.jsonl"
    assert write_votes(sampler, args, path, 4, 1, True, 0.5, 0.9, rows) == 2
    votes = read_votes(path)
    assert votes[3]["answers"] == ["6"] * 4 and votes[3]["agrees"] == [True] * 4 and votes[3]["gold"] == [True] * 4
    assert votes[9]["answers"] == ["2"] and votes[9]["agrees"] == [False] and votes[9]["gold"] == [True]
    assert [(n, k, t) for n, k, t, _ in sampler.calls] == [(1, 1, 0.7), (1, 4, 0.7)]
    assert sampler.calls[1][3] == [sequence_seed(7, PROGRAM_STREAM, 3, j) for j in range(4)]
    assert write_votes(sampler, args, path, 4, 1, True, 0.5, 0.9, rows) == 0  # resumed
    assert len(sampler.calls) == 2


def test_rules_and_testtime_stages_read_measured_folders(tmp_path, monkeypatch, capsys):
    """--stage rules,testtime on measured files alone (no model): rules.json pools the named folders and picks a
    rule on the selection half; testtime.json pairs the program vote with the majority."""
    import json
    import runpy
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        samples, votes = [], []
        for row in range(12):
            good = row % 3 != 0
            samples.append({"row": row, "answers": ["4", "4", "4", "4", "4", "4", "1", "2"], "majority": "4",
                            "right": [good] * 6 + [not good, False], "majority_right": good, "solve_rate": 0.75,
                            "question": f"q{row}", "gold": "4" if good else "1"})  # fmt: skip
            votes.append({"row": row, "answers": ["4"] * 4 if good else ["1", "1", "4", None]})
        (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
        (folder / "program_votes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in votes))
    argv = ["label_quality.py", "--config", "learn-cpu-qwen", "--stage", "rules,testtime", "--results_dir",
            str(tmp_path / "a"), "--rules_from", f"pool={tmp_path / 'a'},asdiv={tmp_path / 'b'}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(root / "scripts" / "label_quality.py"), run_name="__main__")
    assert done.value.code == 0
    rules = json.loads((tmp_path / "a" / "rules.json").read_text())
    assert rules["rows"] == 24 and rules["rows_by_source"] == {"pool": 12, "asdiv": 12}
    assert rules["chosen"] is not None and rules["held"]["rule"] == rules["chosen"]
    testtime = json.loads((tmp_path / "a" / "testtime.json").read_text())
    assert testtime["rows"] == 12 and testtime["maj@8"] == pytest.approx(8 / 12)
    assert testtime["pv@8"] == pytest.approx(12 / 12)  # the programs print "1", the right minority answer
    assert "chosen on the selection half" in capsys.readouterr().out
