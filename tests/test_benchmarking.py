"""The step-time breakdown computed from metrics rows, and the deadlock ablation on the embedded model."""

from pathlib import Path

import pytest
from benchlib import format_breakdown, format_overhead, overhead_ratio, step_breakdown


def row(tg, sg, gr, em, other, upd, tokens):
    step = tg + sg + gr + em + other + upd
    return {
        "time/teacher_generation": tg, "time/student_generation": sg, "time/grading": gr, "time/embedding": em,
        "time/selfplay_other": other, "time/update": upd, "time/step": step, "tokens_generated": tokens,
        "legal_ratio": 0.5,
    }  # fmt: skip


def test_breakdown_means_and_shares():
    rows = [row(100, 100, 0, 0, 0, 100, 0), row(40, 40, 1, 1, 2, 16, 800), row(40, 40, 3, 1, 0, 16, 1200)]
    b = step_breakdown(rows, skip_first=1)  # the warm-up step is left out
    assert b["steps"] == 2
    assert b["step_seconds"] == pytest.approx(100.0)
    assert b["overhead_seconds"] == pytest.approx(4.0)  # grading + embedding + other
    assert b["overhead_share"] == pytest.approx(0.04)
    assert b["share"]["update"] == pytest.approx(0.16)
    assert b["generation_tokens_per_second"] == pytest.approx(1000 / 80)
    assert "overhead outside generation and update: 4.00 s = 4.0%" in format_breakdown(b)


def test_overhead_ratio_per_generated_token():
    """Self-play against the gold control: seconds per generated token, their ratio, and a control (no teacher, no
    legal ratio) in the table."""
    selfplay = step_breakdown([row(30, 35, 0, 0, 0, 75, 4000)] * 2)
    control = {**row(0, 40, 0, 0, 0, 60, 3000), "legal_ratio": None}
    gold = step_breakdown([control] * 2)
    assert gold["legal_ratio"] is None and "legal ratio -" in format_breakdown(gold)
    assert overhead_ratio(selfplay, gold) == pytest.approx((140 / 4000) / (100 / 3000))  # 1.05
    record = {"rows": {"learn-cpu-qwen": selfplay, "grpo-gold": gold}, "ratio_seconds_per_token": 1.05}
    table = format_overhead(record)
    assert "1.05x (target <= 1.10x)" in table and "35.0" in table and "33.3" in table  # s per 1k tokens
    assert overhead_ratio(selfplay, step_breakdown([row(0, 0, 0, 0, 0, 5, 0)])) is None  # nothing generated


