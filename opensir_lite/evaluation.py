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
"""

from __future__ import annotations

import ast
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.generation import SamplingSettings, generate, sequence_seed
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import (
    clean_text,
    extract_answer,
    extract_boxed_answer,
    gold_matches,
    normalise_gold,
    parse_completion,
    verify_parsed,
)
from opensir_lite.pool import atomic_write_text, read_jsonl_objects
from opensir_lite.prompts import render, student_messages
from opensir_lite.ranges import RangeError, at_least, between, check_ranges, ranged


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


def load_items(
    name: str,
    data_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    skip_bad_rows: bool = False,
) -> tuple[str, list[Item], int]:
    """(benchmark name, items, skipped rows). ``name`` is a known benchmark or a path to a custom JSONL."""
    rule = "raw"
    if name.endswith(".jsonl"):
        path = Path(name)
        bench = path.stem
        rows = _rows_from_jsonl(path)
        q_field, a_field, fmt, source = question_field or "question", answer_field or "answer", "auto", str(path)
    else:
        spec = resolve_benchmark(name)
        bench, rule = spec.name, spec.official_gold
        if data_dir is not None:
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


PROBE_FILE = Path(__file__).parent / "data" / "gsm8k_probe.jsonl"  # the probe rows, shipped with the package


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


# ---- metrics ------------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return 0.0, 0.0
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def question_values(corrects: list[list[bool]], answers: list[list[str | None]], k: int) -> dict[str, list[float]]:
    """Each question's avg@n, pass@k and maj@k (first k samples): the values that :func:`score_questions` averages
    and a paired comparison differences. maj@k is right when the majority class of the first k answers holds a
    correct answer (the class is right or wrong as a whole)."""
    n = len(corrects[0]) if corrects else 0
    k = max(1, min(k, n)) if n else 1
    avg = [sum(c) / len(c) for c in corrects]
    passk = [pass_at_k(len(c), sum(c), k) for c in corrects]
    majk = []
    for ans, cor in zip(answers, corrects, strict=True):
        vote = majority_vote(ans[:k])
        first = next((i for i in range(len(vote.classes)) if vote.agrees(i)), None)
        majk.append(float(first is not None and cor[first]))
    return {f"avg@{n}": avg, f"pass@{k}": passk, f"maj@{k}": majk}


def score_questions(corrects: list[list[bool]], answers: list[list[str | None]], k: int) -> dict:
    """avg@n, pass@k and maj@k (first k samples) with standard errors over questions."""
    out = {}
    for name, values in question_values(corrects, answers, k).items():
        mean, se = _mean_se(values)
        out[name], out[f"{name}_se"] = mean, se
    return out


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c discordant pairs at 1/2 (1.0 when
    there is no discordant pair)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_difference(base: list[float], other: list[float]) -> dict[str, float | int | None]:
    """other - base on the same questions: the mean difference with its standard error (of the per-question
    differences) and, when every value is 0 or 1, the discordant counts (b: right only in base, c: right only in
    other) and the exact McNemar p-value; None where undefined."""
    if len(base) != len(other):
        raise ValueError(f"paired values need the same questions: {len(base)} vs {len(other)}")
    diff = [o - b for b, o in zip(base, other, strict=True)]
    delta, se = _mean_se(diff)
    out: dict[str, float | int | None] = {"delta": delta, "se": se, "z": delta / se if se > 0 else None,
                                          "b": None, "c": None, "p": None}  # fmt: skip
    if all(v in (0.0, 1.0) for v in (*base, *other)):
        b = sum(1 for x, y in zip(base, other, strict=True) if x == 1.0 and y == 0.0)
        c = sum(1 for x, y in zip(base, other, strict=True) if x == 0.0 and y == 1.0)
        out.update(b=b, c=c, p=mcnemar_exact_p(b, c))
    return out


# ---- protocols ----------------------------------------------------------------------------------------------
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


# ---- running ------------------------------------------------------------------------------------------------
EVAL_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class EvalSettings:
    """How a benchmark is sampled and scored; each numeric field's range is declared with its help (the options of
    ``scripts/evaluate.py`` show them) and checked when the settings are made, before any work."""

    n: int = field(default=1, metadata={"help": ranged(at_least(1), "Samples per question.")})
    temperature: float = field(default=0.0, metadata={"help": ranged(at_least(0), "Sampling temperature, 0 = greedy.")})
    top_p: float = field(default=1.0, metadata={"help": ranged(between(0, 1, low_open=True), "Nucleus sampling.")})
    max_new_tokens: int = field(default=1024, metadata={"help": ranged(at_least(1), "Completion budget in tokens.")})
    k: int | None = field(default=None, metadata={"help": ranged(at_least(1), "k of pass@k and maj@k (default n).")})
    batch_size: int = field(default=64, metadata={"help": ranged(at_least(1), "Questions per generate call.")})
    seed: int = field(default=0, metadata={"help": ranged(at_least(0), "Subset and sampling seed.")})
    limit: int | None = field(
        default=None, metadata={"help": ranged(at_least(1), "Evaluate a fixed random subset of this many rows.")}
    )
    sampling_seed: int | None = field(
        default=None,
        metadata={"help": ranged(at_least(0), "Seed of the sampling streams alone (default: seed); the rows stay.")},
    )
    use_system_prompt: bool = True
    common_random_numbers: bool = True  # sampled rows draw from per-(row, sample) streams (paired comparisons)
    protocol: str = "opensir"  # the headline protocol of results.json (both are always reported)
    dtype: str = "auto"  # the model's dtype: auto (by hardware: fp32 on a CPU) or one of EVAL_DTYPES

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise BenchmarkError(f"unknown protocol {self.protocol!r}: choose from {', '.join(PROTOCOLS)}")
        if self.dtype not in EVAL_DTYPES:
            raise BenchmarkError(f"dtype must be one of {', '.join(EVAL_DTYPES)}, got {self.dtype!r}")
        try:
            check_ranges(self)
        except RangeError as e:
            raise BenchmarkError(str(e)) from None
        if self.n > 1 and self.temperature <= 0:
            raise BenchmarkError(
                f"--n {self.n} at --temperature {self.temperature} samples {self.n} identical greedy completions: "
                "set --temperature above 0 (the opensir protocol: 0.6) or --n 1"
            )

    @classmethod
    def field_help(cls, name: str) -> str:
        return str(cls.__dataclass_fields__[name].metadata["help"])

    @classmethod
    def for_protocol(cls, protocol: str = "opensir", **overrides: Any) -> EvalSettings:
        """Settings with a protocol's sampling defaults; overrides that are None keep the default."""
        if protocol not in PROTOCOLS:
            raise BenchmarkError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
        p = PROTOCOLS[protocol]
        values = {"n": p.n, "temperature": p.temperature, "top_p": p.top_p, "max_new_tokens": p.max_new_tokens}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(protocol=protocol, **values)


