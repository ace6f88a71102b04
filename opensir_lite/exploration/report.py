"""The exploration report: the figures as PNGs and a Markdown summary of a run's pool (``scripts/explore_pool.py`` and
the end of a training run), and the nearest neighbours of a problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.checkpointing import METRICS_FILE
from opensir_lite.curves import write_training_plots
from opensir_lite.exploration.figures import FIGURES, exploration_figures
from opensir_lite.exploration.statistics import (
    hardest_problems,
    load_run_pool,
    most_novel_problems,
    problems_per_step,
    solve_rate_histogram,
    summarize_pool,
)
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER

REPORT_FILE = "report.md"


EXPLORE_DIRNAME = "explore"  # inside the run folder


def format_optional(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when there is none (a statistic of an empty pool)."""
    return "-" if value is None else format(value, spec)


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_report(records: Sequence[ProblemRecord], figure_files: dict[str, str], k: int = 5) -> str:
    """The Markdown report: summary, per-step table, causes, concepts, hardest and most novel problems, figures."""
    s = summarize_pool(records)
    f = format_optional
    lines = [
        "# Pool exploration",
        "",
        f"- generated problems: {s['generated']} over {s['steps']} steps",
        f"- legal: {s['legal']} ({s['legal_ratio']:.1%})",
        f"- pool size: {s['pool_size']}",
        f"- mean solve rate (legal): {f(s['solve_rate_mean'])}",
        f"- mean novelty (legal): {f(s['novelty_mean'])}",
        "",
        "## Problems per step",
        "",
        "| step | generated | legal | in pool | legal ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c.step} | {c.generated} | {c.legal} | {c.added} | {c.legal_ratio:.2f} |"
        for c in problems_per_step(records)
    ]
    lines += ["", "## Causes of illegal problems", ""]
    lines += [f"- {reason}: {n}" for reason, n in s["illegal_reasons"].items()] or ["- none"]
    counts, edges = solve_rate_histogram(records)
    lines += ["", "## Solve-rate histogram (legal problems)", "", "| solve rate | problems |", "|---|---:|"]
    lines += [f"| {edges[i]:.1f}–{edges[i + 1]:.1f} | {n} |" for i, n in enumerate(counts)]
    lines += ["", "## Most frequent concepts", ""]
    lines += [f"- {name}: {n}" for name, n in s["top_concepts"].items()] or ["- none"]
    for title, chosen in (
        ("Hardest problems", hardest_problems(records, k)),
        ("Most novel problems", most_novel_problems(records, k)),
    ):
        lines += ["", f"## {title}", "", "| id | step | solve rate | novelty | problem |", "|---:|---:|---:|---:|---|"]
        lines += [
            f"| {r.id} | {r.step} | {f(r.solve_rate, '.2f')} | {f(r.novelty)} | {one_line(r.problem)} |" for r in chosen
        ] or ["| - | - | - | - | none yet |"]
    if figure_files:
        lines += ["", "## Figures", ""]
        lines += [f"![{FIGURES.get(key, key)}]({name})" for key, name in figure_files.items()]
    return "\n".join(lines) + "\n"


def write_exploration_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    lower: float = GATE_LOWER,
    upper: float = GATE_UPPER,
    method: str = "auto",
    embedder=None,
) -> Path:
    """Write the PNG figures, ``summary.json`` and ``report.md`` into ``out_dir`` (default ``RUN_DIR/explore``);
    returns the report path."""
    pool = load_run_pool(run_dir)
    if out_dir:
        out = Path(out_dir)
    else:  # beside the pool: RUN_DIR/explore, or explore/ next to a pool file given directly
        run = Path(run_dir)
        out = (run if run.is_dir() else run.parent) / EXPLORE_DIRNAME
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, fig in exploration_figures(pool, lower, upper, method, embedder).items():
        fig.savefig(out / f"{key}.png", dpi=110)
        files[key] = f"{key}.png"
    (out / "summary.json").write_text(json.dumps(summarize_pool(pool.history), indent=2) + "\n", encoding="utf-8")
    report = out / REPORT_FILE
    report.write_text(format_report(pool.history, files), encoding="utf-8")
    return report


# ---- notebooks: neighbours, the gate, benchmark comparison --------------------------------------------------
def nearest_neighbours(
    pool: ProblemPool, text: str, embedder: Callable[[list[str]], np.ndarray], k: int = 5
) -> list[tuple[ProblemRecord, float]]:
    """The ``k`` pool entries most similar (cosine) to ``text``, most similar first."""
    pool.ensure_embeddings(embedder)
    entries = [r for r in pool.entries if r.id in pool.embeddings]
    if not entries:
        return []
    query = np.asarray(embedder([text]), dtype=np.float64)[0]
    matrix = pool.embedding_matrix([r.id for r in entries]).astype(np.float64)
    sims = matrix @ query / np.maximum(np.linalg.norm(matrix, axis=1) * np.linalg.norm(query), 1e-10)
    order = np.argsort(-sims, kind="stable")[:k]
    return [(entries[i], float(sims[i])) for i in order]


def write_run_plots(run_dir: str | Path, lower: float = GATE_LOWER, upper: float = GATE_UPPER) -> list[Path]:
    """The end of a run (a report of the whole run, so it lives here, above the curves): ``training_curves.png`` and the pool exploration (``explore/report.md`` and figures)."""
    written = []
    if (Path(run_dir) / METRICS_FILE).is_file():
        written.append(write_training_plots(run_dir, lower=lower, upper=upper))
    written.append(write_exploration_report(run_dir, lower=lower, upper=upper))
    return written
