"""End to end on the CPU: self-play steps through TRL's GRPOTrainer with LoRA and with 4-bit QLoRA."""

import json
import math

import pytest
import torch
from benchlib import completion_logprobs

from opensir_lite.config import PolicyModelConfig, SelfPlayConfig
from opensir_lite.pool import POOL_FILE, ProblemPool
from opensir_lite.training import METRICS_FILE, build_trainer, run_training


def tiny_run_args(output_dir, **overrides) -> SelfPlayConfig:
    args = dict(
        output_dir=str(output_dir), max_steps=2, num_generations=4, num_teacher_groups=1, num_student_groups=1,
        teacher_upscale_ratio=2, per_device_train_batch_size=8, teacher_max_new_tokens=48, student_max_new_tokens=48,
        learning_rate=5e-3, beta=0.0, gradient_checkpointing=False, save_steps=1, report_to="none", seed=0,
        disable_tqdm=True, lr_scheduler_type="constant",
    )  # fmt: skip
    args.update(overrides)
    return SelfPlayConfig(**args)


def lora_model_args(path) -> PolicyModelConfig:
    return PolicyModelConfig(
        model_name_or_path=str(path), load_in_4bit=False, use_bnb_nested_quant=False, lora_r=8, lora_alpha=16
    )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_two_self_play_steps(tmp_path, fitted_model_dir, embedder):
    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", probe_every=1, probe_rows=2, probe_samples=2)
    trainer, rollout = build_trainer(args, lora_model_args(fitted_model_dir), embedder=embedder, quiet=True)
    before = snapshot(trainer.model)
    run_training(trainer, rollout, args)
    after = snapshot(trainer.model)

    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert any(not torch.equal(before[n], after[n]) for n in lora), "LoRA weights changed"
    assert all(torch.equal(before[n], after[n]) for n in base), "base weights did not change"

    pool_rows = read_jsonl(tmp_path / "run" / POOL_FILE)
    assert sum(r["in_pool"] for r in pool_rows) > 1, "the pool grew beyond the seed"
    assert {r["step"] for r in pool_rows} == {0, 1, 2}
    assert all(("reason" in r) and ("rewards" in r) for r in pool_rows)
    metrics = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"legal_ratio", "solve_rate_mean", "solve_rate_hist", "pool_size", "novelty_mean", "tokens_generated",
                "time/teacher_generation", "time/student_generation", "time/grading", "time/embedding", "time/update",
                "rewards/solvability/mean", "loss", "student_valid_rate", "in_gate_share",
                "teacher_mean_tokens", "student_mean_tokens", "pool_distinct_problems", "round_top_problem_share",
                "probe/majority_correct", "probe/solve_rate", "time/probe"} <= set(m)  # fmt: skip
        assert math.isfinite(m["loss"])
        # TRL logs a reward's mean only when some row has it: the student's only when a problem was answered
        assert ("rewards/accuracy/mean" in m) == (m["answered_problems"] > 0)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / POOL_FILE).is_file(), "checkpoints include the pool"
    assert len(ProblemPool.from_jsonl(checkpoint / POOL_FILE)) == len(rollout.pool)

    # What the end of scripts/train.py writes, on a run that has legal problems.
    from opensir_lite.exploration import write_run_plots

    curves, report = write_run_plots(tmp_path / "run")
    assert curves.read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    assert "| 1 | 8 |" in text and "## Hardest problems" in text  # step 1: 8 teacher outputs (G=4, upscale 2)
    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["legal"] == sum(r["legal"] and r["source"] == "teacher" for r in pool_rows) > 0


def test_all_illegal_rounds_train_and_continue(tmp_path, tiny_model_dir, embedder):
    """A random model writes no legal problem: the run trains on zero-weight rows and goes on (OpenSIR raises)."""
    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", save_steps=10)
    trainer, rollout = build_trainer(args, lora_model_args(tiny_model_dir), embedder=embedder, quiet=True)
    run_training(trainer, rollout, args)
    metrics = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert len(metrics) == 2
    for m in metrics:
        assert m["degenerate/no_legal_problem"] == 1 and m["filler_groups"] == 1 and m["legal_problems"] == 0
        assert math.isfinite(m["loss"])
    assert len(rollout.pool) == 1  # only the seed, never lost
    assert len(read_jsonl(tmp_path / "run" / POOL_FILE)) == 1 + 2 * 8  # every illegal problem is recorded


