"""Training curves from ``metrics.jsonl``: one figure of nine panels (rewards; legal ratio, valid student answers and
the share in the gate; the solve-rate distribution; pool size and distinct problems; novelty; mean lengths; the
label probe; repetition, the reward-hacking watch; loss and entropy), written by ``scripts/plot_run.py`` and at the
end of a run, and redrawn live in a notebook by :class:`LivePlotCallback`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from opensir_lite.checkpointing import METRICS_FILE, find_run_file, read_run_rows
from opensir_lite.parsing import has_final_answer_line
from opensir_lite.rewards import (
    GATE_LOWER,
    GATE_UPPER,
    STUDENT_REWARD_NAMES,
    TEACHER_REWARD_NAMES,
    format_advantage_share,
    format_scored_column,
)

logger = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"


def find_metrics_file(run_dir: str | Path) -> Path:
    return find_run_file(run_dir, METRICS_FILE, "metrics file")


read_metrics = read_run_rows  # the one run-file reader (opensir_lite.checkpointing), under its notebook name


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where ``key`` is a finite number."""
    xs, ys = [], []
    for row in rows:
        v = row.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
            xs.append(row["step"])
            ys.append(float(v))
    return xs, ys


PANELS = (
    "rewards", "legal ratio, valid answers, in gate", "solve-rate distribution", "pool: size and distinct problems",
    "novelty", "mean completion tokens", "label probe (GSM8K)", "repetition (reward hacking watch)", "loss and entropy",
)  # fmt: skip
SHARES = {"legal_ratio": "legal ratio", "student_valid_rate": "valid student answers", "in_gate_share": "in the gate"}
POOL = {"pool_size": "pool size", "pool_distinct_problems": "distinct problems (cos < 0.95)"}
LENGTHS = {"teacher_mean_tokens": "teacher", "student_mean_tokens": "student"}
PROBE = {
    "probe/majority_correct": "majority = gold",
    "probe/solve_rate": "solve rate",
    "probe/sample_accuracy": "one sample = gold",
}
REPETITION = {
    "round_top_problem_share": "most repeated problem",
    "round_top_majority_share": "most common majority answer",
}


def _lines(ax, rows: list[dict[str, Any]], keys: dict[str, str], ylim: tuple[float, float] | None = None) -> None:
    """One line per metric that has values; a note when none has."""
    for key, label in keys.items():
        xs, ys = series(rows, key)
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    if ax.lines:
        ax.legend(fontsize="x-small")
        if ylim:
            ax.set_ylim(*ylim)
    else:
        ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_training_curves(rows: list[dict[str, Any]], lower: float = GATE_LOWER, upper: float = GATE_UPPER):
    """A 3 x 3 figure of the training curves (the panels of :data:`PANELS`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 10), layout="constrained")
    axes = fig.subplots(3, 3).ravel()
    for ax, title in zip(axes, PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
    if not rows:
        for ax in axes:
            ax.text(0.5, 0.5, "no logged step yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        return fig
    ax = axes[0]
    for name in TEACHER_REWARD_NAMES + STUDENT_REWARD_NAMES:
        xs, ys = series(rows, f"rewards/{name}/mean")
        if xs:
            ax.plot(xs, ys, marker=".", label=name, linestyle="-" if name in TEACHER_REWARD_NAMES else "--")
    if ax.lines:
        ax.legend(fontsize="x-small")
    _lines(axes[1], rows, SHARES, (-0.02, 1.02))
    hists = [(row["step"], row["solve_rate_hist"]) for row in rows if isinstance(row.get("solve_rate_hist"), list)]
    ax = axes[2]
    if hists and any(sum(h) for _, h in hists):
        matrix = np.array([h for _, h in hists], dtype=float).T
        steps = [s for s, _ in hists]
        image = ax.imshow(
            matrix, aspect="auto", origin="lower", cmap="Blues", extent=(min(steps) - 0.5, max(steps) + 0.5, 0, 1)
        )
        fig.colorbar(image, ax=ax, label="problems")
        for y in (lower, upper):
            ax.axhline(y, color="green", linewidth=1)
        ax.set_ylabel("solve rate")
    else:
        ax.text(0.5, 0.5, "no legal problem yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    _lines(axes[3], rows, POOL)
    xs, ys = series(rows, "novelty_mean")
    if xs:
        axes[4].plot(xs, ys, "m.-")
    else:
        axes[4].text(0.5, 0.5, "no legal problem yet", ha="center", va="center", transform=axes[4].transAxes)
    _lines(axes[5], rows, LENGTHS)
    _lines(axes[6], rows, PROBE, (-0.02, 1.02))
    _lines(axes[7], rows, REPETITION, (-0.02, 1.02))
    ax = axes[8]
    ax.plot(*series(rows, "loss"), "r.-", label="loss")
    twin = ax.twinx()
    twin.plot(*series(rows, "entropy"), "c.--", label="entropy")
    ax.legend(loc="upper left", fontsize="x-small")
    twin.legend(loc="upper right", fontsize="x-small")
    return fig


def write_training_plots(
    run_dir: str | Path, out_dir: str | Path | None = None, lower: float = GATE_LOWER, upper: float = GATE_UPPER
) -> Path:
    """Write ``training_curves.png`` (default: into the run folder), the gate ``[lower, upper]`` marked on the
    solve-rate panel; returns its path."""
    metrics = find_metrics_file(run_dir)
    out = Path(out_dir) if out_dir else metrics.parent
    out.mkdir(parents=True, exist_ok=True)
    path = out / CURVES_FILE
    plot_training_curves(read_metrics(metrics), lower, upper).savefig(path, dpi=100)
    return path


class LivePlotCallback(TrainerCallback):
    """Redraws the training curves in a notebook cell after every log (add it after the self-play callback, which
    writes the ``metrics.jsonl`` line it reads)."""

    def __init__(self, lower: float = GATE_LOWER, upper: float = GATE_UPPER):
        self.lower, self.upper = lower, upper
        self._handle = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        path = Path(args.output_dir) / METRICS_FILE
        if not path.is_file():
            return
        from IPython.display import display

        fig = plot_training_curves(read_metrics(path), self.lower, self.upper)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


def finite_mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over the rows that hold a finite number there (None when none does)."""
    values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float) and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


