"""Statistics of what a run generated: its pool (``pool.jsonl`` and embeddings), per step, per concept, per reason.

Every statistic is a pure function of the pool records.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.checkpointing import find_run_file
from opensir_lite.pool import POOL_FILE, ProblemPool, ProblemRecord

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


SOLVE_RATE_BINS = 10  # histogram bins over [0, 1]


GENERATED_SOURCES = ("teacher", "seeding")  # ProblemRecord.source of problems the model wrote


# ---- loading ----------------------------------------------------------------------------------------------
def find_pool_file(run_dir: str | Path) -> Path:
    """``RUN_DIR/pool.jsonl`` (or the path itself when it is a pool file); FileNotFoundError names what is missing."""
    return find_run_file(run_dir, POOL_FILE, "pool file")


def load_run_pool(run_dir: str | Path) -> ProblemPool:
    """The pool of a run folder, with the embeddings cached beside it."""
    return ProblemPool.from_jsonl(find_pool_file(run_dir))


def generated(records: Sequence[ProblemRecord]) -> list[ProblemRecord]:
    """The teacher's problems, in training or seeding (the seed and entries of a given pool file excluded)."""
    return [r for r in records if r.source in GENERATED_SOURCES]


# ---- statistics -------------------------------------------------------------------------------------------
@dataclass
class StepCounts:
    step: int
    generated: int  # teacher outputs
    legal: int
    added: int  # in the pool now (evicted entries no longer count)

    @property
    def legal_ratio(self) -> float:
        return self.legal / self.generated if self.generated else 0.0


def problems_per_step(records: Sequence[ProblemRecord]) -> list[StepCounts]:
    """Per training step: teacher outputs, legal problems and problems added to the pool, ordered by step."""
    by_step: dict[int, StepCounts] = {}
    for r in generated(records):
        c = by_step.setdefault(r.step, StepCounts(r.step, 0, 0, 0))
        c.generated += 1
        c.legal += int(r.legal)
        c.added += int(r.in_pool)
    return [by_step[s] for s in sorted(by_step)]


def illegal_reasons(records: Sequence[ProblemRecord]) -> Counter:
    """Why teacher outputs were illegal: ``no_problem``, ``ellipsis_problem``, ``no_valid_answer``, ..."""
    return Counter(r.reason or "unknown" for r in generated(records) if not r.legal)


def solve_rate_histogram(
    records: Sequence[ProblemRecord], bins: int = SOLVE_RATE_BINS
) -> tuple[list[int], list[float]]:
    """(counts, bin edges) of the solve rates of legal generated problems over [0, 1]."""
    rates = [r.solve_rate for r in generated(records) if r.legal and r.solve_rate is not None]
    counts, edges = np.histogram(rates, bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts], [float(e) for e in edges]


def concept_counts(records: Sequence[ProblemRecord], legal_only: bool = True) -> Counter:
    """How often each concept (lower-cased, stripped) was named by the teacher."""
    counts: Counter = Counter()
    for r in generated(records):
        if legal_only and not r.legal:
            continue
        counts.update(c.strip().lower() for c in r.concepts if c.strip())
    return counts


def concepts_over_time(
    records: Sequence[ProblemRecord], top: int = 8, legal_only: bool = True
) -> tuple[list[int], dict[str, list[int]]]:
    """(steps, {concept: count per step}) for the ``top`` most frequent concepts overall."""
    overall = concept_counts(records, legal_only)
    names = [name for name, _ in overall.most_common(top)]
    steps = sorted({r.step for r in generated(records)})
    series = {name: [0] * len(steps) for name in names}
    index = {s: i for i, s in enumerate(steps)}
    for r in generated(records):
        if legal_only and not r.legal:
            continue
        for c in {c.strip().lower() for c in r.concepts}:
            if c in series:
                series[c][index[r.step]] += 1
    return steps, series