@pytest.mark.slow
def test_one_step_embedded_smollm2_qlora(tmp_path, embedded_dir, embedder):
    """The real embedded SmolLM2-135M-Instruct under 4-bit NF4 QLoRA on the CPU."""
    torch.manual_seed(0)
    args = tiny_run_args(
        tmp_path / "run", max_steps=1, num_generations=2, teacher_upscale_ratio=1, per_device_train_batch_size=4,
        teacher_max_new_tokens=32, student_max_new_tokens=32, learning_rate=1e-4,
    )  # fmt: skip
    model_args = PolicyModelConfig(model_name_or_path="embedded", load_in_4bit=True, lora_r=8, lora_alpha=16)
    trainer, rollout = build_trainer(args, model_args, embedder=embedder, quiet=True)
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules()), "base weights are 4-bit"
    lora = [p for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad and p.dtype == torch.float32 for p in lora)
    run_training(trainer, rollout, args)
    metrics = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert len(metrics) == 1 and math.isfinite(metrics[0]["loss"])
    assert metrics[0]["teacher_outputs"] == 2
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_run_config_is_json_and_has_no_token(tmp_path):
    from opensir_lite.checkpointing import RUN_CONFIG_FILE, write_run_config
    from opensir_lite.training import run_config

    args = tiny_run_args(tmp_path / "run", recipe="smoke")
    path = write_run_config(tmp_path, run_config(args, lora_model_args("some/model")))
    assert path.name == RUN_CONFIG_FILE
    data = json.loads(path.read_text())
    assert data["recipe"] == "smoke"
    assert data["model"]["model_name_or_path"] == "some/model" and data["model"]["lora_r"] == 8
    assert data["training"]["num_generations"] == 4 and data["training"]["seed"] == 0
    assert data["training"].get("hub_token") in (None, "<HUB_TOKEN>")  # masked by TrainingArguments.to_dict


@pytest.mark.parametrize("four_bit", [False, True])  # LoRA on an fp32 base, QLoRA on a 4-bit NF4 base
def test_merged_rollout_model_samples_the_scored_policy(tmp_path, fitted_model_dir, tokenizer, embedder, four_bit):
    """The merged copy's samples come from the policy GRPO scores: the same log-probabilities for every sampled
    token, before and after the adapter changes; a copy that is not synchronised differs."""
    from opensir_lite.generation import SamplingSettings, generate
    from opensir_lite.prompts import render, teacher_messages

    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", rollout_model="merged", temperature=0.7)
    model_args = PolicyModelConfig(
        model_name_or_path=str(fitted_model_dir), load_in_4bit=four_bit, lora_r=8, lora_alpha=16, lora_dropout=0.0
    )
    trainer, rollout = build_trainer(args, model_args, embedder=embedder, quiet=True)
    policy = trainer.model
    if four_bit:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in policy.modules())
    prompt = render(tokenizer, teacher_messages("What is 1+1?"))

    def max_gap(copy):
        torch.manual_seed(1)
        outs = generate(copy, tokenizer, [prompt], 4, SamplingSettings(24, 0.7))
        generate(policy, tokenizer, [prompt], 1, SamplingSettings(4, 0.7))  # an eval-mode forward of the policy
        policy.train()  # GRPO scores in training mode
        gaps = [
            (completion_logprobs(copy, c.prompt_ids, c.completion_ids, 0.7)
             - completion_logprobs(policy, c.prompt_ids, c.completion_ids, 0.7)).abs().max().item()
            for c in outs if c.completion_ids
        ]  # fmt: skip
        return max(gaps)

    copy = rollout.rollout_model(trainer)
    assert copy is not policy and not any(p.requires_grad for p in copy.parameters())
    assert max_gap(copy) < 1e-4  # LoRA B starts at zero: the base alone, de-quantised
    with torch.no_grad():  # an optimiser step's worth of change in the adapter
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    assert max_gap(copy) > 1e-2  # the copy is stale until synchronised
    rollout.rollout_model.sync()
    assert max_gap(copy) < 1e-4  # and the same policy again
    if four_bit:  # sampling from the 4-bit policy itself left its weights in the layout training uses
        assert not any(getattr(getattr(p, "quant_state", None), "packing_format_for_cpu", False)
                       for p in policy.parameters())  # fmt: skip


def test_filler_row_warning_is_silenced(caplog):
    """TRL warns at every step that no reward function scored our filler rows; the filter drops that line only."""
    import logging

    from trl.trainer import grpo_trainer

    from opensir_lite.training import silence_filler_row_warnings

    silence_filler_row_warnings()
    silence_filler_row_warnings()  # idempotent
    trl_logger = grpo_trainer.logger  # TRL's own logger: accelerate's adapter, which prefixes "[RANK 0] "
    with caplog.at_level(logging.WARNING, logger="trl.trainer.grpo_trainer"):
        trl_logger.warning("All reward functions returned None for the following kwargs: ...", main_process_only=False)
        trl_logger.warning("something else", main_process_only=False)
    assert [r.getMessage() for r in caplog.records] == ["[RANK 0] something else"]


