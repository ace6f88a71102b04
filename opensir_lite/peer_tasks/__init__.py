"""lm-evaluation-harness task definitions that read this project's benchmark rows.

Each YAML here is the harness's own task (prompt, few-shot format, generation stop strings, answer filters and metric
copied field by field from lm-eval 0.4.13's ``tasks/``; ``tests/test_peer.py`` checks that they still match the
installed harness) with one change: the rows come from :mod:`.data`, which loads them the way ``scripts/evaluate.py``
does (the offline copies under ``data_dir`` or the Hub) and picks the same ``--limit``/``--seed`` subset, so that
both evaluators see identical questions. Use them with ``lm_eval --include_path opensir_lite/peer_tasks`` or
``scripts/peer_eval.py``.

| task | harness task it copies | rows |
|---|---|---|
| ``opensir_gsm8k`` | ``gsm8k`` (5-shot ``Question:``/``Answer:``, ``#### N``; the Open LLM Leaderboard's) | test: the subset; few-shot: GSM8K rows outside every evaluation subset of up to ``holdout`` rows and the probe |
| ``opensir_gsm8k_cot`` | ``gsm8k_cot`` (8 fixed chain-of-thought exemplars, ``The answer is N.``) | test: the subset |
| ``opensir_asdiv_cot`` | ``asdiv_cot_llama`` (8 fixed exemplars, ``The final answer is N``) | test: the subset |
| ``opensir_gsm8k_student`` | ours: ``scripts/evaluate.py``'s student prompt (chat template, greedy, 1024 tokens), graded with ``gsm8k``'s filters | test: the subset |

The first three are the harness's standard readings; the last makes the harness sample the completions that
``scripts/evaluate.py`` samples, so that its figures can be reproduced through the harness. Sampled figures (avg@k at a
temperature) use a per-run variant of a task, ``<task>_sampled``, which
:func:`opensir_lite.evaluation.peer.sampled_task` writes next to the run: the shipped YAML included as written, with
only ``repeats`` and the sampling settings changed.
"""

from pathlib import Path
from typing import Any

PEER_TASKS_DIR = Path(__file__).parent  # what --include_path names
PEER_TASKS = ("opensir_gsm8k", "opensir_gsm8k_cot", "opensir_asdiv_cot", "opensir_gsm8k_student")
CHAT_TASKS = ("opensir_gsm8k_student",)  # run with --apply_chat_template
# The harness task each one copies (checked against the installed lm-eval by tests/test_peer.py); the student task
# copies only gsm8k's grading.
UPSTREAM_TASKS = {"opensir_gsm8k": "gsm8k", "opensir_gsm8k_cot": "gsm8k_cot", "opensir_asdiv_cot": "asdiv_cot_llama"}


def peer_doc(item: Any) -> dict[str, Any]:
    """The harness row of one benchmark item (an ``opensir_lite.evaluation.Item``): the question, the answer field as
    stored, and ``opensir_index``, the row number ``scripts/evaluate.py`` reports. The task loaders and the regrader
    build rows with it alike."""
    return {"question": item.question, "answer": str(item.raw_gold), "opensir_index": item.index}
