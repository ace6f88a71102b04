"""Seeding an initial pool with the tiny fitted model: reaching N, stopping at the attempt limit, resuming."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIT_PROBLEM

from opensir_lite.generation import SamplingSettings
from opensir_lite.models import load_for_inference
from opensir_lite.pool import ProblemPool
from opensir_lite.seeding import DUPLICATE, SeedSettings, seed_pool, seed_rejection

ROOT = Path(__file__).parents[1]


def settings(**overrides) -> SeedSettings:
    args = dict(
        n_problems=1, num_generations=4, solve_rate_lower=0.0, solve_rate_upper=1.0, candidates_per_batch=2,
        max_attempts=4, teacher=SamplingSettings(48, 0.0), student=SamplingSettings(48, 1.0), seed=0,
        teacher_prefill="<problem>What",
    )  # fmt: skip
    # a greedy teacher after the "<problem>What" prefill writes FIT_PROBLEM for either reference: no sampling luck
    # (after "<problem>" alone the fitted model is split about 50/50 between "What" and "Use multiplication.",
    # so the CPU's rounding chose, and an AVX2 CPU chose the other)
    args.update(overrides)
    return SeedSettings(**args)


def test_seed_reach_limit_and_resume(tmp_path, fitted_model_dir, embedder):
    torch.manual_seed(0)
    model, tok = load_for_inference(str(fitted_model_dir))
    out = tmp_path / "seed.jsonl"

    report = seed_pool(model, tok, out, settings(n_problems=1), embedder=embedder, progress=False)
    assert report.reached and report.accepted == 1  # N reached
    pool = ProblemPool.from_jsonl(out)  # the trainer's loader accepts it
    assert [r.problem for r in pool.entries] == ["What is 1+1?", FIT_PROBLEM]
    assert all(r.id in pool.embeddings for r in pool.entries if r.source == "seeding")
    history = len(pool.history)

    # The fitted model only ever writes FIT_PROBLEM again: duplicates, so N=2 stops at the attempt limit.
    report = seed_pool(model, tok, out, settings(n_problems=2, max_attempts=4), embedder=embedder, progress=False)
    assert not report.reached and report.tried == 4 and report.accepted == 1
    assert report.accepted_now == 0 and report.outcomes == {DUPLICATE: 4} and report.seconds > 0

    # A time box already spent stops before the first batch; its report says so.
    report = seed_pool(model, tok, out, settings(n_problems=2, max_seconds=1e-9), embedder=embedder, progress=False)
    assert not report.reached and report.tried == 0 and report.accepted_per_minute == 0.0
    pool = ProblemPool.from_jsonl(out)
    assert len(pool.entries) == 2  # resume appended, never duplicated an accepted problem
    assert len(pool.history) == history + 4  # nor truncated: every attempt is recorded (the time box added none)
    assert any(r.reason == DUPLICATE for r in pool.history)

    # Rerunning with N already reached changes nothing.
    report = seed_pool(model, tok, out, settings(n_problems=1), embedder=embedder, progress=False)
    assert report.reached and report.tried == 0
    assert len(ProblemPool.from_jsonl(out).history) == history + 4


def test_seed_cli_attempt_limit_message(tmp_path, fitted_model_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: {fitted_model_dir}\nload_in_4bit: false\nnum_generations: 2\n"
        "per_device_train_batch_size: 4\nteacher_max_new_tokens: 8\nstudent_max_new_tokens: 8\n"
    )
    out = tmp_path / "pool.jsonl"
    proc = subprocess.run(
        [sys.executable, "scripts/seed_pool.py", "--config", str(recipe), "--n_problems", "3", "--output", str(out),
         "--max_attempts", "2", "--candidates_per_batch", "2", "--output_dir", str(tmp_path / "unused")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "stopped after 2 attempts" in proc.stderr and "0/3" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 + 2  # seed + the two attempts, recorded with their reasons


LONG = "A farmer has 12 cows and buys 7 more cows. How many cows are there now?"


@pytest.mark.parametrize(
    "problem,majority,solve_rate,reason",
    [
        (LONG, "19", 0.75, None),  # in the gate, a number the problem does not state: accepted
        (LONG, "19", 1.0, "solve_rate_out_of_range"),  # too easy
        (LONG, "19", 0.25, "solve_rate_out_of_range"),  # too hard
        (LONG, "19", None, "solve_rate_out_of_range"),  # no valid answer
        (LONG, "ANSWER", 0.75, "answer_without_digit"),  # words read as symbols (A*N*S*W*E*R)
        (LONG, "12", 0.75, "answer_in_problem"),  # the problem states its answer
        ("What is 12 + 7?", "19", 0.75, "problem_under_30_chars"),  # too short for the pool
        (LONG + " <think>hm</think>", "19", 0.75, "xml_in_problem"),  # leaked tags
    ],
)
def test_official_seed_filters(problem, majority, solve_rate, reason):
    assert seed_rejection(problem, majority, solve_rate, 0.5, 0.9) == reason


def test_shipped_question_pool_holds_no_evaluation_or_probe_row():
    """The human-written-question pool: GSM8K questions (answers never stored) of rows that no seed-0 evaluation
    subset of up to 500 rows and no probe contains. GSM8K's test file has 1319 rows, the probe is its last 32, and
    subset() permutes the other 1287 (row numbers are 1-based, so the i-th of them is row i + 1)."""
    import numpy as np

    from opensir_lite.evaluation.benchmarks import GOLD_HOLDOUT, PROBE_ROWS
    from opensir_lite.seeding import QUESTION_SOURCE

    pool = ProblemPool.from_jsonl("gsm8k-questions")
    rows = [r.reference_id for r in pool.entries]
    evaluated = {int(i) + 1 for i in np.random.default_rng(0).permutation(1319 - len(PROBE_ROWS))[:GOLD_HOLDOUT]}
    assert len(rows) == len(set(rows)) == 512 and all(1 <= r <= 1319 for r in rows)
    assert not set(rows) & evaluated and not set(rows) & set(PROBE_ROWS)
    assert {r.source for r in pool.entries} == {QUESTION_SOURCE}
    assert all(r.majority_answer is None and r.solve_rate is None for r in pool.entries)  # no answer anywhere
    raw = (Path(__file__).parents[1] / "opensir_lite" / "data" / "pools" / "gsm8k-questions.jsonl").read_text()
    assert "####" not in raw  # GSM8K's answer marker never made it into the file
