"""Grading protocols: how one completion is read and judged against the gold answer (``opensir``: the official
evaluation's reading; ``strict``: the last ``\\boxed{}`` only), and the sampling each protocol reports with.
"""

from __future__ import annotations

from dataclasses import dataclass

from opensir_lite.evaluation.benchmarks import BenchmarkError, Item
from opensir_lite.parsing import (
    extract_answer,
    gold_matches,
    parse_completion,
    verify_parsed,
)


@dataclass(frozen=True)
class Protocol:
    """How completions are graded, and the sampling a protocol's numbers are reported with."""

    name: str
    extraction: str  # opensir_lite.parsing answer extraction mode for predictions
    max_new_tokens: int
    n: int
    temperature: float
    top_p: float


PROTOCOLS = {
    "opensir": Protocol("opensir", "latex_expr", max_new_tokens=4096, n=16, temperature=0.6, top_p=0.95),
    "strict": Protocol("strict", "boxed", max_new_tokens=1024, n=1, temperature=0.0, top_p=1.0),
}
OPENSIR_PARSE_TIMEOUT_S = 1  # the official evaluate.py's parsing_timeout
OPENSIR_VERIFY_TIMEOUT_S = 10  # and its verify timeout


def grade(protocol: str, text: str, item: Item) -> tuple[str | None, bool]:
    """(answer, correct) of one completion under a protocol."""
    if protocol == "opensir":
        parsed = parse_completion(text, "latex_expr", timeout_s=OPENSIR_PARSE_TIMEOUT_S)
        answer = parsed[1] if parsed and len(parsed) > 1 and isinstance(parsed[1], str) else None
        return answer, verify_parsed(item.official_gold, parsed, timeout_s=OPENSIR_VERIFY_TIMEOUT_S)
    if protocol == "strict":
        answer = extract_answer(text, "boxed")
        return answer, gold_matches(answer, item.gold)
    raise BenchmarkError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