# The metrics learning_summary averages over the first and the last steps of a run (learning_report.py prints them)
SUMMARY_KEYS = (
    "legal_ratio", "student_valid_rate", "in_gate_share", "novelty_mean", "teacher_mean_tokens",
    "student_mean_tokens", "round_top_problem_share", "round_top_majority_share", "rewards/solvability/mean",
    "rewards/diversity/mean", "rewards/teacher_format/mean", "rewards/student_format/mean", "rewards/accuracy/mean",
)  # fmt: skip


def probe_choice(readings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The checkpoint the label probe picks: the reading with the highest majority = gold (ties: the one-sample
    accuracy, then the earlier step). The reading of step k measured the weights after k - 1 updates, so it names
    ``checkpoint-(k-1)``; step 1's reading is the base (no checkpoint)."""
    scored = [r for r in readings if isinstance(r.get("majority_correct"), int | float)]
    if not scored:
        return None
    best = max(scored, key=lambda r: (r["majority_correct"], r.get("sample_accuracy") or 0.0, -r["step"]))
    step = int(best["step"])
    return {"step": step, "checkpoint": f"checkpoint-{step - 1}" if step > 1 else None,
            "majority_correct": best["majority_correct"]}  # fmt: skip


def learning_summary(rows: list[dict[str, Any]], first: int = 5, last: int = 10) -> dict[str, Any]:
    """The health of a run from its ``metrics.jsonl`` rows: the legal ratio over the first ``first`` and the last
    ``last`` steps, the valid-answer rate, share in the gate, novelty and lengths at both ends, the label probe at
    its first and last measurement, the largest repeated-problem and repeated-answer shares, and the pool's distinct
    problems at the end."""
    rows = sorted(rows, key=lambda r: r["step"])
    head, tail = rows[:first], rows[-last:]
    probes = [r for r in rows if isinstance(r.get("probe/majority_correct"), int | float)]
    out: dict[str, Any] = {"steps": len(rows)}
    for key in SUMMARY_KEYS:
        out[key] = {"first": finite_mean(head, key), "last": finite_mean(tail, key)}
    out["legal_ratio"]["gain"] = (
        out["legal_ratio"]["last"] - out["legal_ratio"]["first"]
        if None not in (out["legal_ratio"]["first"], out["legal_ratio"]["last"])
        else None
    )
    out["pool_distinct_problems"] = rows[-1].get("pool_distinct_problems") if rows else None
    out["pool_size"] = rows[-1].get("pool_size") if rows else None
    out["max_top_problem_share"] = max((r.get("round_top_problem_share") or 0.0 for r in rows), default=None)
    out["probe"] = [
        {"step": r["step"], **{k.split("/", 1)[1]: r.get(k) for k in PROBE}, "seconds": r.get("time/probe")}
        for r in probes
    ]
    out["probe_choice"] = probe_choice(out["probe"])
    out["probe_seconds"] = sum(r.get("time/probe") or 0.0 for r in probes)
    out["step_seconds"] = sum(r.get("time/step") or 0.0 for r in rows)
    return out


ADVANTAGE_SCHEMES = {  # (scale_rewards, student_format_gate) replayed by evidence_format_shares
    "group std (paper)": ("group", "none"),
    "scale none (dr_grpo)": ("none", "none"),
    "group std + format gate": ("group", "accuracy_variance"),
    "scale none + format gate": ("none", "accuracy_variance"),
}


def evidence_accuracy(row: dict[str, Any]) -> list[float]:
    """A round-evidence row's student accuracy rewards: agreement with the majority class (self-play) or the
    gold grade (the control's ``correct``)."""
    students = row.get("students") or []
    if students and "correct" in students[0]:
        return [float(bool(s.get("correct"))) for s in students]
    majority = row.get("majority_class")
    return [float(majority is not None and s.get("class") == majority) for s in students]


def evidence_format_shares(
    evidence: list[dict[str, Any]],
    scale: str = "group",
    gate: str = "none",
    weights: tuple[float, float] = (1.0, 0.1),
    trained_only: bool = True,
) -> dict[int, dict[str, Any]]:
    """Per step, the format share of the student |advantage| that TRL's group advantages would give the groups of
    ``round_evidence.jsonl`` under a scale (``group`` or ``none``) and a student format gate, with the format read
    from each completion's stored tail (the final-answer line is its end). Self-play evidence holds every answered
    problem (not only the trained ones); control evidence marks ``trained`` (older runs: every row trained)."""
    by_step: dict[int, tuple[list[float], list[float | None]]] = {}
    for row in evidence:
        students = row.get("students") or []
        if not students or (trained_only and row.get("trained") is False):
            continue
        acc = evidence_accuracy(row)
        scored = format_scored_column(acc, len(acc), gate)
        tails = [s.get("completion", "") for s in students]
        fmt = [float(has_final_answer_line(t)) if ok else None for t, ok in zip(tails, scored, strict=True)]
        a, f = by_step.setdefault(int(row["step"]), ([], []))
        a.extend(acc)
        f.extend(fmt)
    G = next((len(r["students"]) for r in evidence if r.get("students")), 1)
    return {
        step: format_advantage_share(a, f, G, weights, scale=scale != "none")
        for step, (a, f) in sorted(by_step.items())
    }
