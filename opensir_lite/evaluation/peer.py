"""Agreement with a peer evaluator, lm-evaluation-harness: run its own tasks on this project's rows,
regrade its logged completions with our grader (both protocols) and ours with its answer filters and exact match,
and sort every disagreement into a class with an example.

The harness is an optional extra (``requirements-peer.txt``) and is imported only inside the functions that need
it. Its tasks live in :mod:`opensir_lite.peer_tasks`. The peer's grading is always the harness's own code: the
task's filter pipeline (``lm_eval.api.registry.get_filter``), its target template (``lm_eval.utils.apply_template``)
and ``exact_match`` with the task's ``regexes_to_ignore``. Nothing here re-implements it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from opensir_lite.attention import GROUPED_SDPA
from opensir_lite.evaluation.benchmarks import BenchmarkError, Item, load_items
from opensir_lite.evaluation.protocols import PROTOCOLS, grade
from opensir_lite.evaluation.stats import paired_difference, score_questions
from opensir_lite.peer_tasks import CHAT_TASKS, PEER_TASKS, PEER_TASKS_DIR, peer_doc

PEER_REQUIREMENT = "lm_eval==0.4.13"  # requirements-peer.txt pins the same
PEER_FALLBACK = "[invalid]"  # what the harness's regex filter returns when it finds no answer
SAMPLED_SUFFIX = "_sampled"  # the name of a shipped task's sampled variant (sampled_task)
TASK_BENCHMARK = {"opensir_gsm8k": "gsm8k", "opensir_gsm8k_cot": "gsm8k", "opensir_asdiv_cot": "asdiv",
                  "opensir_gsm8k_student": "gsm8k"}  # fmt: skip


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or one clear error naming the install command."""
    try:
        import lm_eval
    except ImportError as err:
        raise BenchmarkError(
            f"the peer evaluator needs lm-evaluation-harness: pip install -r requirements-peer.txt ({PEER_REQUIREMENT})"
        ) from err
    return lm_eval


