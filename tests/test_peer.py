"""opensir_lite.evaluation.peer and opensir_lite/peer_tasks: lm-evaluation-harness on our rows, and the two graders
side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, subset
from opensir_lite.evaluation.peer import (
    Graded,
    agreement,
    agreement_report,
    disagreement_class,
    each_completion,
    filter_names,
    find_peer_samples,
    peer_grade,
    read_peer_samples,
    sampled_difference,
    sampled_scores,
    sampled_task,
    task_config,
)
from opensir_lite.evaluation.protocols import grade
from opensir_lite.peer_tasks import PEER_TASKS, PEER_TASKS_DIR, UPSTREAM_TASKS, peer_doc

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "peer"  # 8 GSM8K-style rows (3 evaluated, 5 few-shot) and 3 ASDiv rows
# Fields where our copy may differ from the harness's task: the task's name and where its rows come from.
DATA_SOURCE_FIELDS = {"task", "tag", "custom_dataset", "dataset_path", "dataset_name", "dataset_kwargs",
                      "training_split", "validation_split", "test_split", "fewshot_split",
                      "should_decontaminate", "doc_to_decontamination_query"}  # fmt: skip
UPSTREAM_FILES = {"gsm8k": "gsm8k/gsm8k.yaml", "gsm8k_cot": "gsm8k/gsm8k-cot.yaml",
                  "asdiv_cot_llama": "asdiv/asdiv-cot-llama.yaml"}  # fmt: skip


@pytest.mark.parametrize("task", sorted(UPSTREAM_TASKS))
def test_tasks_copy_the_harness_task_field_by_field(task):
    """Each shipped task is the installed harness's own task (prompt, few-shot, stop strings, filters, metric)
    apart from where the rows come from: a harness upgrade that changes its task shows up here."""
    import lm_eval

    upstream = yaml.safe_load(
        (Path(lm_eval.__file__).parent / "tasks" / UPSTREAM_FILES[UPSTREAM_TASKS[task]]).read_text()
    )
    ours = task_config(task)
    assert {k: v for k, v in ours.items() if k not in DATA_SOURCE_FIELDS} == {
        k: v for k, v in upstream.items() if k not in DATA_SOURCE_FIELDS
    }
    assert ours["custom_dataset"].startswith("!function data.") and ours["test_split"] == "test"


def test_the_student_task_asks_our_prompt_and_grades_as_gsm8k():
    """opensir_gsm8k_student: our student system prompt (defined once, in opensir_lite.prompts), the question as the
    user turn, scripts/evaluate.py's greedy 1024 tokens, and the harness's gsm8k filters and metric."""
    from opensir_lite.evaluation.protocols import PROTOCOLS
    from opensir_lite.prompts import STUDENT_SYSTEM_PROMPT

    cfg, gsm8k = task_config("opensir_gsm8k_student"), task_config("opensir_gsm8k")
    assert cfg["description"] == STUDENT_SYSTEM_PROMPT and cfg["doc_to_text"] == "{{question}}"
    assert cfg["generation_kwargs"]["max_gen_toks"] == PROTOCOLS["strict"].max_new_tokens
    assert cfg["generation_kwargs"]["do_sample"] is False and cfg["num_fewshot"] == 0
    assert (cfg["filter_list"], cfg["metric_list"]) == (gsm8k["filter_list"], gsm8k["metric_list"])
    assert set(PEER_TASKS) == set(UPSTREAM_TASKS) | {"opensir_gsm8k_student"}


def _gsm8k_item(gold_row: int):
    _, items, _ = load_items("gsm8k", FIXTURE)
    return items[gold_row]


# completion, gold row of the fixture, then (ours opensir, ours strict, peer strict-match, peer flexible-extract)
GRADER_TABLE = [
    ("3 * 6 = 18\n#### 18", 2, (True, False, True, True)),  # the harness's format: strict needs a \boxed{}
    ("So the total is \\boxed{18}.", 2, (True, True, False, True)),  # our format: no "#### N" line for strict-match
    ("#### 18.00", 2, (True, False, False, False)),  # expected disagreement: the harness compares strings, 18.00 != 18
    ("#### $18", 2, (True, False, False, True)),  # strict-match's regex needs a digit after "#### "
    ("It is 18 dollars, and 5 more is 23.", 2, (False, False, False, False)),  # every reader takes the last number
    (
        "The answer is 18.",
        2,
        (True, False, False, True),
    ),  # the official evaluation's reading and the harness's last number
    ("#### 18 dollars", 2, (True, False, True, True)),  # a unit after the number
    (
        "\\boxed{\\frac{36}{2}}",
        2,
        (True, True, False, False),
    ),  # expected disagreement: an expression; the harness reads "2"
    ("#### eighteen", 2, (False, False, False, False)),  # a number in words: nobody reads it
    ("", 2, (False, False, False, False)),  # an empty completion
    ("#### -18", 2, (False, False, False, False)),  # the sign counts for both
    ("#### 2,400", 1, (True, False, True, True)),  # a thousands comma: both drop it
    ("2 * 1,200 = 2,400 pens. \\boxed{2,400}", 1, (True, True, False, True)),  # a comma inside \boxed{}
]


@pytest.mark.parametrize("completion,row,expected", GRADER_TABLE)
def test_our_grader_and_the_harness_on_fixed_answers(completion, row, expected):
    item = _gsm8k_item(row)
    doc = peer_doc(item)
    got = (grade("opensir", completion, item)[1], grade("strict", completion, item)[1],
           peer_grade("opensir_gsm8k", "strict-match", completion, doc)[1],
           peer_grade("opensir_gsm8k", "flexible-extract", completion, doc)[1])  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(
    "ours,peer,expected",
    [
        (("18.00", True), ("18.00", False), "the same number"),  # string against number comparison
        (("18", True), (None, False), "found no answer"),  # the peer's filter missed
        ((None, False), ("18", True), "our extraction found no answer"),  # ours missed
        (("\\frac{36}{2}", True), ("2", False), "expression"),  # an expression read whole by ours
        (("23", False), ("18", True), "different numbers"),  # two different numbers
        (("3", True), ("$.", False), "without a digit"),  # flexible-extract's regex on "$\\boxed{3}$."
    ],
)
def test_disagreement_classes(ours, peer, expected):
    assert expected in disagreement_class(ours, peer)


class CannedLM:
    """A harness model that answers each question with a fixed completion (keyed by the question in the prompt's
    last ``Question:``), so that the harness's whole pipeline grades known texts."""

    def __init__(self, answers: dict[str, str]):
        from lm_eval.api.model import LM

        class _LM(LM):
            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for r in requests:
                    last = r.arguments[0].rsplit("Question: ", 1)[-1]
                    out.append(next(a for q, a in answers.items() if last.startswith(q)))
                return out

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        self.lm = _LM()


