"""The training callbacks, one job each, reading the rounds the rollout adapter (:class:`opensir_lite.rollout.Rollout`)
played. ``training_callbacks`` gives them in the order they must run at the end of a step (after transformers'
``DefaultFlowCallback`` has decided whether to save):

1. :class:`ProbeCheckpointCallback`: the step before a label-probe step is checkpointed (the probe of step k reads the
   weights after k - 1 updates, so its reading chooses ``checkpoint-(k-1)``).
2. :class:`StopRuleCallback`: the pre-registered stop rule (``stop_rule_metrics``) ends the run with a checkpoint of
   the step that broke it and marks that step's metrics.
3. :class:`RunFilesCallback`: the pool (every step), round evidence, and the self-play state inside each checkpoint,
   written *before* the trainer writes its own files there (a checkpoint pushed by ``hub_strategy`` carries it).
4. :class:`MetricsCallback`: times the step, writes one ``metrics.jsonl`` line per log and prints a summary.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from opensir_lite.checkpointing import (
    EVIDENCE_FILE,
    METRICS_FILE,
    SELFPLAY_STATE_FILE,
    STOP_RULE_FILE,
    read_run_rows,
    save_selfplay_checkpoint,
)


def merge_round_stats(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average per-round stats (histograms and counts of several rounds are summed; sizes keep the last)."""
    if len(rounds) == 1:
        return dict(rounds[0])
    merged: dict[str, Any] = {}
    for k in sorted({k for r in rounds for k in r}):
        values = [r[k] for r in rounds if r.get(k) is not None]
        if not values:
            merged[k] = None
        elif isinstance(values[0], list):
            merged[k] = [int(x) for x in np.sum(values, axis=0)]
        elif k in ("pool_size",):
            merged[k] = values[-1]
        elif k.startswith(("time/", "illegal/", "degenerate/")) or k.endswith(("_tokens", "_outputs", "_problems")):
            merged[k] = float(np.sum(values))
        else:
            merged[k] = float(np.mean(values))
    return merged