def setting_help(name: str, note: str = "") -> str:
    """The help text (with its range) of an :class:`EvalSettings` field, for a command-line option."""
    text = EvalSettings.field_help(name)
    return f"{text[:-1]}; {note}." if note else text


@dataclass
class BenchmarkResult:
    benchmark: str
    metrics: dict[str, float]
    rows: int
    skipped: int
    settings: dict[str, Any]
    timings: dict[str, float]
    tokens: int
    tokens_per_second: float
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)
    protocols: dict[str, dict[str, float]] = field(default_factory=dict)  # every protocol's metrics
    source: str | None = None  # the benchmark name or JSONL path it was loaded from (for --regrade)
    truncated: int | None = None  # completions that used the whole token budget (None: lengths unknown)


SampleFn = Callable[..., list[list[tuple[str, int]]]]  # (prompts, n, sampling, seeds=None) -> per prompt n pairs


def transformers_sampler(model, tokenizer) -> SampleFn:
    """A sampler on the package's decoder: prompts -> per prompt, n (text, token count) pairs. ``seeds`` (per prompt,
    n sequence seeds) samples with common random numbers (:mod:`opensir_lite.generation`)."""

    def sample(
        prompts: list[str], n: int, sampling: SamplingSettings, seeds: list[list[int]] | None = None
    ) -> list[list[tuple[str, int]]]:
        flat = None if seeds is None else [s for row in seeds for s in row]
        out = generate(model, tokenizer, prompts, n, sampling, sample_seeds=flat)
        return [[(c.text, c.num_tokens) for c in out[i * n : (i + 1) * n]] for i in range(len(prompts))]

    return sample