def test_overhead_from_two_finished_runs(tmp_path):
    """--from_runs times two runs' metrics.jsonl: probe steps (their probe time sits in the step) and the warm-up
    step are left out, --steps_between keeps a step range of both; a missing run is one error line."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    runs = {"sp": [row(99, 99, 0, 0, 0, 99, 1), row(30, 35, 0, 0, 0, 75, 4000), {**row(30, 35, 0, 0, 0, 275, 4000),
            "time/probe": 200.0}, row(30, 35, 0, 0, 0, 75, 4000)],  # warm-up, step, probe step, step
            "gold": [row(99, 99, 0, 0, 0, 99, 1), {**row(0, 40, 0, 0, 0, 60, 3000), "legal_ratio": None}]}  # fmt: skip
    runs["sp"].append(row(30, 35, 0, 0, 0, 275, 4000))  # step 5: a slower sitting, left out by --steps_between 1 4
    for name, rows in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": i + 1, **r}) + "\n" for i, r in enumerate(rows))
        )
    script = [sys.executable, str(root / "benchmarks" / "overhead.py"), "--from_runs"]
    out = tmp_path / "o.json"
    cases = [  # (extra arguments, self-play steps timed, self-play s/step, ratio)
        ([], 3, 620 / 3, (620 / 3 / 4000) / (100 / 3000)),  # steps 2, 4, 5 (140, 140, 340 s): the slow step 5 is in
        (["--steps_between", "1", "4"], 2, 140, 1.05),  # steps 2 and 4: (140/4000) / (100/3000)
    ]
    for extra, steps, seconds, ratio in cases:
        proc = subprocess.run([*script, str(tmp_path / "sp"), str(tmp_path / "gold"), "--json", str(out), *extra],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        record = json.loads(out.read_text())
        assert record["rows"]["sp"]["steps"] == steps
        assert record["rows"]["sp"]["step_seconds"] == pytest.approx(seconds)
        assert record["ratio_seconds_per_token"] == pytest.approx(ratio)
        assert f"{ratio:.2f}x" in proc.stdout
    proc = subprocess.run([*script, str(tmp_path / "sp"), str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope/metrics.jsonl not found" in proc.stderr


def test_benchmark_decoding_script(tiny_model_dir, tmp_path):
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "decoding.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "decoding.py"), "--model", str(tiny_model_dir),
         "--batch", "4", "--max_new_tokens", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "speed-up" in proc.stdout
    record = json.loads(out.read_text())
    assert [r["attention"] for r in record["rows"]] == ["sdpa", "sdpa_grouped"]
    assert all(r["same_tokens"] and r["tokens"] == 32 for r in record["rows"])  # 4 rows x 8 tokens, identical


@pytest.mark.slow
def test_learn_cpu_breaks_the_deadlock_on_the_embedded_model(tmp_path, embedded_dir, embedder):
    """Behaviour on the real embedded SmolLM2-135M (untrained, 4-bit, sampled by the merged copy as in training):
    with learn-cpu's deadlock breakers the teacher writes legal problems that the students answer, so GRPO gets a
    teacher and a student signal (results/smollm2 measured 27% legal, 70% valid answers). Before them, 0 of 80."""
    from benchlib import ablate_rounds

    from opensir_lite.runtime import parse_config
    from opensir_lite.training import load_policy_with_adapter

    # one round of 4 reference groups of G=8, sampled in one batch: 32 teacher samples (at 27% legal, P(none) ~ 4e-5)
    args, model_args = parse_config(
        ["--config", "learn-cpu", "--teacher_upscale_ratio", "4", "--output_dir", str(tmp_path / "run")]
    )
    policy, tokenizer = load_policy_with_adapter(model_args, args)
    [row] = ablate_rounds(policy, tokenizer, embedder, [("learn-cpu", args)], 1, model_args)
    assert row["legal_ratio"] > 0  # legal problems: the teacher deadlock is broken
    assert row["answered_share"] > 0 and row["student_valid_rate"] >= 0.3  # latex_expr reads the prose answers
    assert row["teacher_groups_with_signal"] > 0  # rewards vary inside a teacher group: non-zero advantages


@pytest.mark.parametrize(
    "recipe,gpu,backend,fits",
    [
        ("colab-t4", "t4", "transformers", True),  # the Colab recipe fits its card
        ("paper-llama3.2-3b", "t4", "transformers", False),  # full bf16 fine-tuning of 3B does not
        ("gpu-qwen0.5b", "a100", "vllm_lora", True),
    ],
)
def test_gpu_plan_prints_an_estimate(recipe, gpu, backend, fits, tmp_path):
    """benchmarks/gpu_plan.py: every memory component and the step time of a recipe on a GPU, marked as an estimate
    with its assumptions; more memory for longer sequences, more time for more steps."""
    import json
    import subprocess
    import sys

    from opensir_lite.plan import Assumptions, plan

    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_plan.py", "--recipe", recipe, "--gpu", gpu, "--backend",
                           backend, "--json", str(out)], cwd=Path(__file__).parents[1], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ESTIMATE (not measured)") and "assumptions:" in proc.stdout
    p = json.loads(out.read_text())
    assert p["fits"] is fits and p["estimate"] is True
    assert p["total_gib"] == pytest.approx(sum(p["memory_gib"].values()), abs=0.05)
    assert p["step_s"] == pytest.approx(p["generation_s_per_step"] + p["update_s_per_step"], abs=0.2)
    if backend == "transformers":
        assert p["memory_gib"]["KV cache (largest generate call)"] > 0
    longer = plan(recipe, gpu, backend, Assumptions(teacher_fill=0.9, student_fill=0.9))  # longer completions
    assert longer["generation_s_per_step"] > p["generation_s_per_step"]


def test_gpu_plan_protocol_adds_up():
    from opensir_lite.plan import claim_protocol

    hours = claim_protocol("a100")
    assert hours["estimate"] is True and hours["total_hours"] == pytest.approx(sum(hours["hours"].values()), abs=0.2)
    assert claim_protocol("t4")["total_hours"] > hours["total_hours"]  # a slower card takes longer