def novelty_by_step(records: Sequence[ProblemRecord]) -> list[tuple[int, float, int]]:
    """(step, mean novelty, n) of the legal problems of each step that has any."""
    by_step: dict[int, list[float]] = {}
    for r in generated(records):
        if r.legal and r.novelty is not None:
            by_step.setdefault(r.step, []).append(r.novelty)
    return [(s, float(np.mean(v)), len(v)) for s, v in sorted(by_step.items())]


def hardest_problems(records: Sequence[ProblemRecord], k: int = 5) -> list[ProblemRecord]:
    """Legal problems with the lowest solve rate (ties: most novel first)."""
    legal = [r for r in generated(records) if r.legal and r.solve_rate is not None]
    return sorted(legal, key=lambda r: (r.solve_rate, -(r.novelty or 0.0), r.id))[:k]


def most_novel_problems(records: Sequence[ProblemRecord], k: int = 5) -> list[ProblemRecord]:
    """Legal problems with the highest novelty."""
    legal = [r for r in generated(records) if r.legal and r.novelty is not None]
    return sorted(legal, key=lambda r: (-r.novelty, r.id))[:k]


@dataclass
class EmbeddingMap:
    coords: np.ndarray  # (n, 2)
    ids: list[int]
    steps: list[int]
    method: str  # "pca", "umap" or "none" (fewer than two points)


def embedding_map(
    pool: ProblemPool, method: str = "auto", embedder: Callable[[list[str]], np.ndarray] | None = None
) -> EmbeddingMap:
    """A 2-D map of the pool entries' embeddings: one point per entry that has an embedding (all of them when an
    ``embedder`` is given to fill the gaps). ``method``: ``pca`` (scikit-learn), ``umap`` (umap-learn) or ``auto``
    (UMAP where installed and there are enough points, else PCA)."""
    if method not in ("auto", "pca", "umap"):
        raise ValueError(f"method must be auto, pca or umap, got {method!r}")
    if embedder is not None:
        pool.ensure_embeddings(embedder)
    entries = [r for r in pool.entries if r.id in pool.embeddings]
    ids, steps = [r.id for r in entries], [r.step for r in entries]
    if len(entries) < 2:
        return EmbeddingMap(np.zeros((len(entries), 2)), ids, steps, "none")
    x = pool.embedding_matrix(ids).astype(np.float64)
    if method in ("auto", "umap") and len(entries) >= 16:
        try:
            import umap  # optional: pip install umap-learn

            coords = umap.UMAP(n_components=2, random_state=0, n_neighbors=min(15, len(entries) - 1)).fit_transform(x)
            return EmbeddingMap(np.asarray(coords), ids, steps, "umap")
        except ImportError:
            if method == "umap":
                raise
    from sklearn.decomposition import PCA

    n_components = min(2, x.shape[0], x.shape[1])
    coords = PCA(n_components=n_components, random_state=0).fit_transform(x)
    if coords.shape[1] < 2:
        coords = np.concatenate([coords, np.zeros((coords.shape[0], 2 - coords.shape[1]))], axis=1)
    return EmbeddingMap(coords, ids, steps, "pca")


def summarize_pool(records: Sequence[ProblemRecord]) -> dict[str, Any]:
    """The headline numbers of a pool (used by the report, the model card and the notebooks)."""
    gen = generated(records)
    legal = [r for r in gen if r.legal]
    rates = [r.solve_rate for r in legal if r.solve_rate is not None]
    novelty = [r.novelty for r in legal if r.novelty is not None]
    return {
        "generated": len(gen),
        "legal": len(legal),
        "legal_ratio": len(legal) / len(gen) if gen else 0.0,
        "pool_size": sum(1 for r in records if r.in_pool),
        "steps": len({r.step for r in gen}),
        "solve_rate_mean": float(np.mean(rates)) if rates else None,
        "novelty_mean": float(np.mean(novelty)) if novelty else None,
        "illegal_reasons": dict(illegal_reasons(records).most_common()),
        "top_concepts": dict(concept_counts(records).most_common(10)),
    }