def crn_seeds(items: list[Item], n: int, seed: int) -> list[list[int]]:
    """Common random numbers: for each item, the stream seeds of its n samples, fixed by (seed, row index, sample
    number). Two models evaluated with the same seed on the same rows sample from the same streams, so their samples
    differ only where the models do; a different seed gives independent samples (the placebo's other half)."""
    return [[sequence_seed(seed, it.index, j) for j in range(n)] for it in items]


def vllm_sampler(model_path: str, adapter: str | None, seed: int) -> tuple[SampleFn, Any]:
    """A sampler on vLLM (GPU only); raises a clear error when vLLM or a GPU is missing (checked before any model
    is resolved or converted)."""
    import torch

    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise BenchmarkError("--backend vllm needs vLLM: pip install vllm (on a CUDA machine)") from None
    if not torch.cuda.is_available():
        raise BenchmarkError("--backend vllm needs a CUDA GPU; use --backend transformers here")
    from opensir_lite.models import resolve_model_path

    llm = LLM(model=resolve_model_path(model_path), enable_lora=adapter is not None, seed=seed)
    lora = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, adapter)

    def sample(
        prompts: list[str], n: int, sampling: SamplingSettings, seeds: list[list[int]] | None = None
    ) -> list[list[tuple[str, int]]]:
        def params(row_seed: int) -> SamplingParams:
            return SamplingParams(
                n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
                seed=row_seed,
            )  # fmt: skip

        # per-row seeds: the same row is sampled from the same vLLM stream by base and adapter (not token-coupled)
        per_prompt = [params(s[0] % 2**31) for s in seeds] if seeds is not None else params(seed)
        outputs = llm.generate(prompts, per_prompt, lora_request=lora)
        return [[(o.text, len(o.token_ids)) for o in req.outputs] for req in outputs]

    return sample, llm.get_tokenizer()


def evaluate_items(
    bench: str,
    items: list[Item],
    sample: SampleFn,
    tokenizer,
    settings: EvalSettings,
    skipped: int = 0,
    progress: bool = True,
    source: str | None = None,
) -> BenchmarkResult:
    """Sample, grade and score one benchmark's items (``source``: the name or path they were loaded from)."""
    from tqdm.auto import tqdm

    n = settings.n
    sampling = SamplingSettings(settings.max_new_tokens, settings.temperature, settings.top_p)
    prompts = [render(tokenizer, student_messages(it.question, settings.use_system_prompt)) for it in items]
    stream_seed = settings.seed if settings.sampling_seed is None else settings.sampling_seed
    seeds = crn_seeds(items, n, stream_seed) if settings.common_random_numbers and settings.temperature > 0 else None
    completions: list[list[tuple[str, int]]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), desc=bench, disable=not progress)
    for start in range(0, len(prompts), settings.batch_size):
        chunk = prompts[start : start + settings.batch_size]
        if seeds is None:
            completions.extend(sample(chunk, n, sampling))
        else:
            completions.extend(sample(chunk, n, sampling, seeds[start : start + settings.batch_size]))
        bar.update(len(chunk))
    bar.close()
    t_gen = time.perf_counter() - t0
    tokens = sum(t for group in completions for _, t in group)
    texts = [[text for text, _ in group] for group in completions]
    counts = [[t for _, t in group] for group in completions]
    return grade_benchmark(
        bench, items, texts, settings, skipped,
        {"generation_s": t_gen}, tokens, tokens / t_gen if t_gen else 0.0, source, counts,
    )  # fmt: skip