@pytest.mark.slow
def test_peer_grade_reproduces_the_harness_pipeline(tmp_path):
    """The harness's own evaluation (simple_evaluate on opensir_gsm8k over the fixture's 3-row subset) logs the
    same answers and verdicts that peer_grade computes, and the rows are the subset scripts/evaluate.py picks."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    _, items, _ = load_items("gsm8k", FIXTURE)
    rows = subset(items, 3, 0, "gsm8k")
    assert [it.gold for it in rows] == ["18", "35", "48"]
    texts = ["#### 18", "So \\boxed{35}.", "#### 48.00"]  # right, right without "####", a string mismatch
    answers = {it.question: t for it, t in zip(rows, texts, strict=True)}
    manager = TaskManager(include_path=str(PEER_TASKS_DIR),
                          metadata={"data_dir": str(FIXTURE), "limit": 3, "seed": 0, "holdout": 3})  # fmt: skip
    out = simple_evaluate(model=CannedLM(answers).lm, tasks=["opensir_gsm8k"], task_manager=manager, log_samples=True)
    logged = out["samples"]["opensir_gsm8k"]
    assert sorted({s["doc"]["opensir_index"] for s in logged}) == [it.index for it in rows]
    assert len(logged) == 3 * len(filter_names("opensir_gsm8k"))
    for s in logged:
        answer, correct = peer_grade("opensir_gsm8k", s["filter"], s["resps"][0][0], s["doc"])
        assert (answer or "[invalid]", correct) == (s["filtered_resps"][0], s["exact_match"] == 1.0)
    path = tmp_path / "samples_opensir_gsm8k_x.jsonl"
    path.write_text("".join(json.dumps(s, default=str) + "\n" for s in logged))
    graded = read_peer_samples(path, "opensir_gsm8k", FIXTURE)
    report = agreement(graded, "opensir", "strict-match")
    assert (report["ours_correct"], report["peer_correct"]) == (1.0, 1 / 3)  # ours reads all three
    assert report["agreement"] == pytest.approx(1 / 3)
    assert set(report["disagreements"]) == {
        "the peer's filter found no answer",
        "the same number, written differently (e.g. 18.00 or 1,000 against the gold's form)",
    }


def test_few_shot_rows_never_overlap_the_evaluated_rows():
    """opensir_gsm8k's few-shot pool is outside every subset of up to `holdout` rows; a larger limit is refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("peer_data", PEER_TASKS_DIR / "data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    d = data.gsm8k(data_dir=str(FIXTURE), limit=3, seed=0, holdout=3, version=3.0)
    assert not {r["opensir_index"] for r in d["test"]} & {r["opensir_index"] for r in d["train"]}
    assert len(d["test"]) + len(d["train"]) == 8
    with pytest.raises(BenchmarkError, match="overlap"):
        data.gsm8k(data_dir=str(FIXTURE), limit=4, holdout=3)
    asdiv = data.asdiv(data_dir=str(FIXTURE), limit=2, seed=0)["test"]  # the ASDiv task's rows: our subset
    _, items, _ = load_items("asdiv", FIXTURE)
    assert [r["opensir_index"] for r in asdiv] == [it.index for it in subset(items, 2, 0, "asdiv")]
    assert all("body" not in r for r in asdiv)  # the offline copy's question already holds the body