@pytest.mark.slow
def test_embedded_qwen_self_play_step_under_qlora(tmp_path, qwen_dir, embedder):
    """One real self-play step of learn-cpu-qwen on the embedded Qwen2.5-Coder-0.5B-Instruct (small budgets): the
    4-bit NF4 policy with LoRA, the merged rollout copy, sdpa_grouped attention, the shipped initial pool, a round with
    the gated format reward, and a GRPO update with the KL anchor."""
    import bitsandbytes as bnb

    from opensir_lite.runtime import parse_config

    train_args, model_args = parse_config([
        "--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--load_in_4bit", "true",
        "--num_generations", "4", "--teacher_max_new_tokens", "48", "--student_max_new_tokens", "48",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--probe_every", "0",
        "--save_steps", "1", "--write_plots", "false", "--disable_tqdm", "true",
    ])  # fmt: skip
    trainer, rollout = build_trainer(train_args, model_args, embedder=embedder, quiet=True)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in policy.modules()) == 24 * 7  # every projection, 24 blocks
    from opensir_lite.models import cpu_has_native_bf16

    assert rollout.rollout_model.model is None  # the merged copy is built from the trainer's policy at round 1
    before = snapshot(trainer.model)
    run_training(trainer, rollout, train_args)
    after = snapshot(trainer.model)
    copy = rollout.rollout_model.model  # bf16 where the CPU computes it natively, else fp32 (bf16_when_native)
    assert copy.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert copy.config._attn_implementation == "sdpa_grouped"
    (m,) = read_jsonl(tmp_path / "run" / METRICS_FILE)
    # one teacher group of G=4, upscaled 2x by the recipe (the most varied group is trained)
    assert m["teacher_outputs"] == 4 * 2 and m["teacher_tokens"] > 0 and math.isfinite(m["loss"])
    assert m["pool_size"] >= 512 and "advantage/format_share" in m and "student_mean_entropy" in m
    assert rollout.rollout_model.syncs >= 1
    changed = [n for n in before if "lora_" in n and not torch.equal(before[n], after[n])]
    assert changed or m["grad_norm"] == 0.0  # the adapter moved unless every advantage was zero
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "first,current,metrics,fired",
    [
        ({"student_mean_tokens": 100}, {"student_mean_tokens": 49}, ["student_mean_tokens"], True),  # under half
        ({"student_mean_tokens": 100}, {"student_mean_tokens": 50}, ["student_mean_tokens"], False),  # exactly half
        ({"student_mean_entropy": 0.34}, {"student_mean_entropy": 0.14}, ["student_mean_entropy"], True),  # below half of step 1: stop
        ({"student_mean_tokens": 100}, {"student_mean_tokens": 10}, [], False),  # no rule
        ({"student_mean_tokens": None}, {"student_mean_tokens": 10}, ["student_mean_tokens"], False),  # no reference
        ({"student_mean_tokens": 100}, {}, ["student_mean_tokens"], False),  # no student answer this step
        ({"student_mean_tokens": 100, "student_mean_entropy": 0.3}, {"student_mean_tokens": 90,
         "student_mean_entropy": float("nan")}, ["student_mean_tokens", "student_mean_entropy"], False),  # not finite
    ],
)  # fmt: skip
def test_stop_rule_reason(first, current, metrics, fired):
    from opensir_lite.callbacks import stop_rule_reason

    reason = stop_rule_reason(first, current, metrics, 0.5)
    assert (reason is not None) == fired
    if fired:
        assert metrics[0] in reason and "step 1" in reason


def test_stop_rule_ends_the_run_with_a_checkpoint(tmp_path):
    """The callbacks keep step 1 as the reference, and at the first step under half of it ask the trainer for a
    checkpoint and the end of training, mark the step's metrics and write stop_rule.json."""
    from types import SimpleNamespace

    from opensir_lite.callbacks import training_callbacks
    from opensir_lite.checkpointing import STOP_RULE_FILE
    from opensir_lite.pool import ProblemPool

    rollout = SimpleNamespace(round_stats=[], pool=ProblemPool.from_seed("What is 1+1?"), take_evidence=list,
                              state_dict=lambda: {"rng": 0}, before_round=None)  # fmt: skip
    callbacks = training_callbacks(rollout, tmp_path, quiet=True)
    args = SimpleNamespace(stop_rule_metrics=["student_mean_tokens"], stop_rule_ratio=0.5, save_strategy="steps",
                           output_dir=str(tmp_path))  # fmt: skip
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, max_steps=10)
    for step, tokens in [(1, 120.0), (2, 70.0), (3, 59.0)]:
        state.global_step = step
        control = SimpleNamespace(should_save=False, should_training_stop=False)
        for callback in callbacks:
            callback.on_step_begin(args, state, control)
        rollout.round_stats.append({"student_mean_tokens": tokens, "time/rollout": 0.0})
        for callback in callbacks:
            callback.on_step_end(args, state, control)
        assert control.should_training_stop == (step == 3) and control.should_save == (step == 3)
    assert json.loads((tmp_path / STOP_RULE_FILE).read_text())["step"] == 3
    assert (tmp_path / "checkpoint-3" / "selfplay_state.json").is_file()  # the checkpoint holds the state
    assert callbacks[-1].pending[-1]["stop_rule_fired"] == 1  # the metrics line of that step is marked