def grade_benchmark(
    bench: str,
    items: list[Item],
    texts: list[list[str]],
    settings: EvalSettings,
    skipped: int = 0,
    timings: dict[str, float] | None = None,
    tokens: int = 0,
    tokens_per_second: float = 0.0,
    source: str | None = None,
    token_counts: list[list[int]] | None = None,
) -> BenchmarkResult:
    """Grade every question's completions under every protocol; ``metrics`` are the headline protocol's.
    ``token_counts`` (each completion's length) give the truncated count: completions that used the whole
    budget."""
    t0 = time.perf_counter()
    by_protocol: dict[str, dict[str, list]] = {}
    metrics: dict[str, dict[str, float]] = {}
    for name in PROTOCOLS:
        graded = [[grade(name, text, it) for text in group] for group, it in zip(texts, items, strict=True)]
        answers = [[a for a, _ in group] for group in graded]
        corrects = [[c for _, c in group] for group in graded]
        by_protocol[name] = {"answers": answers, "correct": corrects}
        metrics[name] = score_questions(corrects, answers, settings.k or settings.n)
    timings = {**(timings or {}), "grading_s": time.perf_counter() - t0}
    head = by_protocol[settings.protocol]
    samples = [
        {"benchmark": bench, "index": it.index, "question": it.question, "gold": it.gold, "completions": group,
         "answers": head["answers"][q], "correct": head["correct"][q],
         "by_protocol": {name: {"answers": v["answers"][q], "correct": v["correct"][q]} for name, v in by_protocol.items()}}
        for q, (it, group) in enumerate(zip(items, texts, strict=True))
    ]  # fmt: skip
    truncated = None
    if token_counts is not None:
        for sample, counts in zip(samples, token_counts, strict=True):
            sample["tokens"] = counts
        truncated = sum(t >= settings.max_new_tokens for counts in token_counts for t in counts)
    return BenchmarkResult(
        benchmark=bench,
        metrics=metrics[settings.protocol],
        rows=len(items),
        skipped=skipped,
        settings=asdict(settings),
        timings=timings,
        tokens=tokens,
        tokens_per_second=tokens_per_second,
        samples=samples,
        protocols=metrics,
        source=source or bench,
        truncated=truncated,
    )


def write_outputs(results: list[BenchmarkResult], out_dir: str | Path, model: str, adapter: str | None) -> Path:
    """``results.json`` (per benchmark) and ``samples.jsonl`` (every completion) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        r.benchmark: {
            "protocol": r.settings["protocol"], "metrics": r.metrics, "protocols": r.protocols, "n": r.settings["n"],
            "rows": r.rows, "skipped": r.skipped, "settings": r.settings, "model": model, "adapter": adapter,
            "timings": r.timings, "tokens": r.tokens, "tokens_per_second": r.tokens_per_second,
            "source": r.source, "truncated": r.truncated,
        }
        for r in results
    }  # fmt: skip
    if len(results) > 1:
        payload[MACRO] = macro_average(payload, model, adapter)
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for r in results for s in r.samples)
    atomic_write_text(out_dir / "samples.jsonl", lines)
    return out_dir / "results.json"


MACRO = "macro_average"  # the results.json entry averaging the benchmarks


def macro_average(payload: dict[str, Any], model: str, adapter: str | None) -> dict[str, Any]:
    """Each metric averaged over the benchmarks (every protocol); its standard error is sqrt(sum se^2) / B."""
    benches = [b for b in payload if b != MACRO]
    protocols: dict[str, dict[str, float]] = {}
    for name in PROTOCOLS:
        tables = [payload[b]["protocols"][name] for b in benches if name in payload[b].get("protocols", {})]
        if len(tables) != len(benches):
            continue
        keys = [k for k in tables[0] if not k.endswith("_se") and all(k in t for t in tables)]
        protocols[name] = {}
        for k in keys:
            protocols[name][k] = float(np.mean([t[k] for t in tables]))
            protocols[name][k + "_se"] = float(math.sqrt(sum(t.get(k + "_se", 0.0) ** 2 for t in tables)) / len(tables))
    head = payload[benches[0]]["protocol"]
    return {
        "protocol": head, "metrics": protocols.get(head, {}), "protocols": protocols, "benchmarks": benches,
        "rows": sum(payload[b]["rows"] for b in benches), "model": model, "adapter": adapter,
    }  # fmt: skip


def _protocol_tables(r: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every protocol's metrics of one results.json entry (older files hold only ``metrics``)."""
    return r.get("protocols") or {r.get("protocol", "strict"): r["metrics"]}