@pytest.mark.parametrize(
    ("repeats", "temperature", "top_p", "max_gen_toks"),
    [
        (4, 0.7, 1.0, 512),  # the six-step runs' primary endpoint: avg@4 at the training temperature and budget
        (8, 0.6, 0.95, None),  # the official evaluation's sampling, the shipped budget kept
    ],
)
def test_the_sampled_variant_is_the_shipped_task_with_repeats_and_sampling(
    tmp_path, repeats, temperature, top_p, max_gen_toks
):
    """sampled_task writes a YAML that the harness's own loader reads as the shipped task (prompt, rows, filters,
    metric) with only repeats and the sampling settings changed."""
    from lm_eval.tasks._yaml_loader import load_yaml

    name = sampled_task("opensir_gsm8k_student", tmp_path, repeats, temperature, top_p, max_gen_toks)
    assert name == "opensir_gsm8k_student_sampled"
    loaded = load_yaml(tmp_path / f"{name}.yaml", resolve_func=False, recursive=True)
    shipped = load_yaml(PEER_TASKS_DIR / "opensir_gsm8k_student.yaml", resolve_func=False, recursive=True)
    changed = {k for k in loaded if loaded[k] != shipped.get(k)}
    assert changed == {"task", "repeats", "generation_kwargs"} and loaded["repeats"] == repeats
    gen = loaded["generation_kwargs"]
    assert gen["do_sample"] is True and (gen["temperature"], gen["top_p"]) == (temperature, top_p)
    assert gen["max_gen_toks"] == (max_gen_toks or shipped["generation_kwargs"]["max_gen_toks"])
    assert gen["until"] == shipped["generation_kwargs"]["until"]
    assert filter_names(name) == filter_names("opensir_gsm8k_student")  # graded as the shipped task
    with pytest.raises(BenchmarkError, match="temperature > 0"):
        sampled_task("opensir_gsm8k_student", tmp_path, 4, 0.0)


def _row(index: int, ours: list[bool], peer: list[bool]) -> Graded:
    """A row with one completion per verdict: our official reading and the peer's flexible-extract."""
    texts = [f"c{j}" for j in range(len(ours))]
    g = Graded(index, "q", texts[0], completions=texts)
    g.ours_all = {"opensir": [("1" if c else "2", c) for c in ours]}
    g.peer_all = {"flexible-extract": [("1" if c else "2", c) for c in peer]}
    g.ours, g.peer = {p: v[0] for p, v in g.ours_all.items()}, {f: v[0] for f, v in g.peer_all.items()}
    return g


def test_sampled_scores_and_the_paired_difference_of_two_evaluators():
    """avg@n, maj@n and pass@n of every completion under each reader, each completion as its own agreement row,
    and the difference of two evaluators' per-row accuracy paired by row."""
    a = [
        _row(0, [True, True, False, False], [True, True, False, True]),  # ours 2/4, the peer's 3/4
        _row(1, [False] * 4, [False] * 4),
    ]  # never right
    b = [_row(1, [True, False, False, False], [True] * 4), _row(0, [True] * 4, [True] * 4),
         _row(9, [True] * 4, [True] * 4)]  # row 9: only in b, left out of the pairing  # fmt: skip
    scores = sampled_scores(a)
    assert scores["ours:opensir"]["avg@4"] == pytest.approx(0.25)  # (2/4 + 0) / 2
    assert scores["peer:flexible-extract"]["avg@4"] == pytest.approx(0.375)
    assert scores["ours:opensir"]["pass@4"] == pytest.approx(0.5)
    flat = each_completion(a)
    assert len(flat) == 8 and agreement(flat, "opensir", "flexible-extract")["agree"] == 7  # row 0's 4th differs
    d = sampled_difference(a, b, "ours:opensir")
    assert d["rows"] == 2 and d["delta"] == pytest.approx(((1 - 0.5) + (0.25 - 0)) / 2)
    assert d["base"] == pytest.approx(0.25) and d["other"] == pytest.approx(0.625)
    with pytest.raises(BenchmarkError, match="reader must be"):
        sampled_difference(a, b, "official")
    with pytest.raises(BenchmarkError, match="share no row"):
        sampled_difference(a, [_row(5, [True], [True])])


