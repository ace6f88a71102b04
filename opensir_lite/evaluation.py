"""Benchmark evaluation: load a maths test set (Hub or local JSONL), sample answers with the student prompt,
grade them against the gold answer with math-verify, and report avg@n, pass@k and maj@k with standard errors.

Answer extraction, equivalence and majority vote are the ones self-play trains with (:mod:`opensir_lite.parsing`,
:mod:`opensir_lite.grading`).
"""

from __future__ import annotations

import ast
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.generation import SamplingSettings, generate
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import clean_text, extract_answer, extract_boxed_answer, gold_matches, normalise_gold
from opensir_lite.pool import atomic_write_text, read_jsonl_objects
from opensir_lite.prompts import render, student_messages


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


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("gsm8k", "gsm8k.jsonl", "question", "answer", "hashes",
                      ("openai/gsm8k", "main", "test", "question", "answer", "hashes")),
        BenchmarkSpec("math500", "math500.jsonl", "question", "answer", "boxed",
                      ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "plain")),
        BenchmarkSpec("college_math", "college_math.jsonl", "question", "answer", "plain",
                      ("di-zhang-fdu/College_Math_Test", None, "test", "question", "answer", "plain")),
        BenchmarkSpec("minerva_math", "minerva_math.jsonl", "problem", "solution", "boxed",
                      ("math-ai/minervamath", None, "test", "question", "answer", "plain")),
        BenchmarkSpec("olympiadbench", "olympiadbench.jsonl", "question", "final_answer", "list",
                      ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "question", "final_answer", "list")),
        BenchmarkSpec("aime24", "aime24.jsonl", "problem", "answer", "plain",
                      ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "plain")),
        BenchmarkSpec("amc23", "amc23.jsonl", "problem", "answer", "plain",
                      ("math-ai/amc23", None, "test", "question", "answer", "plain")),
    ]
}  # fmt: skip
ALIASES = {"math-500": "math500", "math_500": "math500", "minerva": "minerva_math", "college-math": "college_math"}


@dataclass
class Item:
    question: str
    gold: str
    index: int  # row number in the source (1-based for files)


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
    if name.endswith(".jsonl"):
        path = Path(name)
        bench = path.stem
        rows = _rows_from_jsonl(path)
        q_field, a_field, fmt, source = question_field or "question", answer_field or "answer", "auto", str(path)
    else:
        spec = resolve_benchmark(name)
        bench = spec.name
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
        items.append(Item(question=question, gold=gold, index=lineno))
    if not items:
        raise BenchmarkError(f"{source}: no rows to evaluate")
    return bench, items, skipped


def subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """A fixed random subset of ``limit`` items for a given seed (all items when limit is None)."""
    if not limit or limit >= len(items):
        return items
    picked = np.random.default_rng(seed).permutation(len(items))[:limit]
    return [items[i] for i in sorted(picked)]


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


def score_questions(corrects: list[list[bool]], answers: list[list[str | None]], golds: list[str], k: int) -> dict:
    """avg@n, pass@k and maj@k (first k samples) with standard errors over questions."""
    n = len(corrects[0]) if corrects else 0
    k = max(1, min(k, n)) if n else 1
    avg = [sum(c) / len(c) for c in corrects]
    passk = [pass_at_k(len(c), sum(c), k) for c in corrects]
    majk = []
    for ans, gold in zip(answers, golds, strict=True):
        vote = majority_vote(ans[:k])
        majk.append(float(gold_matches(vote.majority, gold)))
    out = {}
    for name, values in ((f"avg@{n}", avg), (f"pass@{k}", passk), (f"maj@{k}", majk)):
        mean, se = _mean_se(values)
        out[name], out[f"{name}_se"] = mean, se
    return out


# ---- running ------------------------------------------------------------------------------------------------
@dataclass
class EvalSettings:
    n: int = 1  # samples per question
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 1024
    k: int | None = None  # pass@k / maj@k (default n)
    batch_size: int = 64  # questions per generate call
    seed: int = 0
    limit: int | None = None
    use_system_prompt: bool = True


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


SampleFn = Callable[[list[str], int, SamplingSettings], list[list[tuple[str, int]]]]


