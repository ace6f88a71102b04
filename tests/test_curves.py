"""Training curves from metrics.jsonl: reading (damaged lines skipped), series, the figure, the CLI, live plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from opensir_lite.curves import (
    CURVES_FILE,
    PANELS,
    LivePlotCallback,
    plot_training_curves,
    read_metrics,
    series,
    write_run_plots,
)

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
