"""Exploration statistics on a synthetic pool with known numbers, the figures, the report and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opensir_lite import exploration as ex
from opensir_lite.pool import POOL_FILE, ProblemPool, ProblemRecord

ROOT = Path(__file__).resolve().parents[1]

# A pool with known statistics: the seed, then steps 1..3.
#   step 1: 4 outputs, 2 legal (solve 0.25, 0.75), 1 no_problem, 1 ellipsis_problem
#   step 2: 3 outputs, 3 legal (solve 0.75, 0.75, 1.0), concepts repeat "algebra"
#   step 3: 2 outputs, 1 legal (solve 0.5), 1 no_valid_answer
LEGAL = [  # (step, solve rate, novelty, concepts)
    (1, 0.25, 0.40, ["Algebra", "fractions"]),
    (1, 0.75, 0.30, ["geometry"]),
    (2, 0.75, 0.35, ["algebra"]),
    (2, 0.75, 0.20, ["algebra", "probability"]),
    (2, 1.00, 0.10, ["counting"]),
    (3, 0.50, 0.45, ["algebra"]),
]
ILLEGAL = [(1, "no_problem"), (1, "ellipsis_problem"), (3, "no_valid_answer")]


def synthetic_pool() -> ProblemPool:
    pool = ProblemPool.from_seed()
    rng = np.random.default_rng(0)
    embeddings = {0: rng.normal(size=8).astype(np.float32)}
    for step, rate, nov, concepts in LEGAL:
        r = ProblemRecord(id=pool.new_id(), problem=f"legal problem {pool._next_id}", step=step, concepts=concepts,
                          solve_rate=rate, novelty=nov, in_pool=True, legal=True)  # fmt: skip
        pool.add([r], {r.id: rng.normal(size=8).astype(np.float32)})
    for step, reason in ILLEGAL:
        pool.add([ProblemRecord(id=pool.new_id(), problem="", step=step, legal=False, reason=reason)])
    pool.embeddings.update(embeddings)
    return pool


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    synthetic_pool().save(tmp_path)
    return tmp_path


def test_problems_per_step():
    counts = ex.problems_per_step(synthetic_pool().history)
    # (step, generated, legal, in pool): the seed is not a generated problem
    assert [(c.step, c.generated, c.legal, c.added) for c in counts] == [(1, 4, 2, 2), (2, 3, 3, 3), (3, 2, 1, 1)]
    assert counts[0].legal_ratio == 0.5


def test_illegal_reasons():
    assert ex.illegal_reasons(synthetic_pool().history) == {
        "no_problem": 1,
        "ellipsis_problem": 1,
        "no_valid_answer": 1,
    }


def test_solve_rate_histogram_counts():
    counts, edges = ex.solve_rate_histogram(synthetic_pool().history)
    assert len(counts) == 10 and edges[0] == 0.0 and edges[-1] == 1.0
    expected = [0] * 10
    expected[2] = 1  # 0.25
    expected[5] = 1  # 0.5
    expected[7] = 3  # 0.75 x 3
    expected[9] = 1  # 1.0 falls in the last bin
    assert counts == expected


def test_concept_counts_and_over_time():
    records = synthetic_pool().history
    counts = ex.concept_counts(records)
    assert counts["algebra"] == 4  # case folded: "Algebra" and "algebra"
    assert counts.most_common(1) == [("algebra", 4)]
    steps, series = ex.concepts_over_time(records, top=2)
    assert steps == [1, 2, 3]
    assert series["algebra"] == [1, 2, 1]


def test_novelty_and_rankings():
    records = synthetic_pool().history
    by_step = {s: (round(m, 4), n) for s, m, n in ex.novelty_by_step(records)}
    assert by_step == {1: (0.35, 2), 2: (round((0.35 + 0.20 + 0.10) / 3, 4), 3), 3: (0.45, 1)}
    assert [r.solve_rate for r in ex.hardest_problems(records, 2)] == [0.25, 0.5]
    assert [r.novelty for r in ex.most_novel_problems(records, 2)] == [0.45, 0.40]


@pytest.mark.parametrize("method", ["pca", "auto"])
def test_embedding_map_one_point_per_entry(method):
    pool = synthetic_pool()
    emap = ex.embedding_map(pool, method)
    assert emap.coords.shape == (len(pool.entries), 2)  # 7 pool entries (seed + 6 legal), one point each
    assert emap.ids == [r.id for r in pool.entries]
    assert emap.steps == [0, 1, 1, 2, 2, 2, 3]
    assert np.isfinite(emap.coords).all()


def test_embedding_map_fills_gaps_with_an_embedder_and_handles_tiny_pools():
    pool = ProblemPool.from_seed()
    assert ex.embedding_map(pool).method == "none"  # no embedding at all
    pool.add([ProblemRecord(id=pool.new_id(), problem="another", in_pool=True, step=1)])
    emap = ex.embedding_map(pool, "pca", embedder=lambda texts: np.eye(len(texts), 4, dtype=np.float32))
    assert emap.coords.shape == (2, 2) and emap.method == "pca"
    with pytest.raises(ValueError, match="method"):
        ex.embedding_map(pool, "tsne")


def test_summary():
    s = ex.summarize_pool(synthetic_pool().history)
    assert (s["generated"], s["legal"], s["pool_size"], s["steps"]) == (9, 6, 7, 3)
    assert s["solve_rate_mean"] == pytest.approx(np.mean([0.25, 0.75, 0.75, 0.75, 1.0, 0.5]))


def test_figures_are_drawn_for_full_and_empty_pools():
    for pool in (synthetic_pool(), ProblemPool.from_seed()):  # the empty one draws "no ... yet" panels
        figures = ex.exploration_figures(pool)
        assert set(figures) == set(ex.FIGURES)
        for fig in figures.values():
            assert fig.axes  # something was drawn


def test_report_files(run_dir):
    report = ex.write_exploration_report(run_dir)
    assert report == run_dir / "explore" / "report.md"
    text = report.read_text()
    assert "| 1 | 4 | 2 | 2 | 0.50 |" in text  # per-step row
    assert "- algebra: 4" in text
    assert "- no_problem: 1" in text
    for key in ex.FIGURES:
        png = run_dir / "explore" / f"{key}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"({key}.png)" in text
    assert json.loads((run_dir / "explore" / "summary.json").read_text())["legal"] == 6


def test_explore_pool_cli(run_dir, tmp_path):
    out = tmp_path / "elsewhere"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "explore_pool.py"), str(run_dir), "--out", str(out), "--method", "pca"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "# Pool exploration" in proc.stdout
    assert (out / "embedding_map.png").is_file()


def test_explore_pool_cli_missing_pool(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "explore_pool.py"), str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: no pool file at {tmp_path / 'nope' / POOL_FILE}"]