def test_every_sampling_forward_runs_with_the_parameters_gathered(tmp_path, fitted_model_dir, embedder, monkeypatch):
    """Under DeepSpeed ZeRO-3 each forward is a collective, and ranks run different numbers of them in a round (the
    compacting decoder stops when its rows end; a rank without a legal problem asks no student), so a round must
    sample with the parameters gathered: every forward of the round (probe, teacher, students) runs inside TRL's
    unwrap_model_for_generation with gather_deepspeed3_params=True. The forward counts of two rounds differ, which
    is why."""
    import trl.models

    real = trl.models.unwrap_model_for_generation
    calls, state = [], {"inside": False}

    def recording(model, accelerator, gather_deepspeed3_params=True, **kwargs):
        calls.append(gather_deepspeed3_params)
        from contextlib import contextmanager

        @contextmanager
        def context():
            with real(model, accelerator, gather_deepspeed3_params=gather_deepspeed3_params, **kwargs) as unwrapped:
                state["inside"] = True
                try:
                    yield unwrapped
                finally:
                    state["inside"] = False

        return context()

    monkeypatch.setattr(trl.models, "unwrap_model_for_generation", recording)
    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", probe_every=1, probe_rows=2, probe_samples=2)
    trainer, rollout = build_trainer(args, lora_model_args(fitted_model_dir), embedder=embedder, quiet=True)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    forwards = {"inside": 0, "outside": 0}
    policy.register_forward_pre_hook(lambda *a: forwards.__setitem__("inside" if state["inside"] else "outside",
                                                                       forwards["inside" if state["inside"] else "outside"] + 1))  # fmt: skip
    counts = []
    for _ in range(2):
        before = forwards["inside"]
        rollout(["p"] * args.rows_per_round, trainer)
        counts.append(forwards["inside"] - before)
    assert calls == [True, True]  # one gathered context per round
    assert forwards["outside"] == 0 and forwards["inside"] > 0
    assert counts[0] != counts[1]  # rounds (like ranks) run different numbers of forwards


def test_trainable_parameters_stay_fp32_on_a_bf16_device(tmp_path, fitted_model_dir, embedder, monkeypatch):
    """On a device with native bf16 (A100, L4, H100) TRL casts a QLoRA adapter to bf16, where most Adam steps at LoRA
    learning rates are below half a bf16 spacing of lora_A and round away: every trainable parameter stays fp32."""
    import opensir_lite.training as training

    monkeypatch.setattr(training, "current_device_dtype", lambda: ("cpu", torch.bfloat16))  # a bf16-native device
    args = tiny_run_args(tmp_path / "run")
    model_args = lora_model_args(fitted_model_dir)
    model_args.load_in_4bit = True
    trainer, _ = build_trainer(args, model_args, embedder=embedder, quiet=True)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    # why it matters: Adam's step at lr 1e-5 (about 1e-5 per entry) vanishes in bf16 for most of lora_A's entries
    a = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n).detach()
    lost = ((a + 1e-5).bfloat16() == a.bfloat16()).float().mean().item()
    assert lost > 0.5


@pytest.mark.parametrize(
    "deepspeed,dtype,expected",
    [(False, torch.bfloat16, torch.float32),  # cast up
     (False, torch.float16, torch.float32),  # a T4's fp16 too
     (True, torch.bfloat16, torch.bfloat16)],  # DeepSpeed keeps fp32 master weights itself; ZeRO-3 needs one dtype
)  # fmt: skip
def test_trainable_to_fp32(deepspeed, dtype, expected):
    from opensir_lite.training import trainable_to_fp32

    model = torch.nn.Linear(4, 4).to(dtype)
    frozen = torch.nn.Linear(4, 4).to(dtype).requires_grad_(False)
    trainable_to_fp32(torch.nn.Sequential(model, frozen), deepspeed=deepspeed)
    assert model.weight.dtype == expected and frozen.weight.dtype == dtype  # frozen weights untouched
