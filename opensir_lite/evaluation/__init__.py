"""Benchmark evaluation: load a maths test set (Hub or local JSONL), sample answers with the student prompt,
grade them against the gold answer with math-verify under two protocols, and report avg@n, pass@k and maj@k with
standard errors per benchmark plus their macro average.

Protocols (every result reports both; ``--protocol`` picks the headline one and the sampling defaults):

- ``opensir``: the official ``evaluate.py``. Predictions are read with math-verify's expression and LaTeX
  extraction (so "The answer is 18." counts), gold answers are parsed per benchmark as the official code does,
  4096 new tokens, n=16, temperature 0.6, top_p 0.95.
- ``strict``: only the last ``\\boxed{}`` of a completion is the answer (the OpenSIR student prompt's format),
  compared with math-verify; greedy, 1024 tokens.

Answer extraction and the majority vote are the ones self-play trains with (:mod:`opensir_lite.parsing`,
:mod:`opensir_lite.grading`).

The package is split by concern, upstream first: :mod:`.benchmarks` (loading rows and gold answers),
:mod:`.stats` (pass@k, avg@n, maj@k, the paired difference, McNemar), :mod:`.protocols` (grading one completion),
:mod:`.runner` (settings, samplers, sampling and grading a benchmark, results files), :mod:`.compare` (two
evaluations of the same rows) and :mod:`.regrade` (re-reading a finished evaluation). Every public name is also
imported here, so ``from opensir_lite.evaluation import X`` keeps working.
"""

from __future__ import annotations

from opensir_lite.evaluation.benchmarks import (  # noqa: F401
    ALIASES,
    BENCHMARKS,
    GOLD_HOLDOUT,
    PROBE_BENCHMARK,
    PROBE_FILE,
    PROBE_ROWS,
    BenchmarkError,
    BenchmarkSpec,
    Item,
    extract_gold,
    load_items,
    official_gold,
    probe_items,
    resolve_benchmark,
    subset,
    training_items,
)
from opensir_lite.evaluation.compare import (  # noqa: F401
    compare_results,
    paired_rows,
)
from opensir_lite.evaluation.protocols import (  # noqa: F401
    OPENSIR_PARSE_TIMEOUT_S,
    OPENSIR_VERIFY_TIMEOUT_S,
    PROTOCOLS,
    Protocol,
    grade,
)
from opensir_lite.evaluation.regrade import (  # noqa: F401
    regrade,
    repetition_loop,
    subset_run,
    truncation_report,
)
from opensir_lite.evaluation.runner import (  # noqa: F401
    EVAL_DTYPES,
    MACRO,
    BenchmarkResult,
    EvalSettings,
    SampleFn,
    crn_seeds,
    evaluate_items,
    format_results,
    free_memory_bytes,
    grade_benchmark,
    load_results,
    load_samples,
    macro_average,
    sequence_cap,
    setting_help,
    transformers_sampler,
    vllm_sampler,
    write_outputs,
)
from opensir_lite.evaluation.stats import (  # noqa: F401
    mcnemar_exact_p,
    paired_difference,
    pass_at_k,
    question_values,
    score_questions,
)
