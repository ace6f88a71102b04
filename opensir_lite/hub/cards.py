"""The cards of a published run: what a run folder holds (:func:`read_run`), the model card of its adapter and the
dataset card of its generated pool, built with ``huggingface_hub``'s card classes (nothing is uploaded here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensir_lite.checkpointing import METRICS_FILE, RUN_CONFIG_FILE
from opensir_lite.curves import CURVES_FILE
from opensir_lite.evaluation.benchmarks import BENCHMARKS
from opensir_lite.evaluation.runner import MACRO
from opensir_lite.exploration import (
    FIGURES,
    format_optional,
    hardest_problems,
    load_run_pool,
    summarize_pool,
)
from opensir_lite.models import EMBEDDED_MODELS, SMOLLM2, embedded_model_for

EMBEDDED_HUB_ID = SMOLLM2.hub_id  # what the embedded GGUF was converted from


CARD_TAGS = ("trl", "grpo", "opensir", "self-play", "qlora", "math")  # qlora only for a 4-bit base


BENCHMARK_TITLES = {
    "gsm8k": "GSM8K", "math500": "MATH-500", "college_math": "College Math", "minerva_math": "Minerva Math",
    "olympiadbench": "OlympiadBench", "aime24": "AIME 2024", "amc23": "AMC 2023", "asdiv": "ASDiv",
}  # fmt: skip


CARD_TRAINING_KEYS = (
    "num_generations", "learning_rate", "solve_rate_lower", "solve_rate_upper", "teacher_max_new_tokens",
    "student_max_new_tokens", "temperature", "max_steps", "seed", "seed_problem", "teacher_prefill",
)  # fmt: skip


CARD_MODEL_KEYS = ("model_name_or_path", "lora_r", "lora_alpha", "load_in_4bit")


REWARD_COLUMNS = ("solvability", "diversity", "teacher_format", "response_length")


OPENSIR_BIBTEX = """@article{kwan2025opensir,
  title   = {OpenSIR: Open-Ended Self-Improving Reasoner},
  author  = {Kwan, Wai-Chung and Ong Jun Leang, Joshua and Vougiouklis, Pavlos and Pan, Jeff Z. and Valentino, Marco
             and Minervini, Pasquale},
  journal = {arXiv preprint arXiv:2511.00602},
  year    = {2025}
}"""


CITATION_LINES = ("## Citation", "", "```bibtex", OPENSIR_BIBTEX, "```", "")  # the end of both cards


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


POOL_DATA_FILE = "data/train.jsonl"


class PublishError(ValueError):
    """A run folder that cannot be published (no adapter, unreadable files); the message says what is missing."""


@dataclass
class RunInfo:
    run_dir: Path
    base_model: str
    adapter_config: dict[str, Any]
    run_config: dict[str, Any]
    steps: int | None
    pool_summary: dict[str, Any]
    eval_results: dict[str, Any]  # benchmark -> result (from results.json files)


def hub_base_model(name: str) -> str:
    """The Hub id a card should name: an embedded model's name or cache folder becomes the id of the model it was
    converted from (``embedded`` -> SmolLM2-135M-Instruct, ``embedded-qwen0.5b`` -> Qwen2.5-Coder-0.5B-Instruct)."""
    model = embedded_model_for(name)
    return model.hub_id if model is not None else name


def base_model_license(hub_id: str) -> str | None:
    """The licence of a base model where it is known here (the embedded models'), else None."""
    return next((m.license for m in EMBEDDED_MODELS.values() if m.hub_id == hub_id), None)


def eval_result_entries(eval_results: dict[str, Any]) -> list:
    """One huggingface_hub ``EvalResult`` per benchmark, protocol and metric of the run's results.json files (in
    percent; with one sample per question pass@1 and maj@1 equal avg@1 and are left out). The Hub shows them as
    evaluation results and writes them as ``model-index``."""
    from huggingface_hub import EvalResult

    entries = []
    for bench, r in eval_results.items():
        if bench == MACRO:
            continue
        spec = BENCHMARKS.get(bench)
        hub_path, config, split = spec.hub[:3] if spec else (bench, None, None)
        tables = r.get("protocols") or {r.get("protocol", "default"): r.get("metrics", {})}
        for protocol, metrics in tables.items():
            for name, value in metrics.items():
                if name.endswith("_se") or not isinstance(value, int | float):
                    continue
                if r.get("n") == 1 and not name.startswith("avg@"):
                    continue
                entries.append(EvalResult(
                    task_type="text-generation", task_name="Mathematical reasoning", dataset_type=hub_path,
                    dataset_name=BENCHMARK_TITLES.get(bench, bench), dataset_config=config, dataset_split=split,
                    metric_type="accuracy" if name.startswith("avg@") else name, metric_value=round(100 * value, 2),
                    metric_name=f"{name} ({protocol} protocol)", metric_config=protocol,
                ))  # fmt: skip
    return entries


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise PublishError(f"{path}: expected a JSON object")
    return data


def find_eval_results(run_dir: Path, extra: list[str | Path] = ()) -> dict[str, Any]:
    """Benchmark results from ``extra`` results.json files and any ``RUN_DIR/*/results.json``."""
    files = [Path(p) for p in extra] + sorted(run_dir.glob("*/results.json"))
    results: dict[str, Any] = {}
    for path in files:
        if not path.is_file():
            raise PublishError(f"evaluation results not found: {path}")
        for bench, result in read_json(path).items():
            if isinstance(result, dict) and "metrics" in result:
                results[bench] = result
    return results


def read_run(run_dir: str | Path, eval_results: list[str | Path] = ()) -> RunInfo:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run folder not found: {run_dir}")
    missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
    if missing:
        raise PublishError(f"{run_dir} holds no trained adapter (missing {', '.join(missing)}); train with use_peft")
    adapter_config = read_json(run_dir / "adapter_config.json")
    run_config = read_json(run_dir / RUN_CONFIG_FILE) if (run_dir / RUN_CONFIG_FILE).is_file() else {}
    steps = None
    if (run_dir / METRICS_FILE).is_file():
        from opensir_lite.curves import read_metrics

        rows = read_metrics(run_dir / METRICS_FILE)
        steps = max((int(r["step"]) for r in rows), default=None)
    try:
        pool_summary = summarize_pool(load_run_pool(run_dir).history)
    except (FileNotFoundError, ValueError) as e:
        raise PublishError(f"cannot read the pool of {run_dir}: {e}") from None
    base = run_config.get("model", {}).get("model_name_or_path") or adapter_config.get("base_model_name_or_path", "")
    return RunInfo(
        run_dir=run_dir,
        base_model=hub_base_model(str(base)),
        adapter_config=adapter_config,
        run_config=run_config,
        steps=steps,
        pool_summary=pool_summary,
        eval_results=find_eval_results(run_dir, list(eval_results)),
    )


def model_card_data(info: RunInfo, repo_id: str, pool_repo_id: str | None = None):
    """The card's metadata as huggingface_hub's ``ModelCardData``: base model, library, pipeline, tags, licence,
    datasets, the evaluation results (``model-index``) and the run's recipe values (``opensir_lite``; YAML-escaped
    by huggingface_hub, so quotes, colons and newlines survive)."""
    from huggingface_hub import ModelCardData

    training = info.run_config.get("training", {})
    model = info.run_config.get("model", {})
    tags = [t for t in CARD_TAGS if t != "qlora" or model.get("load_in_4bit")]
    recipe = {"recipe": info.run_config.get("recipe"), "steps": info.steps}
    recipe.update({k: training[k] for k in CARD_TRAINING_KEYS if k in training})
    recipe.update({k: model[k] for k in CARD_MODEL_KEYS if k in model})
    evals = eval_result_entries(info.eval_results)
    return ModelCardData(
        base_model=info.base_model, library_name="peft", pipeline_tag="text-generation", tags=tags,
        license=base_model_license(info.base_model), datasets=[pool_repo_id] if pool_repo_id else None,
        eval_results=evals or None, model_name=repo_id if evals else None,
        opensir_lite={k: v for k, v in recipe.items() if v is not None},
    )  # fmt: skip


def model_card(
    info: RunInfo, repo_id: str, plots: list[str], pool_repo_id: str | None = None, explorer: str | None = None
):
    """The README.md of the adapter repo as a huggingface_hub ``ModelCard``: :func:`model_card_data` as its
    metadata, and a body with the base model, recipe, steps, pool statistics, evaluation (with the generation
    settings), plots, usage and the OpenSIR citation."""
    from huggingface_hub import ModelCard

    data = model_card_data(info, repo_id, pool_repo_id)
    body = model_card_body(info, repo_id, plots, pool_repo_id, explorer)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _cell(value: Any) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def model_card_body(
    info: RunInfo, repo_id: str, plots: list[str], pool_repo_id: str | None = None, explorer: str | None = None
) -> str:
    training = info.run_config.get("training", {})
    model = info.run_config.get("model", {})
    s = info.pool_summary
    quant = "QLoRA (4-bit NF4 base)" if model.get("load_in_4bit") else "LoRA"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {quant} adapter for **{info.base_model}** trained with OpenSIR self-play "
        "([arXiv 2511.00602](https://arxiv.org/abs/2511.00602)) with opensir_lite: one policy writes maths problems as teacher "
        "and solves them as student, starting from the single seed problem, with no labelled data.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{info.base_model}` |",
        f"| recipe | `{_cell(info.run_config.get('recipe') or 'unknown')}` |",
        f"| training steps | {info.steps if info.steps is not None else 'unknown'} |",
    ]
    for key in CARD_TRAINING_KEYS:
        if key in training and key != "max_steps":
            lines.append(
                f"| {key} | {_cell(repr(training[key]) if isinstance(training[key], str) else training[key])} |"
            )
    for key in ("lora_r", "lora_alpha", "load_in_4bit"):
        if key in model:
            lines.append(f"| {key} | {model[key]} |")
    embedded = embedded_model_for(str(model.get("model_name_or_path", "")))
    if embedded is not None and embedded.note:
        lines += ["", f"The base weights were {embedded.note} (`{embedded.name}` in opensir_lite)."]
    lines += [
        "",
        "## Generated problems (pool)",
        "",
        f"- teacher outputs: {s['generated']}, legal: {s['legal']} ({s['legal_ratio']:.1%}), pool size: "
        f"{s['pool_size']}",
        f"- mean solve rate of legal problems: {format_optional(s['solve_rate_mean'])}; mean novelty: {format_optional(s['novelty_mean'])}",
    ]
    if s["illegal_reasons"]:
        lines.append("- illegal outputs by cause: " + ", ".join(f"{k} {v}" for k, v in s["illegal_reasons"].items()))
    if s["top_concepts"]:
        lines.append("- most frequent concepts: " + ", ".join(f"{k} ({v})" for k, v in s["top_concepts"].items()))
    if pool_repo_id:
        lines.append(f"- the full pool: [{pool_repo_id}](https://huggingface.co/datasets/{pool_repo_id})")
    lines += ["", "## Evaluation", ""]
    if info.eval_results:
        lines += [
            "| benchmark | rows | protocol | metric | value | model | adapter |",
            "|---|---:|---|---|---:|---|---|",
        ]
        for bench, r in info.eval_results.items():
            tables = r.get("protocols") or {r.get("protocol", "-"): r.get("metrics", {})}
            for protocol, metrics in tables.items():
                for name, value in metrics.items():
                    if name.endswith("_se"):
                        continue
                    se = metrics.get(f"{name}_se")
                    shown = f"{100 * value:.1f}%" + (f" ± {100 * se:.1f}" if se is not None else "")
                    lines.append(
                        f"| {bench} | {r.get('rows', '-')} | {protocol} | {name} | {shown} | "
                        f"{hub_base_model(str(r.get('model', '-')))} | {r.get('adapter') or '-'} |"
                    )
        lines += ["", "Generation settings:", ""]
        for bench, r in info.eval_results.items():
            st = r.get("settings") or {}
            if st:
                shown = ", ".join(f"{k} {st[k]}" for k in ("n", "temperature", "top_p", "max_new_tokens", "limit",
                                                            "seed", "dtype") if st.get(k) is not None)  # fmt: skip
                lines.append(f"- {bench}: {shown}")
            else:
                lines.append(f"- {bench}: not recorded")
    else:
        lines.append("No evaluation results were found in the run folder (`scripts/evaluate.py --adapter ...`).")
    if explorer:
        lines += ["", "## Explore the generated problems", "",
                  f"[`{explorer}`]({explorer}) is one self-contained page (download it and open it offline in any "
                  "browser): the embedding map of the pool with hover, filters by step, legality, concept, solve rate "
                  "and text, and for each problem its reference, teacher output, student answers by vote class and "
                  "rewards."]  # fmt: skip
    if plots:
        lines += ["", "## Plots", ""]
        titles = {CURVES_FILE: "Training curves", **{f"{k}.png": v for k, v in FIGURES.items()}}
        lines += [f"![{titles.get(Path(p).name, Path(p).stem)}]({p})" for p in plots]
    hard = hardest_problems(load_run_pool(info.run_dir).history, 3)
    if hard:
        lines += ["", "## Hardest generated problems", ""]
        lines += [
            f"- (solve rate {format_optional(r.solve_rate, '.2f')}) {' '.join(r.problem.split())[:300]}" for r in hard
        ]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        "```",
        "",
        "or evaluate it: `python scripts/evaluate.py --model "
        f"{info.base_model} --adapter {repo_id} --benchmarks gsm8k,college_math,math500`",
        "",
        *CITATION_LINES,
    ]
    return "\n".join(lines)