def transformers_sampler(model, tokenizer) -> SampleFn:
    """A sampler on transformers ``generate``: prompts -> per prompt, n (text, token count) pairs."""

    def sample(prompts: list[str], n: int, sampling: SamplingSettings) -> list[list[tuple[str, int]]]:
        out = generate(model, tokenizer, prompts, n, sampling)
        return [[(c.text, c.num_tokens) for c in out[i * n : (i + 1) * n]] for i in range(len(prompts))]

    return sample


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

    def sample(prompts: list[str], n: int, sampling: SamplingSettings) -> list[list[tuple[str, int]]]:
        params = SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, seed=seed
        )
        outputs = llm.generate(prompts, params, lora_request=lora)
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
) -> BenchmarkResult:
    """Sample, grade and score one benchmark's items."""
    from tqdm.auto import tqdm

    n = settings.n
    sampling = SamplingSettings(
        settings.max_new_tokens, settings.temperature if n > 1 or settings.temperature else 0.0, settings.top_p
    )
    prompts = [render(tokenizer, student_messages(it.question, settings.use_system_prompt)) for it in items]
    completions: list[list[tuple[str, int]]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), desc=bench, disable=not progress)
    for start in range(0, len(prompts), settings.batch_size):
        chunk = prompts[start : start + settings.batch_size]
        completions.extend(sample(chunk, n, sampling))
        bar.update(len(chunk))
    bar.close()
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    answers = [[extract_answer(text) for text, _ in group] for group in completions]
    corrects = [[gold_matches(a, it.gold) for a in group] for group, it in zip(answers, items, strict=True)]
    metrics = score_questions(corrects, answers, [it.gold for it in items], settings.k or n)
    t_grade = time.perf_counter() - t0
    tokens = sum(t for group in completions for _, t in group)
    samples = [
        {"benchmark": bench, "index": it.index, "question": it.question, "gold": it.gold,
         "completions": [text for text, _ in group], "answers": ans, "correct": cor}
        for it, group, ans, cor in zip(items, completions, answers, corrects, strict=True)
    ]  # fmt: skip
    return BenchmarkResult(
        benchmark=bench,
        metrics=metrics,
        rows=len(items),
        skipped=skipped,
        settings=asdict(settings),
        timings={"generation_s": t_gen, "grading_s": t_grade},
        tokens=tokens,
        tokens_per_second=tokens / t_gen if t_gen else 0.0,
        samples=samples,
    )


def write_outputs(results: list[BenchmarkResult], out_dir: str | Path, model: str, adapter: str | None) -> Path:
    """``results.json`` (per benchmark) and ``samples.jsonl`` (every completion) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        r.benchmark: {
            "metrics": r.metrics, "n": r.settings["n"], "rows": r.rows, "skipped": r.skipped,
            "settings": r.settings, "model": model, "adapter": adapter, "timings": r.timings,
            "tokens": r.tokens, "tokens_per_second": r.tokens_per_second,
        }
        for r in results
    }  # fmt: skip
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for r in results for s in r.samples)
    atomic_write_text(out_dir / "samples.jsonl", lines)
    return out_dir / "results.json"


def format_results(payload: dict[str, Any]) -> str:
    """A console table of ``results.json`` content."""
    lines = [f"{'benchmark':<15}{'rows':>6}  {'metric':<10}{'value':>8}{'± se':>8}{'tok/s':>9}{'wall s':>9}"]
    for bench, r in payload.items():
        for i, (name, value) in enumerate((k, v) for k, v in r["metrics"].items() if not k.endswith("_se")):
            head = f"{bench:<15}{r['rows']:>6}" if i == 0 else " " * 21
            tail = f"{r['tokens_per_second']:>9.1f}{sum(r['timings'].values()):>9.0f}" if i == 0 else ""
            lines.append(f"{head}  {name:<10}{100 * value:>7.1f}%{100 * r['metrics'][name + '_se']:>7.1f}{tail}")
    return "\n".join(lines)


def compare_results(base: dict[str, Any], other: dict[str, Any]) -> str:
    """Deltas (other - base) per benchmark and metric, with the standard error of the difference."""
    lines = [f"{'benchmark':<15}{'metric':<10}{'base':>8}{'other':>8}{'delta':>8}{'± se':>8}"]
    for bench in base:
        if bench not in other:
            continue
        for name, value in base[bench]["metrics"].items():
            if name.endswith("_se") or name not in other[bench]["metrics"]:
                continue
            v2 = other[bench]["metrics"][name]
            se = math.hypot(
                base[bench]["metrics"].get(name + "_se", 0.0), other[bench]["metrics"].get(name + "_se", 0.0)
            )
            lines.append(
                f"{bench:<15}{name:<10}{100 * value:>7.1f}%{100 * v2:>7.1f}%{100 * (v2 - value):>+7.1f}{100 * se:>8.1f}"
            )
    return "\n".join(lines)