def test_bad_inputs_are_one_clear_error(tmp_path):
    bad = tmp_path / "samples_opensir_gsm8k_1.jsonl"
    bad.write_text('{"doc": {}}\n')
    with pytest.raises(BenchmarkError, match="not a sample logged by lm_eval"):
        read_peer_samples(bad, "opensir_gsm8k", FIXTURE)
    with pytest.raises(BenchmarkError, match="no samples_opensir_gsm8k"):
        find_peer_samples(tmp_path / "none", "opensir_gsm8k")
    with pytest.raises(BenchmarkError, match="unknown peer task"):
        task_config("gsm8k")
    with pytest.raises(BenchmarkError, match="no row has both"):
        agreement([], "opensir", "strict-match")


@pytest.mark.slow
def test_the_shipped_task_runs_offline_through_lm_eval(tmp_path, tiny_model_dir):
    """scripts/peer_eval.py runs the harness's real entry point (python -m lm_eval) on a tiny random model and the
    fixture's 3-row subset, offline, and writes the agreement of the two graders on its completions."""
    out = tmp_path / "peer"
    task = "opensir_gsm8k_student"  # the chat-template path; the standard tasks' pipeline is tested above
    cmd = [sys.executable, str(ROOT / "scripts" / "peer_eval.py"), "--model", str(tiny_model_dir),
           "--task", task, "--data_dir", str(FIXTURE), "--limit", "3",
           "--dtype", "float32", "--batch_size", "3", "--max_gen_toks", "8", "--output_dir", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "-m opensir_lite.evaluation.lm_eval_cpu --model hf" in done.stdout
        and "attn_implementation=sdpa_grouped" in done.stdout
    )
    payload = json.loads((out / "agreement.json").read_text())
    (report,) = payload["reports"]
    assert report["rows"] == 3 and {p["peer"] for p in report["pairs"]} == {"strict-match", "flexible-extract"}
    logged = [json.loads(line) for line in find_peer_samples(out / "lm_eval", task).read_text().splitlines()]
    from opensir_lite.models import load_tokenizer
    from opensir_lite.prompts import render, student_messages

    tokenizer = load_tokenizer(str(tiny_model_dir))
    for s in logged:  # the harness asked exactly what scripts/evaluate.py asks
        assert s["arguments"]["gen_args_0"]["arg_0"] == render(tokenizer, student_messages(s["doc"]["question"]))
    again = subprocess.run(cmd + ["--regrade_only"], capture_output=True, text=True)
    assert again.returncode == 0 and json.loads((out / "agreement.json").read_text())["reports"] == payload["reports"]
    assert (
        agreement_report(read_peer_samples(find_peer_samples(out / "lm_eval", task), task, FIXTURE), "x")["rows"] == 3
    )


@pytest.mark.slow
def test_the_sampled_task_runs_through_lm_eval_and_compares_with_ours(tmp_path, tiny_model_dir):
    """--repeats/--temperature: the harness samples k completions per row through its real entry point, both graders
    read every one of them, and --ours pairs the harness's avg@k with scripts/evaluate.py's on the same rows."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ours = tmp_path / "ours"
    evaluate = [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model", str(tiny_model_dir),
                "--benchmarks", "gsm8k", "--data_dir", str(FIXTURE), "--limit", "3", "--seed", "0", "--n", "2",
                "--temperature", "1.0", "--max_new_tokens", "8", "--output_dir", str(ours)]  # fmt: skip
    done = subprocess.run(evaluate, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "peer"
    cmd = [sys.executable, str(ROOT / "scripts" / "peer_eval.py"), "--model", str(tiny_model_dir),
           "--task", "opensir_gsm8k_student", "--data_dir", str(FIXTURE), "--limit", "3", "--repeats", "2",
           "--temperature", "1.0", "--max_gen_toks", "8", "--dtype", "float32", "--batch_size", "6",
           "--output_dir", str(out), "--ours", str(ours)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"--include_path {out / 'tasks'} --tasks opensir_gsm8k_student_sampled" in done.stdout
    logged = [
        json.loads(line)
        for line in find_peer_samples(out / "lm_eval", "opensir_gsm8k_student_sampled").read_text().splitlines()
    ]
    assert logged and all(len(s["resps"][0]) == 2 for s in logged)  # two sampled completions per row
    payload = json.loads((out / "agreement.json").read_text())
    assert [r["rows"] for r in payload["reports"]] == [6, 6]  # every completion of both evaluators, graded twice
    sampled = payload["sampled"]
    assert set(sampled["harness"]) == {"ours:opensir", "ours:strict", "peer:strict-match", "peer:flexible-extract"}
    assert "avg@2" in sampled["harness"]["ours:opensir"] and "avg@2" in sampled["ours"]["ours:opensir"]
    assert {d["reader"] for d in sampled["difference"]} == set(sampled["harness"])
    assert all(d["rows"] == 3 for d in sampled["difference"])