def pool_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The pool records as flat rows (one column per reward) that ``datasets`` loads with a stable schema."""
    rows = []
    for r in load_run_pool(run_dir).history:
        row = {k: getattr(r, k) for k in POOL_FIELDS if not k.startswith("reward_")}
        row.update({f"reward_{k}": r.rewards.get(k) for k in REWARD_COLUMNS})
        rows.append(row)
    return rows


POOL_FIELDS: dict[str, tuple[str, str]] = {
    # column -> (datasets dtype, meaning)
    "id": ("int64", "record id (0 is the seed problem)"),
    "problem": ("string", "the problem text the teacher wrote (empty when it wrote none)"),
    "step": ("int64", "training step of the round that wrote it (0: the seed)"),
    "concepts": ("list of string", "the concepts the teacher listed (at most three)"),
    "legal": ("bool", "the teacher output parsed as a problem (the official legality rule)"),
    "reason": ("string", "why an output is illegal (no_problem, short_problem, too_many_concepts, ...); null if legal"),
    "in_pool": ("bool", "the problem is in the final pool"),
    "source": ("string", "seed, teacher or file"),
    "reference_id": ("int64", "id of the pool problem the teacher was shown"),
    "solve_rate": ("float64", "the majority's share of the student's valid answers; null without a valid answer"),
    "majority_answer": ("string", "the students' majority answer"),
    "n_valid_answers": ("int64", "student samples with a readable answer"),
    "mean_student_tokens": ("float64", "mean length of the student samples"),
    "novelty": ("float64", "embedding novelty against the pool and the round"),
    "combined_score": ("float64", "solvability + novelty, the score that selects problems"),
    **{f"reward_{k}": ("float64", f"the teacher's {k} reward") for k in REWARD_COLUMNS},
}


_FEATURE_DTYPES = {"list of string": {"sequence": "string"}}


def size_category(n: int) -> str:
    """The Hub's size category of a dataset of ``n`` rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def dataset_card(repo_id: str, model_repo_id: str, info: RunInfo, rows: int):
    """The pool repo's README.md as a huggingface_hub ``DatasetCard``: ``DatasetCardData`` with the size category,
    task, data files and features, and a body documenting every field of ``data/train.jsonl`` and the run it
    came from."""
    from huggingface_hub import DatasetCard, DatasetCardData

    s = info.pool_summary
    features = [{"name": name, "dtype": _FEATURE_DTYPES.get(dtype, dtype)} for name, (dtype, _) in POOL_FIELDS.items()]
    data = DatasetCardData(
        size_categories=[size_category(rows)], task_categories=["text-generation"], language=["en"],
        tags=["opensir", "self-play", "math", "synthetic"], pretty_name=f"OpenSIR problem pool of {model_repo_id}",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": POOL_DATA_FILE}]}],
        dataset_info={"features": features, "splits": [{"name": "train", "num_examples": rows}]},
        source_run={"model": model_repo_id, "base_model": info.base_model,
                    "recipe": info.run_config.get("recipe"), "steps": info.steps},
    )  # fmt: skip
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"Every problem the teacher wrote while training [{model_repo_id}](https://huggingface.co/{model_repo_id}) "
        f"with OpenSIR self-play from **{info.base_model}** (recipe `{_cell(info.run_config.get('recipe') or 'unknown')}`, "
        f"{info.steps if info.steps is not None else 'unknown'} steps): {s['generated']} teacher outputs, "
        f"{s['legal']} legal, {s['pool_size']} in the final pool (`in_pool`). Illegal rows keep their `reason`.",
        "",
        f"## Fields of `{POOL_DATA_FILE}`",
        "",
        "| field | type | meaning |",
        "|---|---|---|",
        *(f"| `{name}` | {dtype} | {meaning} |" for name, (dtype, meaning) in POOL_FIELDS.items()),
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'pool = load_dataset("{repo_id}", split="train")',
        "```",
        "",
        *CITATION_LINES,
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
