"""Benchmarks: where each lives (Hub or local JSONL), reading its rows and gold answers (the official
evaluation's per-benchmark gold parsing), the seed-0 subsets, the held-out training rows and the label probe's rows.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.parsing import (
    clean_text,
    extract_boxed_answer,
    normalise_gold,
)
from opensir_lite.pool import read_jsonl_objects


class BenchmarkError(ValueError):
    """Unusable benchmark input; the message names the benchmark, file and row."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how to read its question and gold answer."""

    name: str
    file: str  # local file name under --data_dir (the ../shared/benchmarks format)
    question_field: str
    answer_field: str
    gold_format: str  # hashes | boxed | plain | list | auto
    hub: tuple[str, str | None, str, str, str, str]  # (path, config, split, question field, answer field, format)
    # How the official evaluate.py parses this benchmark's gold answer: "dollars" = "$gold$" with the LaTeX
    # extraction (GSM8K, MATH-500, Minerva), "raw" = the field as it is with LaTeX and expression extraction (College
    # Math, OlympiadBench's first final answer). Benchmarks the official code does not evaluate use "raw".
    official_gold: str = "raw"


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("gsm8k", "gsm8k.jsonl", "question", "answer", "hashes",
                      ("openai/gsm8k", "main", "test", "question", "answer", "hashes"), "dollars"),
        BenchmarkSpec("math500", "math500.jsonl", "question", "answer", "boxed",
                      ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "plain"), "dollars"),
        BenchmarkSpec("college_math", "college_math.jsonl", "question", "answer", "plain",
                      ("di-zhang-fdu/College_Math_Test", None, "test", "question", "answer", "plain")),
        BenchmarkSpec("minerva_math", "minerva_math.jsonl", "problem", "solution", "boxed",
                      ("math-ai/minervamath", None, "test", "question", "answer", "plain"), "dollars"),
        BenchmarkSpec("olympiadbench", "olympiadbench.jsonl", "question", "final_answer", "list",
                      ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "question", "final_answer", "list")),
        BenchmarkSpec("aime24", "aime24.jsonl", "problem", "answer", "plain",
                      ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "plain")),
        BenchmarkSpec("amc23", "amc23.jsonl", "problem", "answer", "plain",
                      ("math-ai/amc23", None, "test", "question", "answer", "plain")),
        BenchmarkSpec("asdiv", "asdiv.jsonl", "question", "answer", "plain",
                      ("EleutherAI/asdiv", None, "validation", "question", "answer", "plain")),
    ]
}  # fmt: skip
# GSM8K test rows held out of every --limit subset: the labelled probe that training logs pseudo-label quality on
# (tuning looks at them, so evaluation subsets never contain them). The last 32 of the 1,319 test rows, 1-based in
# file order.
PROBE_BENCHMARK = "gsm8k"
PROBE_ROWS = tuple(range(1288, 1320))
ALIASES = {"math-500": "math500", "math_500": "math500", "minerva": "minerva_math", "college-math": "college_math"}


@dataclass
class Item:
    question: str
    gold: str  # the gold answer as text (what the strict protocol compares with)
    index: int  # row number in the source (1-based for files)
    raw_gold: Any = None  # the answer field as stored
    gold_format: str = "plain"  # how the field holds the answer (BenchmarkSpec.gold_format, resolved for "auto")
    gold_rule: str = "raw"  # how the official evaluate.py parses it (BenchmarkSpec.official_gold)

    @cached_property
    def official_gold(self) -> tuple | None:
        """math-verify's parse of the gold answer as the official evaluate.py makes it (computed when needed)."""
        return official_gold(
            self.raw_gold if self.raw_gold is not None else self.gold, self.gold_format, self.gold_rule
        )


def _first_list_item(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)  # literals only: never runs code
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value[0] if isinstance(value, list | tuple) and value else value


