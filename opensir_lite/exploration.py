"""Exploring what a run generated: statistics of ``pool.jsonl`` (and its embeddings), figures, and a report.

Every statistic is a pure function of the pool records; every ``plot_*`` returns a matplotlib ``Figure`` (built
without pyplot, so it works headless and displays in a notebook); :func:`write_exploration_report` writes the PNGs and
a Markdown report for ``scripts/explore_pool.py`` and the end of a training run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.checkpointing import find_run_file
from opensir_lite.pool import POOL_FILE, ProblemPool, ProblemRecord, read_rows_by_id
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER

logger = logging.getLogger(__name__)

SOLVE_RATE_BINS = 10  # histogram bins over [0, 1]
REPORT_FILE = "report.md"
GENERATED_SOURCES = ("teacher", "seeding")  # ProblemRecord.source of problems the model wrote
EXPLORE_DIRNAME = "explore"  # inside the run folder


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


def format_optional(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when there is none (a statistic of an empty pool)."""
    return "-" if value is None else format(value, spec)


def _one_line(text: str, limit: int = 160) -> str:
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
            f"| {r.id} | {r.step} | {f(r.solve_rate, '.2f')} | {f(r.novelty)} | {_one_line(r.problem)} |"
            for r in chosen
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


# ---- the interactive explorer: one row per problem, an embedding map, filters, a detail view --------------------
EVIDENCE_MISSING = (
    "This run kept no round evidence (round_evidence.jsonl is missing: a run from before it existed, or "
    "evidence_completion_chars -1), so the student answers behind this solve rate are not available."
)
EXPLORER_FILE = "explorer.html"
EXPLORER_TEMPLATE = Path(__file__).parent / "data" / "explorer_template.html"


def load_evidence(run_dir: str | Path) -> dict[int, dict[str, Any]] | None:
    """The round evidence of a run keyed by problem id, or None when the run has no evidence file (lines cut by a
    crash are skipped)."""
    from opensir_lite.checkpointing import EVIDENCE_FILE

    run = Path(run_dir)
    path = (run if run.is_dir() else run.parent) / EVIDENCE_FILE
    return read_rows_by_id(path) if path.is_file() else None


PROGRAM_FILTERS = ("any", "checked", "disagrees", "agrees", "failed", "unchecked")


def program_status(row: dict[str, Any]) -> str:
    """``disagrees`` / ``agrees`` (the program answer against the student majority), ``failed`` (checked, no
    comparable answer) or ``unchecked``."""
    if row.get("program_agrees") is True:
        return "agrees"
    if row.get("program_agrees") is False:
        return "disagrees"
    return "failed" if row.get("program_failure") else "unchecked"


