"""Re-reading a finished evaluation: truncated completions and repetition loops, a subset of its rows, and
regrading its stored completions under today's protocols without sampling again.
"""

from __future__ import annotations

import json
from pathlib import Path

from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, subset
from opensir_lite.evaluation.runner import EvalSettings, grade_benchmark, load_results, write_outputs
from opensir_lite.pool import read_jsonl_objects


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
