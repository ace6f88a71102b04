"""The pool explorer: one row per problem with its students' answers and program check, filters, an embedding map, a
notebook widget (:class:`PoolExplorer`) and a standalone HTML page (:func:`write_explorer_html`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opensir_lite.exploration.report import EXPLORE_DIRNAME, format_optional, one_line
from opensir_lite.exploration.statistics import concept_counts, embedding_map, load_run_pool, summarize_pool
from opensir_lite.pool import ProblemPool, read_rows_by_id

# ---- the interactive explorer: one row per problem, an embedding map, filters, a detail view --------------------
EVIDENCE_MISSING = (
    "This run kept no round evidence (round_evidence.jsonl is missing: a run from before it existed, or "
    "evidence_completion_chars -1), so the student answers behind this solve rate are not available."
)


EXPLORER_FILE = "explorer.html"


EXPLORER_TEMPLATE = Path(__file__).parents[1] / "data" / "explorer_template.html"


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

    fmt = format_optional
    return (
        f"<b>#{row['id']}</b> step {row['step']}<br>{html.escape(one_line(row['problem'], 120))}<br>"
        f"solve rate {fmt(row['solve_rate'], '.2f')} · majority {html.escape(str(row['majority_answer']))} · "
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


def static_map(rows: Sequence[dict[str, Any]], color_by: str = "step"):
    """The map of :func:`explorer_map` as a matplotlib figure (a PNG in a committed notebook, where plotly's JSON
    shows nothing on GitHub): the same points, coloured by ``step`` or ``solve_rate``."""
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["x"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    values = [r[color_by] if r[color_by] is not None else float("nan") for r in points]
    dots = ax.scatter([r["x"] for r in points], [r["y"] for r in points], c=values, cmap="viridis", s=16)
    fig.colorbar(dots, ax=ax, label=color_by.replace("_", " "))
    ax.set_title(f"{len(points)} pool problems (embedding map)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    plt.close(fig)
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
                lines.append(f"  - `{one_line(s['completion'], 200)}`")
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
        self.select.options = [(f"#{r['id']} s{r['step']} {one_line(r['problem'] or r['reason'] or '', 90)}", r["id"])
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