class _TaskLoader(yaml.SafeLoader):
    """Reads a harness task YAML without importing its ``!function`` loaders (kept as ``"!function name"``)."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@cache
def task_config(task: str) -> dict[str, Any]:
    """The YAML of one of :data:`PEER_TASKS`, as written."""
    if task not in PEER_TASKS:
        raise BenchmarkError(f"unknown peer task {task!r}: choose from {', '.join(PEER_TASKS)}")
    return yaml.load((PEER_TASKS_DIR / f"{task}.yaml").read_text(), Loader=_TaskLoader)


def shipped_task(task: str) -> str:
    """The shipped task a task name stands for: itself, or the task whose sampled variant it names."""
    base = task.removesuffix(SAMPLED_SUFFIX)
    if base not in PEER_TASKS:
        raise BenchmarkError(f"unknown peer task {task!r}: choose from {', '.join(PEER_TASKS)}")
    return base


def sampled_task(
    task: str,
    tasks_dir: str | Path,
    repeats: int,
    temperature: float,
    top_p: float = 1.0,
    max_gen_toks: int | None = None,
) -> str:
    """Write ``<task>_sampled.yaml`` into ``tasks_dir`` (the ``--include_path`` of the run) and return its name: the
    shipped task, included as written (prompt, rows, filters, metric), with ``repeats`` completions per row sampled at
    ``temperature`` and ``top_p`` (and ``max_gen_toks`` where given). The harness grades the first completion of
    each row (its default ``take_first`` filters); :func:`sampled_scores` reads all of them. This is how
    ``scripts/evaluate.py``'s sampled figures (avg@k at a temperature) are read through the harness."""
    if repeats < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise BenchmarkError(
            f"sampling needs repeats >= 1, temperature > 0 and 0 < top_p <= 1, got {repeats}, {temperature}, {top_p}"
        )
    cfg = task_config(task)
    gen = {**cfg["generation_kwargs"], "do_sample": True, "temperature": temperature, "top_p": top_p}
    if max_gen_toks is not None:
        gen["max_gen_toks"] = max_gen_toks
    name = task + SAMPLED_SUFFIX
    spec = {"include": str((PEER_TASKS_DIR / f"{task}.yaml").resolve()), "task": name, "repeats": repeats,
            "generation_kwargs": gen}  # fmt: skip
    Path(tasks_dir).mkdir(parents=True, exist_ok=True)
    (Path(tasks_dir) / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return name


def filter_names(task: str) -> list[str]:
    """The task's answer filters (``strict-match``, ``flexible-extract``), in the YAML's order."""
    return [f["name"] for f in task_config(shipped_task(task))["filter_list"]]


def peer_target(task: str, doc: dict[str, Any]) -> str:
    """The reference string the harness compares with: the task's ``doc_to_target`` rendered by the harness."""
    from lm_eval.utils import apply_template

    return apply_template(task_config(shipped_task(task))["doc_to_target"], doc)


def peer_grade(task: str, filter_name: str, completion: str, doc: dict[str, Any]) -> tuple[str | None, bool]:
    """(answer, correct) of one completion as the harness grades it under one of the task's filters: the filter
    pipeline, then ``exact_match`` against the rendered target. The answer is None where the filter finds none."""
    require_lm_eval()
    import lm_eval.filters  # noqa: F401  (registers the harness's filters)
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.api.registry import get_filter

    cfg = task_config(shipped_task(task))
    spec = next((f for f in cfg["filter_list"] if f["name"] == filter_name), None)
    if spec is None:
        raise BenchmarkError(f"{task} has no filter {filter_name!r}: choose from {', '.join(filter_names(task))}")
    resps: Any = [[completion]]
    for step in spec["filter"]:
        kwargs = {k: v for k, v in step.items() if k != "function"}
        resps = list(get_filter(step["function"])(**kwargs).apply(resps, [doc]))
    answer = resps[0]
    metric = next(m for m in cfg["metric_list"] if m["metric"] == "exact_match")
    options = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation") if k in metric}
    correct = exact_match_hf_evaluate(predictions=[answer], references=[peer_target(task, doc)], **options)
    return (None if answer == PEER_FALLBACK else answer), bool(correct["exact_match"] == 1.0)


# --- running the harness -------------------------------------------------------------------------------------------


def lm_eval_command(
    model_path: str,
    task: str,
    output_path: str | Path,
    adapter: str | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    holdout: int | None = None,
    batch_size: int = 8,
    dtype: str = "bfloat16",
    device: str = "cpu",
    max_gen_toks: int | None = None,
    include_path: str | Path | None = None,
    sampling_seed: int | None = None,
) -> list[str]:
    """The ``lm_eval`` command line (its real entry point; on a CPU through :mod:`.lm_eval_cpu`, which registers
    ``sdpa_grouped`` first) that evaluates a folder or Hub id, with an adapter through
    the harness's ``peft=``, on this project's rows: ``--include_path`` names :mod:`opensir_lite.peer_tasks` (or
    the folder :func:`sampled_task` wrote) and ``--metadata`` says which rows. ``sampling_seed`` is the harness's
    torch seed (its ``--seed`` is random, numpy, torch, few-shot; default 0,1234,1234,1234)."""
    model_args = f"pretrained={model_path},dtype={dtype}" + (f",peft={adapter}" if adapter else "")
    entry = ["-m", "lm_eval"]
    if device == "cpu":  # the same tokens, faster: the harness's CLI with sdpa_grouped registered
        model_args += f",attn_implementation={GROUPED_SDPA}"
        entry = ["-m", "opensir_lite.evaluation.lm_eval_cpu"]
    metadata: dict[str, Any] = {"seed": seed}
    if data_dir is not None:
        metadata["data_dir"] = str(data_dir)
    if limit is not None:
        metadata["limit"] = limit
    if holdout is not None:
        metadata["holdout"] = holdout
    cmd = [sys.executable, *entry, "--model", "hf", "--model_args", model_args,
           "--include_path", str(include_path or PEER_TASKS_DIR), "--tasks", task, "--metadata", json.dumps(metadata),
           "--batch_size", str(batch_size), "--device", device, "--log_samples", "--output_path", str(output_path)]  # fmt: skip
    if max_gen_toks is not None:
        cmd += ["--gen_kwargs", f"max_gen_toks={max_gen_toks}"]
    if sampling_seed is not None:
        cmd += ["--seed", f"0,1234,{sampling_seed},1234"]
    if shipped_task(task) in CHAT_TASKS:
        cmd += ["--apply_chat_template"]
    return cmd


def run_lm_eval(cmd: list[str]) -> None:
    """Run the harness; its exit status, when not 0, becomes one error line."""
    require_lm_eval()
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"lm_eval exited with status {done.returncode}: {shlex.join(cmd)}")


