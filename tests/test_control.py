"""The gold-label control: its training rows never meet an evaluation subset or the probe, its reward reads the
gold answer, and it trains through TRL's GRPOTrainer with the self-play machinery (callback, checkpoints, probe)."""

import json
import math

import pytest
import torch
from conftest import FIT_PROBLEM

from opensir_lite.evaluation.benchmarks import GOLD_HOLDOUT, PROBE_ROWS, Item, subset, training_items
from opensir_lite.rewards import STUDENT, gold_accuracy


def gsm8k_like(n: int = 1319) -> list[Item]:
    return [Item(f"question {i}", str(i), i) for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "limit",
    [1, 250, 400, GOLD_HOLDOUT],  # every seed-0 evaluation subset up to the holdout, the README's 250 among them
)
def test_training_rows_are_disjoint_from_evaluation_subsets_and_the_probe(limit):
    items = gsm8k_like()
    train = {it.index for it in training_items(items, "gsm8k")}
    evaluated = {it.index for it in subset(items, limit, 0, "gsm8k")}
    assert train.isdisjoint(evaluated) and train.isdisjoint(PROBE_ROWS)
    assert len(train) == 1319 - len(PROBE_ROWS) - GOLD_HOLDOUT  # everything else is training material


def test_training_rows_are_fixed_and_shuffled():
    items = gsm8k_like()
    first, again = training_items(items, "gsm8k"), training_items(items, "gsm8k")
    assert [it.index for it in first] == [it.index for it in again]  # the same rows, in the same order
    assert [it.index for it in first] != sorted(it.index for it in first)  # in a shuffled order
    larger = {it.index for it in subset(items, GOLD_HOLDOUT + 1, 0, "gsm8k")}
    assert not larger.isdisjoint(it.index for it in first)  # past the holdout, subsets do reach training rows


@pytest.mark.parametrize(
    "role,correct,expected",
    [
        (STUDENT, True, 1.0),  # the gold answer
        (STUDENT, False, 0.0),  # another answer, or none
        ("teacher", True, None),  # not a student row
    ],
)
def test_gold_accuracy_reward(role, correct, expected):
    assert gold_accuracy(["text"], role=[role], correct=[correct]) == [expected]


def test_gold_control_trains_two_steps(tmp_path, fitted_model_dir):
    """Two GRPO steps of the control on the fitted tiny model: 3 labelled problems sampled per step in order, the 2
    with accuracy variance trained, the reward is gold accuracy (the fitted model answers 11 or 14; the gold is 11)
    with the format gate on, the adapter moves, and a checkpoint holds the position in the rows."""
    from opensir_lite.checkpointing import SELFPLAY_STATE_FILE
    from opensir_lite.config import PolicyModelConfig, SelfPlayConfig
    from opensir_lite.training import METRICS_FILE, build_trainer, run_training

    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps({"question": FIT_PROBLEM, "answer": "#### 11"}) + "\n" for _ in range(5)))
    torch.manual_seed(0)
    args = SelfPlayConfig(
        output_dir=str(tmp_path / "run"), method="gold", gold_benchmark=str(data), gold_holdout=0, max_steps=2,
        num_generations=4, num_student_groups=2, per_device_train_batch_size=8, student_max_new_tokens=48,
        learning_rate=5e-3, beta=0.0, save_steps=1, report_to="none", disable_tqdm=True, temperature=1.0, seed=0,
        probe_every=1, probe_rows=2, probe_samples=2, gold_candidates=3, student_format_gate="accuracy_variance",
    )  # fmt: skip
    assert args.rows_per_round == 8 and args.reward_weights == [1.0, 0.1]
    model_args = PolicyModelConfig(model_name_or_path=str(fitted_model_dir), load_in_4bit=False, lora_r=8)
    trainer, control = build_trainer(args, model_args, quiet=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    run_training(trainer, control, args)
    metrics = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["student_groups"] == 2 and m["teacher_tokens"] == 0 and m["tokens_generated"] > 0
        assert "rewards/gold_accuracy/mean" in m and 0.0 <= m["gold/accuracy"] <= 1.0 and m["gold/candidates"] == 3
        assert m["rewards/gold_accuracy/mean"] == pytest.approx(m["gold/trained_accuracy"])  # the reward is the grade
        assert m["student_mean_entropy"] > 0 and "advantage/format_share" in m
        assert "probe/majority_correct" in m and math.isfinite(m["loss"])
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    assert [r.source for r in control.pool.history] == ["gold"] * 6  # 3 problems a step, each a labelled row
    assert sum(r.in_pool for r in control.pool.history) == 4  # 2 of them trained a step
    assert json.loads((tmp_path / "run" / "checkpoint-2" / SELFPLAY_STATE_FILE).read_text())["cursor"] == 6


@pytest.mark.parametrize(
    "accuracies,n,trained",
    [
        ([0.5, 0.25, 0.0, 1.0], 2, [0, 1]),  # the first two vary
        ([0.0, 0.5, 1.0, 0.75], 2, [1, 3]),  # the varied ones, wherever they are
        ([0.0, 0.5, 1.0, 0.0], 2, [0, 1]),  # one varies: topped up with the first other one
        ([0.0, 0.0, 0.0], 2, [0, 1]),  # none varies: the first n in order
        ([0.5, 0.5], 2, [0, 1]),  # as many as trained (gold_candidates 0)
    ],
)
def test_trained_groups(accuracies, n, trained):
    from opensir_lite.control import trained_groups

    assert trained_groups(accuracies, n) == trained
