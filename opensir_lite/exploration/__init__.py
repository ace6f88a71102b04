"""Exploring what a run generated: statistics of ``pool.jsonl`` (and its embeddings), figures, a report and the
interactive explorer, one module each; their public names are importable from here.

Every statistic is a pure function of the pool records (:mod:`.statistics`); every ``plot_*`` returns a matplotlib
``Figure`` (:mod:`.figures`); :func:`write_exploration_report` writes the PNGs and a Markdown report
(:mod:`.report`); :class:`PoolExplorer` and :func:`write_explorer_html` browse the problems (:mod:`.explorer`).
"""

from opensir_lite.exploration.explorer import (  # noqa: F401
    EVIDENCE_MISSING,
    EXPLORER_FILE,
    EXPLORER_TEMPLATE,
    PROGRAM_FILTERS,
    PoolExplorer,
    explorer_map,
    explorer_rows,
    filter_rows,
    load_evidence,
    load_program_checks,
    problem_detail,
    program_status,
    static_map,
    write_explorer_html,
)
from opensir_lite.exploration.figures import (  # noqa: F401
    FIGURES,
    exploration_figures,
    plot_benchmark_comparison,
    plot_concepts_over_time,
    plot_embedding_map,
    plot_illegal_reasons,
    plot_novelty_over_time,
    plot_problems_per_step,
    plot_solvability_gate,
    plot_solve_rate_histogram,
)
from opensir_lite.exploration.report import (  # noqa: F401
    EXPLORE_DIRNAME,
    REPORT_FILE,
    format_optional,
    format_report,
    nearest_neighbours,
    one_line,
    write_exploration_report,
    write_run_plots,
)
from opensir_lite.exploration.statistics import (  # noqa: F401
    GENERATED_SOURCES,
    SOLVE_RATE_BINS,
    EmbeddingMap,
    StepCounts,
    concept_counts,
    concepts_over_time,
    embedding_map,
    find_pool_file,
    generated,
    hardest_problems,
    illegal_reasons,
    load_run_pool,
    most_novel_problems,
    novelty_by_step,
    problems_per_step,
    solve_rate_histogram,
    summarize_pool,
)