def format_step_summary(step: int, max_steps: int, s: dict[str, Any]) -> str:
    def f(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    return (
        f"step {step}/{max_steps} | legal {s['legal_problems']}/{s['teacher_outputs']} | "
        f"solve {f(s['solve_rate_mean'])} | novelty {f(s['novelty_mean'])} | pool {s['pool_size']} | "
        f"gen T {s['time/teacher_generation']:.1f}s S {s['time/student_generation']:.1f}s | "
        f"update {s.get('time/update', 0.0):.1f}s | tokens {s['tokens_generated']}"
    )


def stop_rule_reason(first: dict[str, Any], current: dict[str, Any], metrics: list[str], ratio: float) -> str | None:
    """Why the stop rule fires (a metric below ``ratio`` x its step-1 value), or None. A metric missing or not
    finite in either step (no student answer at all, greedy rollouts without an entropy) does not fire."""
    for name in metrics:
        ref, now = first.get(name), current.get(name)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (ref, now)):
            continue
        if ref > 0 and now < ratio * ref:
            return f"{name} {now:.3g} < {ratio:g} x {ref:.3g} (step 1)"
    return None


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSONL file and flush them to disk (a crash can cut at most the last line, which readers
    skip and a resume drops)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def _write(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


class ProbeCheckpointCallback(TrainerCallback):
    """Checkpoints the step before each label-probe step (the probe is the rollout's ``before_round`` hook)."""

    def __init__(self, rollout):
        self.rollout = rollout

    def on_step_end(self, args, state, control, **kwargs):
        due = getattr(self.rollout.before_round, "due", None)
        if callable(due) and state.global_step < state.max_steps and due(state.global_step + 1):
            control.should_save = control.should_save or args.save_strategy != "no"


class StopRuleCallback(TrainerCallback):
    """The pre-registered stop rule: a metric of ``stop_rule_metrics`` under ``stop_rule_ratio`` x its step-1
    value ends the run with a checkpoint of that step, marks its metrics and writes ``stop_rule.json``."""

    def __init__(self, rollout, output_dir: str | Path, quiet: bool = False):
        self.rollout, self.output_dir, self.quiet = rollout, Path(output_dir), quiet
        self.first: dict[str, Any] | None = None  # step 1's round metrics: the reference

    def on_train_begin(self, args, state, control, **kwargs):
        metrics = self.output_dir / METRICS_FILE
        if state.global_step > 0 and metrics.is_file():  # a resumed run keeps its step 1 as the reference
            self.first = next((r for r in read_run_rows(metrics) if r.get("step") == 1), None)

    def on_step_end(self, args, state, control, **kwargs):
        metrics = list(getattr(args, "stop_rule_metrics", None) or [])
        rounds = self.rollout.round_stats
        if not rounds or not metrics:
            return
        merged = merge_round_stats(rounds)
        if self.first is None:
            self.first = merged
            return
        reason = stop_rule_reason(self.first, merged, metrics, getattr(args, "stop_rule_ratio", 0.5))
        if not reason:
            return
        control.should_training_stop = True
        control.should_save = args.save_strategy != "no"
        for r in rounds:
            r["stop_rule_fired"] = 1
        if state.is_world_process_zero:
            (self.output_dir / STOP_RULE_FILE).write_text(
                json.dumps({"step": state.global_step, "reason": reason}, indent=2) + "\n"
            )
        if not self.quiet:
            _write(f"stop rule at step {state.global_step}: {reason}")


class RunFilesCallback(TrainerCallback):
    """The run's files: ``pool.jsonl`` at the start and after every step, round evidence appended per step, and the
    pool plus the self-play state inside every checkpoint folder. Every rank holds the same pool; rank 0 writes."""

    def __init__(self, rollout, output_dir: str | Path):
        self.rollout, self.output_dir = rollout, Path(output_dir)
        self._state: dict[str, Any] | None = None  # the self-play state gathered at the last save decision

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.rollout.pool.save(self.output_dir)

    def on_step_end(self, args, state, control, **kwargs):
        evidence = self.rollout.take_evidence()
        if control.should_save:  # the trainer saves next. A collective on all ranks:
            self._state = self.rollout.state_dict()
        if state.is_world_process_zero:
            self.rollout.pool.save(self.output_dir)
            if evidence:
                append_jsonl(self.output_dir / EVIDENCE_FILE, evidence)
            if control.should_save:
                self._save(args, state)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and not (checkpoint / SELFPLAY_STATE_FILE).is_file():
            self._save(args, state)  # a save this callback did not see coming

    def _save(self, args, state) -> None:
        if self._state is None:  # one process: no collective to fear
            self._state = self.rollout.state_dict()
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        save_selfplay_checkpoint(checkpoint, self.rollout.pool, self._state)


class MetricsCallback(TrainerCallback):
    """Per step: takes the rollout's round metrics and times the update; per log: one ``metrics.jsonl`` line (the
    rounds since the last log, merged, plus the trainer's own logs); a one-line summary per step unless quiet."""

    def __init__(self, rollout, output_dir: str | Path, quiet: bool = False):
        self.rollout, self.output_dir, self.quiet = rollout, Path(output_dir), quiet
        self._step_start = 0.0
        self.pending: list[dict[str, Any]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()
        self.rollout.round_stats.clear()

    def on_step_end(self, args, state, control, **kwargs):
        step_time = time.perf_counter() - self._step_start
        rounds = list(self.rollout.round_stats)
        self.rollout.round_stats.clear()
        rollout = sum(r["time/rollout"] + r.get("time/probe", 0.0) for r in rounds)
        for r in rounds:
            r["time/update"] = max(0.0, step_time - rollout) / len(rounds)
            r["time/step"] = step_time / len(rounds)
        self.pending.extend(rounds)
        if rounds and not self.quiet:
            _write(format_step_summary(state.global_step, state.max_steps, merge_round_stats(rounds)))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not self.pending:
            return
        row = {"step": state.global_step, **merge_round_stats(self.pending)}
        for k, v in (logs or {}).items():
            if isinstance(v, int | float) and math.isfinite(v):
                row[k] = v
        self.pending.clear()
        with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def training_callbacks(rollout, output_dir: str | Path, quiet: bool = False) -> list[TrainerCallback]:
    """The four callbacks in the order they must run (module docstring)."""
    return [ProbeCheckpointCallback(rollout), StopRuleCallback(rollout, output_dir, quiet),
            RunFilesCallback(rollout, output_dir), MetricsCallback(rollout, output_dir, quiet)]  # fmt: skip
