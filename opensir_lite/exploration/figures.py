"""Figures of a run's pool: every ``plot_*`` returns a matplotlib ``Figure`` (built without pyplot, so it works headless
and displays in a notebook).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from opensir_lite.exploration.statistics import (
    EmbeddingMap,
    concepts_over_time,
    embedding_map,
    generated,
    illegal_reasons,
    novelty_by_step,
    problems_per_step,
    solve_rate_histogram,
)
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER


# ---- figures ----------------------------------------------------------------------------------------------
def _figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_problems_per_step(records: Sequence[ProblemRecord]):
    """Bars: teacher outputs, legal problems and pool additions per step; line: legal ratio."""
    fig, ax = _figure()
    counts = problems_per_step(records)
    if not counts:
        _empty(ax, "no generated problem yet")
        return fig
    steps = np.array([c.step for c in counts])
    width = 0.28
    ax.bar(steps - width, [c.generated for c in counts], width, label="generated")
    ax.bar(steps, [c.legal for c in counts], width, label="legal")
    ax.bar(steps + width, [c.added for c in counts], width, label="in pool")
    ax.set_xlabel("step")
    ax.set_ylabel("problems")
    ratio_ax = ax.twinx()
    ratio_ax.plot(steps, [c.legal_ratio for c in counts], "k.-", label="legal ratio")
    ratio_ax.set_ylim(0, 1.05)
    ratio_ax.set_ylabel("legal ratio")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Problems per step")
    return fig


def plot_illegal_reasons(records: Sequence[ProblemRecord]):
    fig, ax = _figure()
    reasons = illegal_reasons(records).most_common()
    if not reasons:
        _empty(ax, "every generated problem was legal")
        return fig
    ax.barh([r for r, _ in reasons][::-1], [n for _, n in reasons][::-1])
    ax.set_xlabel("teacher outputs")
    ax.set_title("Why problems were illegal")
    return fig


def plot_solve_rate_histogram(records: Sequence[ProblemRecord], lower: float = GATE_LOWER, upper: float = GATE_UPPER):
    fig, ax = _figure()
    counts, edges = solve_rate_histogram(records)
    if not sum(counts):
        _empty(ax, "no legal problem with a solve rate yet")
        return fig
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="white")
    ax.axvspan(lower, upper, color="green", alpha=0.12, label=f"gate [{lower}, {upper}]")
    ax.set_xlabel("student solve rate")
    ax.set_ylabel("legal problems")
    ax.legend(fontsize="small")
    ax.set_title("Solve rates of legal problems")
    return fig


def plot_concepts_over_time(records: Sequence[ProblemRecord], top: int = 8):
    fig, ax = _figure()
    steps, series = concepts_over_time(records, top)
    if not series:
        _empty(ax, "no concept named in a legal problem yet")
        return fig
    bottom = np.zeros(len(steps))
    for name, values in series.items():
        ax.bar(steps, values, bottom=bottom, label=name)
        bottom += np.array(values)
    ax.set_xlabel("step")
    ax.set_ylabel("legal problems naming it")
    ax.legend(fontsize="x-small", ncols=2)
    ax.set_title(f"Top {len(series)} concepts over time")
    return fig


def plot_novelty_over_time(records: Sequence[ProblemRecord]):
    fig, ax = _figure()
    points = [(r.step, r.novelty) for r in generated(records) if r.legal and r.novelty is not None]
    if not points:
        _empty(ax, "no legal problem with a novelty yet")
        return fig
    ax.scatter(*zip(*points, strict=True), s=10, alpha=0.4, label="problem")
    means = novelty_by_step(records)
    ax.plot([m[0] for m in means], [m[1] for m in means], "r.-", label="step mean")
    ax.set_xlabel("step")
    ax.set_ylabel("novelty")
    ax.legend(fontsize="small")
    ax.set_title("Novelty of legal problems")
    return fig


def plot_embedding_map(emap: EmbeddingMap):
    fig, ax = _figure(6.4, 4.8)
    if not emap.ids:
        _empty(ax, "no pool embedding")
        return fig
    points = ax.scatter(emap.coords[:, 0], emap.coords[:, 1], c=emap.steps, cmap="viridis", s=18)
    fig.colorbar(points, ax=ax, label="step added")
    ax.set_title(f"Pool embeddings ({emap.method.upper()}, {len(emap.ids)} problems)")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


# ---- report -----------------------------------------------------------------------------------------------
FIGURES: dict[str, str] = {
    "problems_per_step": "Problems per step and legal ratio",
    "illegal_reasons": "Causes of illegal problems",
    "solve_rate_histogram": "Solve-rate histogram",
    "concepts_over_time": "Most frequent concepts over time",
    "novelty_over_time": "Novelty over time",
    "embedding_map": "Pool embeddings coloured by step",
}


def exploration_figures(
    pool: ProblemPool, lower: float = GATE_LOWER, upper: float = GATE_UPPER, method: str = "auto", embedder=None
) -> dict[str, Any]:
    """Every exploration figure of a pool, keyed as :data:`FIGURES`."""
    records = pool.history
    return {
        "problems_per_step": plot_problems_per_step(records),
        "illegal_reasons": plot_illegal_reasons(records),
        "solve_rate_histogram": plot_solve_rate_histogram(records, lower, upper),
        "concepts_over_time": plot_concepts_over_time(records),
        "novelty_over_time": plot_novelty_over_time(records),
        "embedding_map": plot_embedding_map(embedding_map(pool, method, embedder)),
    }


def plot_solvability_gate(lower: float = GATE_LOWER, upper: float = GATE_UPPER, num_generations: int = 8):
    """The solvability reward over the solve rate: the continuous formula and the values G samples can produce."""
    from opensir_lite.rewards import solvability_score

    fig, ax = _figure()
    grid = np.linspace(0, 1, 401)
    ax.plot(grid, [solvability_score(x, lower, upper, num_generations) for x in grid], label="solvability(s)")
    levels = [i / num_generations for i in range(num_generations + 1)]
    ax.plot(levels, [solvability_score(x, lower, upper, num_generations) for x in levels], "o",
            label=f"reachable with G={num_generations}")  # fmt: skip
    ax.axvspan(lower, upper, color="green", alpha=0.1, label=f"gate [{lower}, {upper}]")
    ax.set_xlabel("student solve rate s")
    ax.set_ylabel("reward")
    ax.legend(fontsize="small")
    ax.set_title("Solvability reward")
    return fig


def plot_benchmark_comparison(results: dict[str, dict[str, Any]], metric: str = "avg@1"):
    """Grouped bars with standard-error bars: ``results`` maps a label (``base``, ``adapter``) to the content of a
    ``results.json`` written by ``scripts/evaluate.py``."""
    fig, ax = _figure()
    benches = sorted({b for r in results.values() for b in r})
    if not benches:
        _empty(ax, "no results")
        return fig
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(benches))
    for j, (label, res) in enumerate(results.items()):
        values = [100 * res.get(b, {}).get("metrics", {}).get(metric, np.nan) for b in benches]
        errors = [100 * (res.get(b, {}).get("metrics", {}).get(f"{metric}_se") or 0.0) for b in benches]
        ax.bar(x + (j - (len(results) - 1) / 2) * width, values, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(x, benches)
    ax.set_ylabel(f"{metric} (%)")
    ax.legend(fontsize="small")
    ax.set_title(f"{metric} with standard errors")
    return fig