def find_peer_samples(output_path: str | Path, task: str) -> Path:
    """The newest ``samples_<task>_*.jsonl`` the harness wrote under ``output_path``."""
    found = sorted(Path(output_path).rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise BenchmarkError(f"no samples_{task}_*.jsonl under {output_path}: run lm_eval with --log_samples")
    return found[-1]


# --- reading and regrading -----------------------------------------------------------------------------------------


@dataclass
class Graded:
    """One row's completion and every reading of it: ``filter -> (answer, correct)`` for the peer and
    ``protocol -> (answer, correct)`` for ours (of the first completion: the harness's own verdict as logged), and,
    for every completion of the row (several where it was sampled with repeats), ``peer_all`` and ``ours_all``:
    the same readings as lists in the order of ``completions``."""

    index: int
    question: str
    completion: str
    peer: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    ours: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    peer_all: dict[str, list[tuple[str | None, bool]]] = field(default_factory=dict)
    ours_all: dict[str, list[tuple[str | None, bool]]] = field(default_factory=dict)


def _items_by_index(benchmark: str, data_dir: str | Path | None) -> dict[int, Item]:
    _, items, _ = load_items(benchmark, data_dir)
    return {it.index: it for it in items}


def read_peer_samples(path: str | Path, task: str, data_dir: str | Path | None = None) -> list[Graded]:
    """The harness's logged samples (one line per row and filter), one :class:`Graded` per row: the peer's own
    verdicts as logged, and our grader's under both protocols on the same completion; for every completion of the
    row (its repeats), both graders' readings (the peer's by its own filters and metric, :func:`peer_grade`)."""
    task = shipped_task(task)
    items = _items_by_index(TASK_BENCHMARK[task], data_dir)
    rows: dict[int, Graded] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            s = json.loads(line)
            doc, completions = s["doc"], [str(c) for c in s["resps"][0]]
            index, name = int(doc["opensir_index"]), s["filter"]
            answer, correct = s["filtered_resps"][0], float(s["exact_match"]) == 1.0
            completion = completions[0]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise BenchmarkError(
                f"{path}:{lineno}: not a sample logged by lm_eval for an opensir task ({err})"
            ) from err
        if index not in items:
            raise BenchmarkError(f"{path}:{lineno}: row {index} is not in {TASK_BENCHMARK[task]}")
        g = rows.setdefault(index, Graded(index, items[index].question, completion, completions=completions))
        g.peer[name] = (None if answer == PEER_FALLBACK else answer, correct)
    for g in rows.values():
        item = items[g.index]
        g.ours_all = {p: [grade(p, c, item) for c in g.completions] for p in PROTOCOLS}
        g.ours = {p: v[0] for p, v in g.ours_all.items()}  # the first completion's, graded once
        doc = peer_doc(item)
        g.peer_all = {f: [peer_grade(task, f, c, doc) for c in g.completions] for f in filter_names(task)}
    return [rows[i] for i in sorted(rows)]


def read_our_samples(results_dir: str | Path, task: str, data_dir: str | Path | None = None) -> list[Graded]:
    """``scripts/evaluate.py``'s samples of each row of the task's benchmark: our verdicts as recorded and the
    peer's under each of the task's filters, of the first completion and of all of them."""
    from opensir_lite.evaluation.runner import load_samples

    task = shipped_task(task)
    benchmark = TASK_BENCHMARK[task]
    results = Path(results_dir) / "results.json" if Path(results_dir).is_dir() else Path(results_dir)
    samples = load_samples(results).get(benchmark)
    if not samples:
        raise BenchmarkError(f"{results}: no {benchmark} samples to regrade")
    items = _items_by_index(benchmark, data_dir)
    out = []
    for index in sorted(samples):
        s = samples[index]
        completions = list(s["completions"])
        g = Graded(index, s["question"], completions[0], completions=completions)
        g.ours_all = {
            p: list(zip(v["answers"], map(bool, v["correct"]), strict=True)) for p, v in s["by_protocol"].items()
        }
        g.ours = {p: v[0] for p, v in g.ours_all.items()}
        doc = peer_doc(items[index])
        g.peer_all = {name: [peer_grade(task, name, c, doc) for c in completions] for name in filter_names(task)}
        g.peer = {name: v[0] for name, v in g.peer_all.items()}
        out.append(g)
    return out


def each_completion(rows: list[Graded]) -> list[Graded]:
    """One :class:`Graded` per completion (a row sampled k times gives k), each with its own readings: the
    agreement of the two graders over every completion, not only the first."""
    return [
        Graded(g.index, g.question, c, peer={f: v[j] for f, v in g.peer_all.items()},
               ours={p: v[j] for p, v in g.ours_all.items()}, completions=[c])
        for g in rows for j, c in enumerate(g.completions)
    ]  # fmt: skip


def sampled_scores(rows: list[Graded], k: int | None = None) -> dict[str, dict[str, float]]:
    """avg@n, pass@k and maj@k (first k completions; default all) with their standard errors over rows, under each
    of our protocols (``ours:<protocol>``) and each of the peer's filters (``peer:<filter>``): the figures of
    ``scripts/evaluate.py``'s summary, from whichever evaluator sampled the completions."""
    if not rows:
        raise BenchmarkError("no rows to score")
    n = min(len(g.completions) for g in rows)
    readers = {f"ours:{p}": [g.ours_all[p][:n] for g in rows] for p in rows[0].ours_all}
    readers |= {f"peer:{f}": [g.peer_all[f][:n] for g in rows] for f in rows[0].peer_all}
    return {
        name: score_questions([[c for _, c in r] for r in rs], [[a for a, _ in r] for r in rs], k or n)
        for name, rs in readers.items()
    }


def sampled_difference(base: list[Graded], other: list[Graded], reader: str = "ours:official") -> dict[str, Any]:
    """``other`` - ``base`` on the rows both hold: each row's share of right completions under one reader
    (``ours:<protocol>`` or ``peer:<filter>``), paired by row. Two evaluators that sample the same model with
    different random streams should differ by about the sampling SE; a larger gap is a difference in the request
    or the decoding."""
    kind, _, name = reader.partition(":")
    if kind not in ("ours", "peer"):
        raise BenchmarkError(f"reader must be ours:<protocol> or peer:<filter>, got {reader!r}")
    by_index = {g.index: g for g in base}
    both = [(by_index[g.index], g) for g in other if g.index in by_index]
    if not both:
        raise BenchmarkError("the two evaluations share no row")

    def share(g: Graded) -> float:
        verdicts = (g.ours_all if kind == "ours" else g.peer_all).get(name)
        if not verdicts:
            raise BenchmarkError(f"row {g.index} has no {reader} reading")
        return sum(c for _, c in verdicts) / len(verdicts)

    x, y = [share(b) for b, _ in both], [share(o) for _, o in both]
    return {"reader": reader, "rows": len(both), "base": sum(x) / len(x), "other": sum(y) / len(y),
            **paired_difference(x, y)}  # fmt: skip


# --- agreement -----------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    found = _NUMBER.findall(text.replace("$", ""))
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def disagreement_class(ours: tuple[str | None, bool], peer: tuple[str | None, bool]) -> str:
    """Why two graders judged one completion differently, from the answers each read."""
    (a, _), (b, _) = ours, peer
    if b is None:
        return "the peer's filter found no answer"
    if a is None:
        return "our extraction found no answer"
    x, y = _number(a), _number(b)
    if y is None and not re.search(r"\d", b):
        return "the peer's filter read a string without a digit (its last-number regex takes `$.` from `$\\boxed{3}$.`)"
    if x is not None and y is not None and x == y:
        return "the same number, written differently (e.g. 18.00 or 1,000 against the gold's form)"
    if y is not None and x is None:
        return "ours read an expression or text, the peer a number"
    return "the graders read different numbers from the completion"


def agreement(rows: list[Graded], ours: str, peer: str, examples: int = 3) -> dict[str, Any]:
    """How often our protocol ``ours`` and the peer's filter ``peer`` give the same verdict on the same completions,
    and each class of disagreement with its count, its direction and ``examples`` example rows."""
    both = [g for g in rows if ours in g.ours and peer in g.peer]
    if not both:
        raise BenchmarkError(f"no row has both our {ours!r} verdict and the peer's {peer!r}")
    agree = sum(g.ours[ours][1] == g.peer[peer][1] for g in both)
    classes: dict[str, dict[str, Any]] = {}
    for g in both:
        if g.ours[ours][1] == g.peer[peer][1]:
            continue
        name = disagreement_class(g.ours[ours], g.peer[peer])
        c = classes.setdefault(name, {"rows": 0, "ours_right": 0, "peer_right": 0, "examples": []})
        c["rows"] += 1
        c["ours_right" if g.ours[ours][1] else "peer_right"] += 1
        if len(c["examples"]) < examples:
            c["examples"].append({"index": g.index, "ours": g.ours[ours][0], "peer": g.peer[peer][0],
                                  "completion_tail": g.completion[-300:]})  # fmt: skip
    return {
        "ours": ours,
        "peer": peer,
        "rows": len(both),
        "agree": agree,
        "agreement": agree / len(both),
        "ours_correct": sum(g.ours[ours][1] for g in both) / len(both),
        "peer_correct": sum(g.peer[peer][1] for g in both) / len(both),
        "disagreements": dict(sorted(classes.items(), key=lambda kv: -kv[1]["rows"])),
    }


def agreement_report(rows: list[Graded], source: str) -> dict[str, Any]:
    """Every pairing of our protocols with the peer's filters on one set of completions."""
    ours = sorted({p for g in rows for p in g.ours})
    peers = sorted({f for g in rows for f in g.peer})
    return {"completions": source, "rows": len(rows),
            "pairs": [agreement(rows, o, p) for o in ours for p in peers]}  # fmt: skip


def format_agreement(report: dict[str, Any]) -> str:
    """A table per report: accuracy under each reading, agreement of each pair, and the disagreement classes."""
    lines = [f"completions: {report['completions']} ({report['rows']} rows)", "",
             "| ours | peer | ours correct | peer correct | agreement | disagreements (ours right / peer right) |",
             "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for p in report["pairs"]:
        kinds = "; ".join(
            f"{k}: {v['rows']} ({v['ours_right']}/{v['peer_right']})" for k, v in p["disagreements"].items()
        )
        lines.append(f"| {p['ours']} | {p['peer']} | {p['ours_correct']:.3f} | {p['peer_correct']:.3f} | "
                     f"{p['agreement']:.3f} ({p['agree']}/{p['rows']}) | {kinds or '-'} |")  # fmt: skip
    return "\n".join(lines)


def identical_completions(peer_rows: list[Graded], our_rows: list[Graded]) -> dict[str, int]:
    """On the rows both evaluated: how many completions are the same text (and the same once stripped of
    surrounding whitespace). With the student task and greedy decoding the two evaluators should sample the same."""
    ours = {g.index: g.completion for g in our_rows}
    both = [g for g in peer_rows if g.index in ours]
    return {"rows": len(both), "identical": sum(g.completion == ours[g.index] for g in both),
            "identical_stripped": sum(g.completion.strip() == ours[g.index].strip() for g in both)}  # fmt: skip