def format_results(payload: dict[str, Any]) -> str:
    """A console table of ``results.json`` content: each benchmark and the macro average, under each protocol."""
    lines = [
        f"{'benchmark':<15}{'rows':>6}  {'protocol':<9}{'metric':<10}{'value':>8}{'± se':>8}{'tok/s':>9}{'wall s':>9}"
        f"{'truncated':>11}"
    ]
    for bench, r in payload.items():
        first = True
        for proto, table in _protocol_tables(r).items():
            for name, value in ((k, v) for k, v in table.items() if not k.endswith("_se")):
                head = f"{bench:<15}{r['rows']:>6}" if first else " " * 21
                tail = ""
                if first and "tokens_per_second" in r:
                    tail = f"{r['tokens_per_second']:>9.1f}{sum(r['timings'].values()):>9.0f}"
                    if r.get("truncated") is not None:
                        total = r["rows"] * r.get("n", 1)
                        tail += f"{r['truncated']:>5} ({100 * r['truncated'] / max(total, 1):.1f}%)"
                lines.append(f"{head}  {proto:<9}{name:<10}{100 * value:>7.1f}%{100 * table[name + '_se']:>7.1f}{tail}")
                first = False
    return "\n".join(lines)


def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` written by :func:`write_outputs`; one :class:`BenchmarkError` line for a missing file or
    one that is not such a file."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"results file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"{path}: not a results.json of scripts/evaluate.py (not JSON: {e})") from None
    entries = payload.items() if isinstance(payload, dict) else []
    if not entries or not all(
        isinstance(r, dict) and isinstance(r.get("metrics"), dict) and isinstance(r.get("rows"), int)
        for _, r in entries
    ):
        raise BenchmarkError(
            f"{path}: not a results.json of scripts/evaluate.py (expected benchmark -> {{metrics, rows, ...}})"
        )
    return payload


def load_samples(results_path: str | Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Benchmark -> row index -> the graded sample of that row, from the ``samples.jsonl`` beside a results.json."""
    path = Path(results_path).with_name("samples.jsonl")
    if not path.is_file():
        raise BenchmarkError(f"cannot pair: no samples.jsonl beside {results_path}")
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for lineno, row in read_jsonl_objects(path, BenchmarkError):
        if not {"benchmark", "index", "by_protocol"} <= set(row):
            raise BenchmarkError(f"{path}:{lineno}: not a graded sample (benchmark, index, by_protocol)")
        out.setdefault(row["benchmark"], {})[row["index"]] = row
    return out


def paired_rows(bench: str, base: dict[int, dict], other: dict[int, dict]) -> list[int]:
    """The row indices both evaluations graded; a one-line :class:`BenchmarkError` when the row sets differ."""
    if set(base) != set(other):
        only_base, only_other = len(set(base) - set(other)), len(set(other) - set(base))
        raise BenchmarkError(
            f"cannot pair {bench}: the two evaluations graded different rows ({len(base)} and {len(other)} rows; "
            f"{only_base} only in the first, {only_other} only in the second): evaluate both with the same "
            "--limit and --seed"
        )
    return sorted(base)


def _per_question(samples: dict[int, dict], rows: list[int], protocol: str, settings: dict) -> dict[str, list]:
    graded = [samples[i]["by_protocol"][protocol] for i in rows]
    k = settings.get("k") or settings.get("n") or len(graded[0]["correct"])
    return question_values([g["correct"] for g in graded], [g["answers"] for g in graded], k)


def compare_results(
    base: dict[str, Any],
    other: dict[str, Any],
    base_samples: dict[str, dict[int, dict]] | None = None,
    other_samples: dict[str, dict[int, dict]] | None = None,
) -> str:
    """Deltas (other - base) per benchmark, protocol and metric: the unpaired difference with the standard error of
    the difference and z; with both evaluations' samples, also the paired difference on the same rows, its
    standard error, z, the discordant rows (b: right only in base, c: right only in other) and the exact McNemar
    p-value (for 0/1 metrics). Refuses, in one line, to pair evaluations whose row sets differ."""
    paired = base_samples is not None and other_samples is not None
    head = f"{'benchmark':<15}{'protocol':<9}{'metric':<10}{'base':>8}{'other':>8}{'delta':>8}{'± se':>8}{'z':>7}"
    lines = [head + (f"{'paired':>9}{'± se':>7}{'z':>7}{'b':>5}{'c':>5}{'McNemar p':>11}" if paired else "")]
    for bench in base:
        if bench not in other:
            continue
        theirs = _protocol_tables(other[bench])
        rows = None
        if paired and bench != MACRO:
            if bench not in base_samples or bench not in other_samples:
                raise BenchmarkError(f"cannot pair {bench}: its samples are missing from samples.jsonl")
            rows = paired_rows(bench, base_samples[bench], other_samples[bench])
        for proto, table in _protocol_tables(base[bench]).items():
            if proto not in theirs:
                continue
            per_q = None
            if rows is not None:
                per_q = (_per_question(base_samples[bench], rows, proto, base[bench].get("settings", {})),
                         _per_question(other_samples[bench], rows, proto, other[bench].get("settings", {})))  # fmt: skip
            for name, value in table.items():
                if name.endswith("_se") or name not in theirs[proto]:
                    continue
                v2 = theirs[proto][name]
                se = math.hypot(table.get(name + "_se", 0.0), theirs[proto].get(name + "_se", 0.0))
                z = f"{(v2 - value) / se:>+7.1f}" if se > 0 else f"{'-':>7}"
                line = (
                    f"{bench:<15}{proto:<9}{name:<10}{100 * value:>7.1f}%{100 * v2:>7.1f}%{100 * (v2 - value):>+7.1f}"
                    f"{100 * se:>8.1f}{z}"
                )
                if per_q is not None and name in per_q[0] and name in per_q[1]:
                    d = paired_difference(per_q[0][name], per_q[1][name])
                    pz = f"{d['z']:>+7.1f}" if d["z"] is not None else f"{'-':>7}"
                    counts = (f"{d['b']:>5}{d['c']:>5}{d['p']:>11.4f}" if d["p"] is not None
                              else f"{'-':>5}{'-':>5}{'-':>11}")  # fmt: skip
                    line += f"{100 * d['delta']:>+9.1f}{100 * d['se']:>7.1f}{pz}{counts}"
                lines.append(line)
    return "\n".join(lines)


def repetition_loop(text: str, tail: int = 60, window: int = 2000, repeats: int = 3) -> bool:
    """Whether a completion ends in a repetition loop: its last ``tail`` characters occur ``repeats`` times or more
    in its last ``window`` characters (a greedy decoder writing one line over and over, which no budget ends)."""
    if len(text) < tail * repeats:
        return False
    return text[-window:].count(text[-tail:]) >= repeats


def truncation_report(run_dir: str | Path) -> dict[str, dict[str, int]]:
    """Per benchmark of an evaluation folder: completions, those that reached the token budget, and how many of
    those end in a :func:`repetition_loop`."""
    run_dir = Path(run_dir)
    results = load_results(run_dir / "results.json")
    report: dict[str, dict[str, int]] = {}
    for _, row in read_jsonl_objects(run_dir / "samples.jsonl", BenchmarkError):
        budget = results[row["benchmark"]]["settings"]["max_new_tokens"]
        r = report.setdefault(row["benchmark"], {"completions": 0, "truncated": 0, "loops": 0})
        for text, tokens in zip(row["completions"], row.get("tokens") or [], strict=False):
            r["completions"] += 1
            if tokens >= budget:
                r["truncated"] += 1
                r["loops"] += repetition_loop(text)
    return report


def subset_run(
    run_dir: str | Path, out_dir: str | Path, limit: int, seed: int, data_dir: str | Path | None = None
) -> Path:
    """Copy the rows of an earlier evaluation that form the seed's ``limit``-row subset into ``out_dir`` and grade
    them there (:func:`regrade`): the seed-0 250-row subset is the first 250 rows of the seed-0 500-row permutation,
    so a 500-row run yields a 250-row one that pairs with adapters evaluated on 250 rows, without generating again.
    Every row of the subset must be in the run."""
    run_dir, out = Path(run_dir), Path(out_dir)
    if out.resolve() == run_dir.resolve():
        raise BenchmarkError(f"{out}: write the subset to another folder than the run it comes from")
    old = load_results(run_dir / "results.json")
    by_bench: dict[str, list[dict]] = {}
    for _, row in read_jsonl_objects(run_dir / "samples.jsonl", BenchmarkError):
        by_bench.setdefault(row["benchmark"], []).append(row)
    kept = []
    for bench, rows in by_bench.items():
        info = old[bench]
        _, items, _ = load_items(info.get("source") or bench, data_dir)
        wanted = {it.index for it in subset(items, limit, seed, bench)}
        have = {r["index"] for r in rows}
        if not wanted <= have:
            missing = sorted(wanted - have)
            raise BenchmarkError(
                f"{bench}: rows {missing[:5]} of the {limit}-row seed-{seed} subset are not in {run_dir}"
            )
        kept += [r for r in rows if r["index"] in wanted]
        info["settings"] = {**info.get("settings", {}), "limit": limit, "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")
    return regrade(out, data_dir)


def regrade(run_dir: str | Path, data_dir: str | Path | None = None, protocol: str | None = None) -> Path:
    """Grade the completions of an earlier run (``samples.jsonl``) again under every protocol and rewrite
    ``results.json`` (generation settings, timings and token counts are kept). The gold answers are read again
    from the benchmark files."""
    run_dir = Path(run_dir)
    old = json.loads((run_dir / "results.json").read_text())
    samples: dict[str, list[dict]] = {}
    for _, row in read_jsonl_objects(run_dir / "samples.jsonl", BenchmarkError):
        samples.setdefault(row["benchmark"], []).append(row)
    results = []
    model = adapter = None
    for bench, rows in samples.items():
        info = old[bench]
        model, adapter = info.get("model"), info.get("adapter")
        settings_dict = {k: v for k, v in info["settings"].items() if k in EvalSettings.__dataclass_fields__}
        if protocol:
            settings_dict["protocol"] = protocol
        settings = EvalSettings(**settings_dict)
        _, items, _ = load_items(info.get("source") or bench, data_dir)
        by_index = {it.index: it for it in items}
        missing = [r["index"] for r in rows if r["index"] not in by_index]
        if missing:
            raise BenchmarkError(f"{bench}: rows {missing[:5]} of samples.jsonl are not in the benchmark file")
        results.append(
            grade_benchmark(
                bench, [by_index[r["index"]] for r in rows], [r["completions"] for r in rows], settings,
                info.get("skipped", 0), {k: v for k, v in info.get("timings", {}).items() if k != "grading_s"},
                info.get("tokens", 0), info.get("tokens_per_second", 0.0), info.get("source"),
                [r["tokens"] for r in rows] if all("tokens" in r for r in rows) else None,
            )
        )  # fmt: skip
    if not results:
        raise BenchmarkError(f"{run_dir / 'samples.jsonl'}: no samples to grade")
    return write_outputs(results, run_dir, str(model), adapter)