def official_gold(value: Any, fmt: str, rule: str) -> tuple | None:
    """The gold answer parsed as the official ``evaluate.py`` does: ``dollars`` wraps the extracted gold in ``$``
    and uses the LaTeX extraction; ``raw`` parses the field itself (a list's first item) with the LaTeX and
    expression extractions. None when the field is empty or nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if value is None:
        return None
    if rule == "dollars":
        text = clean_text(value).strip()
        if fmt == "hashes":  # GSM8K: what follows ####, thousands separators kept as the official code keeps them
            text = text.split("####")[-1].strip() if "####" in text else ""
        elif fmt == "boxed":
            text = extract_gold(value, fmt) or ""
        text, configs = f"${text}$", [LatexExtractionConfig()]
    else:
        text = clean_text(_first_list_item(value) if fmt == "list" else value).strip()
        configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    if not text.strip("$ "):
        return None
    try:
        parsed = parse(text, extraction_config=configs, fallback_mode="first_match", extraction_mode="first_match")
    except Exception:  # noqa: BLE001 - an unparseable gold is no gold
        return None
    return tuple(parsed) or None


def _strip_dollars(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def extract_gold(value: Any, fmt: str) -> str | None:
    """The gold answer string from a benchmark field, or None when there is none."""
    if value is None:
        return None
    if fmt == "list":
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)  # literals only: never runs code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = [value]
        items = value if isinstance(value, list | tuple) else [value]
        parts = [_strip_dollars(clean_text(v)) for v in items if v is not None and str(v).strip()]
        return ", ".join(parts) or None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = clean_text(value).strip()
    if fmt == "auto":
        fmt = "boxed" if "\\boxed" in text else "hashes" if "####" in text else "plain"
    if fmt == "hashes":
        if "####" not in text:
            return None
        gold = text.rsplit("####", 1)[1].strip().replace(",", "")
    elif fmt == "boxed":
        gold = extract_boxed_answer(text)
        if gold is None and "The answer is:" in text:
            gold = text.rsplit("The answer is:", 1)[1].strip()
    else:
        gold = _strip_dollars(text)
    return gold or None


def resolve_benchmark(name: str) -> BenchmarkSpec:
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)} or give a .jsonl path")
    return BENCHMARKS[name]


def _rows_from_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    return read_jsonl_objects(path, BenchmarkError)


def _rows_from_hub(spec: BenchmarkSpec) -> list[tuple[int, dict]]:
    from datasets import load_dataset

    path, config, split = spec.hub[:3]
    try:
        ds = load_dataset(path, config, split=split)
    except Exception as e:  # noqa: BLE001 - offline, gated, renamed: all are "cannot load"
        raise BenchmarkError(
            f"{spec.name}: cannot load {path} from the Hub ({type(e).__name__}); offline? use --data_dir with local JSONL files"
        ) from None
    return [(i + 1, dict(row)) for i, row in enumerate(ds)]


DATA_ENV = "OPENSIR_LITE_DATA"  # a folder of the benchmarks' JSONL copies (offline); unset: the Hub


def load_items(
    name: str,
    data_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    skip_bad_rows: bool = False,
) -> tuple[str, list[Item], int]:
    """(benchmark name, items, skipped rows). ``name`` is a known benchmark or a path to a custom JSONL. A known
    benchmark is read from ``data_dir`` (its JSONL copy there), else from the folder ``OPENSIR_LITE_DATA`` names,
    else from the Hub; ``data_dir=""`` means the Hub whatever the environment says."""
    import os

    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or None
    rule = "raw"
    if name.endswith(".jsonl"):
        path = Path(name)
        bench = path.stem
        rows = _rows_from_jsonl(path)
        q_field, a_field, fmt, source = question_field or "question", answer_field or "answer", "auto", str(path)
    else:
        spec = resolve_benchmark(name)
        bench, rule = spec.name, spec.official_gold
        if data_dir:  # None or "" (a recipe's folder cleared on the command line): the Hub
            path = Path(data_dir) / spec.file
            rows = _rows_from_jsonl(path)
            q_field, a_field, fmt, source = spec.question_field, spec.answer_field, spec.gold_format, str(path)
        else:
            rows = _rows_from_hub(spec)
            q_field, a_field, fmt, source = spec.hub[3], spec.hub[4], spec.hub[5], spec.hub[0]
        q_field, a_field = question_field or q_field, answer_field or a_field
    items, skipped = [], 0
    for lineno, row in rows:
        where = f"{source}:{lineno}"
        question = row.get(q_field)
        if not isinstance(question, str) or not question.strip():
            raise BenchmarkError(f"{where}: missing question field {q_field!r}")
        if a_field not in row:
            raise BenchmarkError(f"{where}: missing answer field {a_field!r}")
        gold = extract_gold(row[a_field], fmt)
        if gold is None or normalise_gold(gold) is None:
            if skip_bad_rows:
                skipped += 1
                continue
            raise BenchmarkError(f"{where}: no usable gold answer in {a_field!r} (use --skip_bad_rows to skip it)")
        raw = row[a_field]
        row_fmt = fmt
        if fmt == "auto":
            row_fmt = "boxed" if "\\boxed" in str(raw) else "hashes" if "####" in str(raw) else "plain"
        items.append(Item(question, gold, lineno, raw_gold=raw, gold_format=row_fmt, gold_rule=rule))
    if not items:
        raise BenchmarkError(f"{source}: no rows to evaluate")
    return bench, items, skipped


def subset(items: list[Item], limit: int | None, seed: int, benchmark: str | None = None) -> list[Item]:
    """A fixed random subset of ``limit`` items for a given seed (all items when limit is None). GSM8K subsets never
    contain the probe rows (:data:`PROBE_ROWS`), which training uses to measure pseudo-label quality."""
    if limit is None:
        return items
    if limit < 1:
        raise BenchmarkError(f"limit = {limit} is out of range: must be >= 1 (or no --limit for every row)")
    if benchmark == PROBE_BENCHMARK:
        items = [it for it in items if it.index not in PROBE_ROWS]
    if not items:
        raise BenchmarkError(f"{benchmark}: no rows left to evaluate outside the probe rows")
    if limit >= len(items):
        return items
    picked = np.random.default_rng(seed).permutation(len(items))[:limit]
    return [items[i] for i in sorted(picked)]


GOLD_HOLDOUT = 500  # training_items leaves out every row of the seed-0 evaluation subsets of up to this size


def training_items(items: list[Item], benchmark: str | None, holdout: int = GOLD_HOLDOUT, seed: int = 0) -> list[Item]:
    """Labelled rows to train on that no evaluation subset of up to ``holdout`` rows (``subset`` with this
    ``seed``) and no probe row contains: the rows after the first ``holdout`` of the same fixed permutation, in
    that (shuffled) order. Subsets of one seed are nested, so ``--limit`` up to ``holdout`` stays disjoint."""
    if benchmark == PROBE_BENCHMARK:
        items = [it for it in items if it.index not in PROBE_ROWS]
    order = np.random.default_rng(seed).permutation(len(items))
    rest = [items[i] for i in order[holdout:]]
    if not rest:
        raise BenchmarkError(f"{benchmark}: no rows left to train on after the {holdout} held out for evaluation")
    return rest


PROBE_FILE = Path(__file__).parents[1] / "data" / "gsm8k_probe.jsonl"  # the probe rows, shipped with the package


def probe_items(data_dir: str | Path | None = None, rows: int | None = None) -> list[Item]:
    """The labelled probe: GSM8K test rows :data:`PROBE_ROWS` (never in an evaluation subset), from the copy
    shipped in the package or from ``data_dir``'s gsm8k.jsonl; the first ``rows`` of them when given."""
    if data_dir is not None:
        _, items, _ = load_items(PROBE_BENCHMARK, data_dir)
        items = [it for it in items if it.index in PROBE_ROWS]
    else:
        spec = BENCHMARKS[PROBE_BENCHMARK]
        items = [
            Item(row["question"], extract_gold(row["answer"], spec.gold_format) or "", int(row["row"]),
                 raw_gold=row["answer"], gold_format=spec.gold_format, gold_rule=spec.official_gold)
            for _, row in read_jsonl_objects(PROBE_FILE, BenchmarkError)
        ]  # fmt: skip
    return items[:rows] if rows else items