def load_program_checks(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    """The rows of a run's ``program_checks.jsonl`` (``scripts/check_programs.py``) keyed by id; {} without one."""
    from opensir_lite.programs import PROGRAM_CHECKS_FILE, read_checks

    run = Path(run_dir)
    return read_checks((run if run.is_dir() else run.parent) / PROGRAM_CHECKS_FILE)


def explorer_rows(
    pool: ProblemPool,
    evidence: dict[int, dict[str, Any]] | None,
    method: str = "pca",
    programs: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready row per problem of the pool's history: its fields, the reference problem's text, map
    coordinates (pool entries with an embedding), its round evidence when kept, and its program check (from
    ``programs``, the rows of ``program_checks.jsonl``, else from the evidence of a run with ``program_check``)."""
    emap = embedding_map(pool, method)
    coords = {i: (float(x), float(y)) for i, (x, y) in zip(emap.ids, emap.coords, strict=True)}
    texts = {r.id: r.problem for r in pool.history}
    rows = []
    for r in pool.history:
        ev = (evidence or {}).get(r.id)
        x, y = coords.get(r.id, (None, None))
        rows.append({
            "id": r.id, "step": r.step, "problem": r.problem, "concepts": list(r.concepts), "legal": r.legal,
            "reason": r.reason, "in_pool": r.in_pool, "source": r.source, "reference_id": r.reference_id,
            "reference": texts.get(r.reference_id) if r.reference_id is not None else None,
            "solve_rate": r.solve_rate, "majority_answer": r.majority_answer, "n_valid": r.n_valid_answers,
            "novelty": r.novelty, "combined_score": r.combined_score, "rewards": dict(r.rewards),
            "teacher_output": (ev or {}).get("teacher_output") or r.teacher_output,
            "students": (ev or {}).get("students"), "majority_class": (ev or {}).get("majority_class"), "x": x, "y": y,
            "program_answer": (ev or {}).get("program_answer"), "program_agrees": (ev or {}).get("program_agrees"),
            "program_failure": (ev or {}).get("program_failure"), "program": (ev or {}).get("program"),
        })  # fmt: skip
        check = (programs or {}).get(r.id)
        if check is not None:
            rows[-1].update(program_answer=check.get("program_answer"), program_agrees=check.get("agrees"),
                            program_failure=check.get("failure"), program=check.get("program"))  # fmt: skip
        rows[-1]["program_status"] = program_status(rows[-1])
    return rows


def filter_rows(
    rows: Sequence[dict[str, Any]],
    steps: tuple[int, int] | None = None,
    legal: str = "all",
    reason: str | None = None,
    concept: str | None = None,
    solve_rate: tuple[float, float] | None = None,
    search: str = "",
    program: str = "any",
) -> list[dict[str, Any]]:
    """The explorer's filters (the HTML page applies the same rules in JavaScript): a step range, legal / illegal,
    an illegal reason, a concept, a solve-rate range (rows without one are dropped when it is set), a
    case-insensitive text search over the problem and the teacher output, and the program check (one of
    :data:`PROGRAM_FILTERS`: ``disagrees`` keeps the problems whose program disagrees with the majority)."""
    if program not in PROGRAM_FILTERS:
        raise ValueError(f"program filter must be one of {', '.join(PROGRAM_FILTERS)}, got {program!r}")
    out = []
    needle = search.strip().lower()
    for row in rows:
        if steps and not steps[0] <= row["step"] <= steps[1]:
            continue
        if (legal == "legal" and not row["legal"]) or (legal == "illegal" and row["legal"]):
            continue
        if reason and row["reason"] != reason:
            continue
        if concept and concept not in row["concepts"]:
            continue
        if solve_rate and (row["solve_rate"] is None or not solve_rate[0] <= row["solve_rate"] <= solve_rate[1]):
            continue
        if needle and needle not in (row["problem"] + " " + (row["teacher_output"] or "")).lower():
            continue
        status = row.get("program_status", "unchecked")
        if program != "any" and not (status == program or (program == "checked" and status != "unchecked")):
            continue
        out.append(row)
    return out


def _hover(row: dict[str, Any]) -> str:
    import html

    def fmt(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    return (
        f"<b>#{row['id']}</b> step {row['step']}<br>{html.escape(_one_line(row['problem'], 120))}<br>"
        f"solve rate {fmt(row['solve_rate'])} · majority {html.escape(str(row['majority_answer']))} · "
        f"novelty {fmt(row['novelty'], '.3f')}<br>{html.escape(', '.join(row['concepts']))}"
    )


def explorer_map(rows: Sequence[dict[str, Any]], color_by: str = "step"):
    """An interactive plotly map of the rows that have coordinates, coloured by ``step``, ``solve_rate`` or
    ``concept`` (the ten most frequent, the rest grey); hovering shows problem, solve rate, majority answer,
    novelty and concepts."""
    import plotly.graph_objects as go

    points = [r for r in rows if r["x"] is not None]
    fig = go.Figure()
    if color_by == "concept":
        top = [c for c, _ in Counter(c for r in points for c in r["concepts"]).most_common(10)]
        groups: dict[str, list] = {}
        for r in points:
            key = next((c for c in r["concepts"] if c in top), "other")
            groups.setdefault(key, []).append(r)
        for key, members in sorted(groups.items(), key=lambda kv: (kv[0] == "other", kv[0])):
            fig.add_trace(go.Scattergl(
                x=[r["x"] for r in members], y=[r["y"] for r in members], mode="markers", name=key,
                text=[_hover(r) for r in members], hoverinfo="text", customdata=[r["id"] for r in members],
                marker={"size": 7, **({"color": "lightgray"} if key == "other" else {})},
            ))  # fmt: skip
    else:
        values = [r[color_by] if r[color_by] is not None else float("nan") for r in points]
        fig.add_trace(go.Scattergl(
            x=[r["x"] for r in points], y=[r["y"] for r in points], mode="markers", name="problems",
            text=[_hover(r) for r in points], hoverinfo="text", customdata=[r["id"] for r in points],
            marker={"size": 7, "color": values, "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": color_by.replace("_", " ")}},
        ))  # fmt: skip
    fig.update_layout(
        title=f"{len(points)} pool problems (embedding map)", xaxis={"visible": False}, yaxis={"visible": False},
        height=480, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"font": {"size": 10}},
    )  # fmt: skip
    return fig


def problem_detail(row: dict[str, Any]) -> str:
    """A Markdown account of one problem: its reference problem, the teacher output, the student answers grouped
    by vote class (the majority marked) and each reward; says what is missing for runs without evidence."""
    lines = [f"### Problem #{row['id']} (step {row['step']}, {'legal' if row['legal'] else 'illegal: ' + str(row['reason'])})",
             "", row["problem"] or "(no problem parsed)", ""]  # fmt: skip
    lines += [f"**Reference problem** (#{row['reference_id']}): {row['reference'] or '-'}", ""]
    lines += [f"**Concepts**: {', '.join(row['concepts']) or '-'}", ""]
    if row["teacher_output"]:
        lines += ["**Teacher output**:", "", "```", row["teacher_output"], "```", ""]
    if row["rewards"]:
        lines += ["| reward | value |", "|---|---:|"] + [f"| {k} | {v:.3f} |" for k, v in row["rewards"].items()] + [""]
    lines.append(
        f"solve rate {format_optional(row['solve_rate'], '.3f')}, majority answer {row['majority_answer']!r}, "
        f"{row['n_valid']} valid answers, novelty {format_optional(row['novelty'])}"
    )
    if row.get("program_status", "unchecked") != "unchecked":
        verdict = {"agrees": "agrees with the majority", "disagrees": "**disagrees** with the majority",
                   "failed": f"failed ({row['program_failure']})"}[row["program_status"]]  # fmt: skip
        lines += ["", f"**Program check**: answer {row['program_answer']!r}, {verdict}"]
        if row.get("program"):
            lines += ["", "```python", row["program"].rstrip(), "```"]
    if not row["legal"]:
        return "\n".join(lines)
    if row["students"] is None:
        return "\n".join([*lines, "", EVIDENCE_MISSING])
    classes: dict[Any, list] = {}
    for s in row["students"]:
        classes.setdefault(s["class"], []).append(s)
    lines += ["", "**Student answers by vote class**:"]
    for cls, members in sorted(classes.items(), key=lambda kv: (kv[0] is None, -len(kv[1]))):
        label = (
            "no valid answer"
            if cls is None
            else f"class {cls}" + (" (majority)" if cls == row["majority_class"] else "")
        )
        lines.append(f"- {label}: {len(members)} x {members[0]['answer']!r}")
        for s in members[:2]:
            if s.get("completion"):
                lines.append(f"  - `{_one_line(s['completion'], 200)}`")
    return "\n".join(lines)


class PoolExplorer:
    """The notebook explorer: filters (step range, legal / illegal and reason, concept, solve-rate range, text
    search, colour), the plotly map, a table of the filtered problems and the detail view of a selected one.
    Display it with ``PoolExplorer(run_dir).widget``."""

    def __init__(self, run_dir: str | Path, method: str = "pca", page_size: int = 50):
        import ipywidgets as w

        pool = load_run_pool(run_dir)
        self.rows = explorer_rows(pool, load_evidence(run_dir), method, load_program_checks(run_dir))
        self.by_id = {r["id"]: r for r in self.rows}
        self.page_size = page_size
        steps = [r["step"] for r in self.rows] or [0]
        concepts = [c for c, _ in concept_counts(pool.history, legal_only=False).most_common()]
        reasons = sorted({r["reason"] for r in self.rows if r["reason"]})
        self.controls = {
            "steps": w.IntRangeSlider(value=(min(steps), max(steps)), min=min(steps), max=max(steps), description="steps"),
            "legal": w.Dropdown(options=["all", "legal", "illegal"], value="all", description="legal"),
            "reason": w.Dropdown(options=["any", *reasons], value="any", description="reason"),
            "concept": w.Dropdown(options=["any", *concepts], value="any", description="concept"),
            "solve_rate": w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05, description="solve rate"),
            "any_rate": w.Checkbox(value=True, description="include rows without a solve rate"),
            "search": w.Text(value="", description="search"),
            "program": w.Dropdown(options=list(PROGRAM_FILTERS), value="any", description="program"),
            "color": w.Dropdown(options=["step", "solve_rate", "concept"], value="step", description="colour"),
        }  # fmt: skip
        self.select = w.Select(options=[], rows=12, layout=w.Layout(width="100%"))
        self.map_out, self.detail = w.Output(), w.Output()
        for c in self.controls.values():
            c.observe(lambda _: self.refresh(), names="value")
        self.select.observe(lambda ch: self.show(ch["new"]), names="value")
        self.widget = w.VBox([w.HBox(list(self.controls.values())[:4]), w.HBox(list(self.controls.values())[4:]),
                              self.map_out, self.select, self.detail])  # fmt: skip
        self.refresh()

    def filtered(self) -> list[dict[str, Any]]:
        c = self.controls
        rate = None if c["any_rate"].value and c["solve_rate"].value == (0.0, 1.0) else tuple(c["solve_rate"].value)
        return filter_rows(
            self.rows, tuple(c["steps"].value), c["legal"].value, None if c["reason"].value == "any" else c["reason"].value,
            None if c["concept"].value == "any" else c["concept"].value, rate, c["search"].value, c["program"].value,
        )  # fmt: skip

    def refresh(self) -> None:
        from IPython.display import display

        rows = self.filtered()
        self.select.options = [(f"#{r['id']} s{r['step']} {_one_line(r['problem'] or r['reason'] or '', 90)}", r["id"])
                               for r in rows[: self.page_size * 4]]  # fmt: skip
        self.map_out.clear_output(wait=True)
        with self.map_out:
            display(explorer_map(rows, self.controls["color"].value))

    def show(self, problem_id: int | None) -> None:
        from IPython.display import Markdown, display

        self.detail.clear_output(wait=True)
        if problem_id is not None:
            with self.detail:
                display(Markdown(problem_detail(self.by_id[problem_id])))


def write_explorer_html(run_dir: str | Path, out: str | Path | None = None, method: str = "pca") -> Path:
    """One self-contained HTML file (plotly inlined; no server, no network) with the explorer: the map, filters,
    the paginated table and the detail view. Default: ``RUN_DIR/explore/explorer.html``."""
    import html

    from plotly.offline import get_plotlyjs

    pool = load_run_pool(run_dir)
    rows = explorer_rows(pool, load_evidence(run_dir), method, load_program_checks(run_dir))
    run = Path(run_dir)
    path = Path(out) if out else (run if run.is_dir() else run.parent) / EXPLORE_DIRNAME / EXPLORER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"rows": rows, "has_evidence": any(r["students"] is not None for r in rows),
                       "has_programs": any(r["program_status"] != "unchecked" for r in rows),
                       "evidence_missing": EVIDENCE_MISSING, "summary": summarize_pool(pool.history),
                       "title": str(run.resolve().name)}, ensure_ascii=False)  # fmt: skip
    page = EXPLORER_TEMPLATE.read_text(encoding="utf-8")
    page = page.replace("__TITLE__", html.escape(run.resolve().name))
    page = page.replace("/*__PLOTLY__*/", get_plotlyjs()).replace("/*__DATA__*/", data.replace("</", "<\\/"))
    from opensir_lite.pool import atomic_write_text

    atomic_write_text(path, page)
    return path
