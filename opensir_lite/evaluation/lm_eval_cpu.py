"""``python -m opensir_lite.evaluation.lm_eval_cpu ARGS``: lm-evaluation-harness's own command line
(``lm_eval.__main__.cli_evaluate``, the ``lm_eval`` console script) with this project's ``sdpa_grouped`` attention
registered first, so that ``--model_args ...,attn_implementation=sdpa_grouped`` can name it.

On a CPU, transformers' ``sdpa`` copies the KV cache once per query head group and step (``repeat_kv``); the grouped
form gives the same tokens (``tests/test_attention.py``) 2.2x faster on SmolLM2 and more on Qwen2.5's 7 query heads
per KV head (docs/benchmarks.md). Everything else is the harness's: arguments, tasks, generation, filters, metrics,
output files. Without ``attn_implementation`` the plain ``lm_eval`` command takes the same arguments.
"""

from __future__ import annotations

from opensir_lite.attention import register_grouped_sdpa


def main() -> None:
    register_grouped_sdpa()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
