"""Training curves from metrics.jsonl: reading (damaged lines skipped), series, the figure, the CLI, live plots."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from opensir_lite.curves import (
    CURVES_FILE,
    PANELS,
    LivePlotCallback,
    learning_summary,
    plot_training_curves,
    read_metrics,
    series,
)
from opensir_lite.exploration import write_run_plots

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"step": 1, "legal_ratio": 0.0, "pool_size": 1, "solve_rate_hist": [0] * 10, "loss": 0.0, "novelty_mean": None},
    {"step": 2, "legal_ratio": 0.5, "pool_size": 3, "solve_rate_hist": [0, 0, 0, 0, 0, 1, 0, 1, 0, 0],
     "rewards/solvability/mean": 0.4, "rewards/accuracy/mean": 0.75, "novelty_mean": 0.3, "loss": 0.1},
]  # fmt: skip


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_metrics_skips_damaged_lines(tmp_path):
    path = _write(
        tmp_path / "metrics.jsonl",
        [json.dumps(ROWS[0]), "", '{"step": 2, "legal_ra', json.dumps([1, 2]), '{"no_step": 1}', json.dumps(ROWS[1])],
    )  # a line cut by a kill, a non-object, a row without step: all skipped
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


@pytest.mark.parametrize(
    "key,expected",
    [
        ("legal_ratio", ([1, 2], [0.0, 0.5])),  # present in every row
        ("novelty_mean", ([2], [0.3])),  # None is no value
        ("rewards/accuracy/mean", ([2], [0.75])),  # absent in step 1
        ("missing", ([], [])),  # never logged
    ],
)
def test_series(key, expected):
    assert series(ROWS, key) == expected


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], []])  # a full run, a run with no legal problem, nothing logged
def test_figure_has_every_panel(rows):
    fig = plot_training_curves(rows)
    titles = [ax.get_title() for ax in fig.axes]
    assert all(panel in titles for panel in PANELS)


@pytest.mark.parametrize("lower,upper", [(0.5, 0.9), (0.2, 0.6)])  # the default gate, a run's own gate
def test_solve_rate_panel_marks_the_gate(lower, upper):
    fig = plot_training_curves(ROWS, lower, upper)
    panel = next(ax for ax in fig.axes if ax.get_title() == "solve-rate distribution")
    assert sorted(line.get_ydata()[0] for line in panel.lines) == [lower, upper]


def test_write_run_plots_and_cli(tmp_path):
    from opensir_lite.pool import ProblemPool

    _write(tmp_path / "metrics.jsonl", [json.dumps(r) for r in ROWS])
    ProblemPool.from_seed().save(tmp_path)
    written = write_run_plots(tmp_path)
    assert written == [tmp_path / CURVES_FILE, tmp_path / "explore" / "report.md"]
    assert (tmp_path / CURVES_FILE).read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_run.py"), str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / CURVES_FILE).is_file()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_run.py"), str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: no metrics file at")


def test_live_plot_callback_updates_one_display(tmp_path, monkeypatch):
    shown = []

    class Handle:
        def update(self, fig):
            shown.append(("update", fig))

    def display(fig, display_id=None):
        shown.append(("display", fig))
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    callback = LivePlotCallback()
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(is_world_process_zero=True)
    callback.on_log(args, state, None)  # no metrics yet: nothing shown
    _write(tmp_path / "metrics.jsonl", [json.dumps(ROWS[0])])
    callback.on_log(args, state, None)
    _write(tmp_path / "metrics.jsonl", [json.dumps(r) for r in ROWS])
    callback.on_log(args, state, None)
    assert [kind for kind, _ in shown] == ["display", "update"]  # one output area, redrawn


def _run_rows(steps: int = 15) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "legal_ratio": 0.2 if step <= 5 else 0.8, "rewards/solvability/mean": step / 100,
               "round_top_problem_share": 0.75 if step == 3 else 0.1, "pool_size": 10 + step,
               "pool_distinct_problems": 9 + step, "time/step": 60.0}  # fmt: skip
        if step in (1, 15):  # the label probe ran at the first and the last step
            row.update({"probe/majority_correct": 0.25, "probe/solve_rate": 0.5, "time/probe": 6.0})
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    "key,first,last",
    [
        ("legal_ratio", 0.2, 0.8),  # first 5 steps 0.2, last 10 steps 0.8
        ("rewards/solvability/mean", 0.03, 0.105),  # mean of steps 1-5 and of steps 6-15, divided by 100
        ("student_valid_rate", None, None),  # never logged: no mean rather than 0
    ],
)
def test_learning_summary_first_and_last_steps(key, first, last):
    summary = learning_summary(list(reversed(_run_rows())))  # rows in any order: sorted by step
    expected = [None if v is None else pytest.approx(v) for v in (first, last)]
    assert [summary[key]["first"], summary[key]["last"]] == expected


def test_learning_summary_run_figures():
    summary = learning_summary(_run_rows())
    assert summary["legal_ratio"]["gain"] == pytest.approx(0.6)
    assert (summary["steps"], summary["pool_size"], summary["pool_distinct_problems"]) == (15, 25, 24)
    assert summary["max_top_problem_share"] == 0.75  # the step-3 round taken by one problem
    assert [p["step"] for p in summary["probe"]] == [1, 15] and summary["probe_seconds"] == 12.0
    assert summary["step_seconds"] == 900.0


def test_learning_report_cli(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "metrics.jsonl", [json.dumps(r) for r in _run_rows()])
    main = runpy.run_path(str(ROOT / "scripts" / "learning_report.py"))["main"]  # in-process: no second interpreter
    monkeypatch.setattr(sys, "argv", ["learning_report.py", str(run), "--json", str(tmp_path / "s.json")])
    assert main() == 0
    out = capsys.readouterr().out
    assert "legal ratio gain (last 10 - first 5): 0.60" in out
    assert "rewards/solvability/mean" in out and "rewards/diversity/mean" in out
    assert json.loads((tmp_path / "s.json").read_text())[str(run)]["pool_size"] == 25
    # a short run reads its ends over fewer steps
    monkeypatch.setattr(sys, "argv", ["learning_report.py", str(run), "--first", "2", "--last", "3"])
    assert main() == 0
    gain = learning_summary(_run_rows(), 2, 3)["legal_ratio"]["gain"]
    assert f"legal ratio gain (last 3 - first 2): {gain:.2f}" in capsys.readouterr().out
    for argv in ([str(tmp_path / "nowhere")], [str(run), "--first", "0"]):  # a missing run; an empty window
        monkeypatch.setattr(sys, "argv", ["learning_report.py", *argv])
        assert main() == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1  # one line naming the problem


def _evidence(step, classes, majority, tails):
    students = [
        {"answer": str(c), "class": c, "tokens": 10, "completion": t} for c, t in zip(classes, tails, strict=True)
    ]
    return {"step": step, "students": students, "majority_class": majority}


BOX = "Therefore, the final answer is: $\\boxed{4}$"


@pytest.mark.parametrize(
    "scale,gate,share1,share2",
    [
        ("group", "none", 1.0, None),  # step 1: the group agrees, only the format varies -> all format
        ("none", "none", 1.0, None),
        ("group", "accuracy_variance", None, None),  # the gate: no advantage left in step 1
    ],
)
def test_evidence_format_shares(scale, gate, share1, share2):
    """Replaying round evidence: step 1 is a format-only group, step 2 a group whose accuracy varies with a constant
    format (share 0)."""
    from opensir_lite.curves import evidence_format_shares

    rows = [
        _evidence(1, [0, 0, 0, 0], 0, [BOX, "x", "x", "x"]),
        _evidence(2, [0, 1, 0, 0], 0, [BOX] * 4),
        {"step": 3, "students": [{"correct": True, "completion": BOX}, {"correct": False, "completion": BOX}],
         "trained": False},  # a control candidate that did not train: left out
    ]  # fmt: skip
    shares = evidence_format_shares(rows, scale, gate)
    assert sorted(shares) == [1, 2]
    assert shares[1]["format_share"] == (None if share1 is None else pytest.approx(share1))
    assert shares[1]["format_only_groups"] == (0 if gate != "none" else 1)
    assert shares[2]["format_share"] == pytest.approx(0.0) and shares[2]["accuracy_variance_groups"] == 1


def test_learning_report_advantage_table(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "metrics.jsonl", [json.dumps(r) for r in _run_rows()])
    _write(run / "round_evidence.jsonl", [json.dumps(_evidence(1, [0, 0, 0, 0], 0, [BOX, "x", "x", "x"]))])
    main = runpy.run_path(str(ROOT / "scripts" / "learning_report.py"))["main"]
    monkeypatch.setattr(
        sys, "argv", ["learning_report.py", str(run), "--advantage", "--json", str(tmp_path / "s.json")]
    )
    assert main() == 0
    out = capsys.readouterr().out
    assert "all steps, group std (paper): format share 1.00, format-only groups 1" in out
    assert "all steps, group std + format gate: format share -, format-only groups 0" in out
    table = json.loads((tmp_path / "s.json").read_text())[str(run)]["advantage"]
    assert table["1"]["group std (paper)"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "readings,choice",
    [
        ([], None),  # no probe
        ([{"step": 1, "majority_correct": 0.2}], (1, None)),  # only the base was read
        ([{"step": 1, "majority_correct": 0.19}, {"step": 11, "majority_correct": 0.25}], (11, "checkpoint-10")),
        ([{"step": 1, "majority_correct": 0.25}, {"step": 11, "majority_correct": 0.25}], (1, None)),  # tie: earlier
        ([{"step": 1, "majority_correct": 0.2, "sample_accuracy": 0.1},
          {"step": 10, "majority_correct": 0.2, "sample_accuracy": 0.2}], (10, "checkpoint-9")),  # tie: one sample
    ],
)  # fmt: skip
def test_probe_choice(readings, choice):
    from opensir_lite.curves import probe_choice

    got = probe_choice(readings)
    assert (None if got is None else (got["step"], got["checkpoint"])) == choice
