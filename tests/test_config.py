"""Recipes and configuration errors."""

import pytest

from opensir_lite.config import ConfigError, list_recipes, resolve_recipe
from opensir_lite.runtime import parse_config


def test_packaged_recipes():
    assert {"smoke", "colab-t4", "paper-llama3.2-3b"} <= set(list_recipes())


@pytest.mark.parametrize("name", ["smoke", "colab-t4", "paper-llama3.2-3b", "gpu-qwen0.5b"])
def test_recipes_parse(name, tmp_path):
    train_args, model_args = parse_config(["--config", name, "--output_dir", str(tmp_path)])
    assert train_args.reward_weights == [*train_args.teacher_reward_weights, *train_args.student_reward_weights]
    assert train_args.generation_batch_size == train_args.rows_per_round  # one round per generation (1 process)
    assert model_args.model_name_or_path


def test_smoke_recipe_values_and_override(tmp_path):
    train_args, model_args = parse_config(["--config", "smoke", "--output_dir", str(tmp_path), "--max_steps", "2"])
    assert train_args.max_steps == 2  # CLI beats the recipe
    assert model_args.model_name_or_path == "embedded" and model_args.load_in_4bit
    assert train_args.solve_rate_lower == 0.5 and train_args.solve_rate_upper == 0.9
    assert train_args.bf16 is False and train_args.fp16 is False  # CPU: fp32


BAD = [
    # (yaml text or recipe name, message fragment)
    ("nonexistent-recipe", "unknown recipe"),  # unknown recipe name
    ("max_steps: 2\nnot_a_field: 1\n", "unknown config key(s): not_a_field"),  # unknown key
    ("max_steps: [1, 2\n", "not valid YAML"),  # malformed YAML
    ("- a\n- b\n", "must be a YAML mapping"),  # not a mapping
    ("pool_append_strategy: sometimes\n", "pool_append_strategy"),  # bad value
    ("solve_rate_lower: 0.9\nsolve_rate_upper: 0.5\n", "solve_rate_lower"),  # inverted gate
]


@pytest.mark.parametrize("content,message", BAD)
def test_config_errors(tmp_path, content, message):
    if "\n" in content:
        path = tmp_path / "r.yaml"
        path.write_text(content)
        content = str(path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(["--config", content, "--output_dir", str(tmp_path)])


def test_resolve_recipe_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("max_steps: 1\n")
    assert resolve_recipe(str(path)) == path


# The official run's configuration (EdinburghNLP/OpenSIR, configs/opensir_train.yaml, main branch), field by field.
OFFICIAL_YAML = {
    "model_name_or_path": "meta-llama/Llama-3.2-3B-Instruct", "model_revision": "main", "torch_dtype": "bfloat16",
    "attn_implementation": "flash_attention_2", "dataset_name": "datasets", "dataset_prompt_column": "problem",
    "system_prompt": "You are a helpful AI Assistant, ...", "bf16": True, "use_vllm": True,
    "vllm_gpu_memory_utilization": 0.85, "do_eval": False, "gradient_accumulation_steps": 8,
    "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "hub_model_id": "Opensir_Llama-3.2-3B-Instruct", "hub_strategy": "every_save", "beta": 1e-4,
    "learning_rate": 3e-7, "log_completions": True, "log_level": "info", "logging_first_step": True,
    "logging_steps": 2, "logging_strategy": "steps", "lr_scheduler_type": "constant_with_warmup",
    "max_prompt_length": 1024, "max_completion_length": 2048, "max_grad_norm": 0.5, "max_steps": 200,
    "num_generations": 8, "temperature": 1.0, "num_iterations": 1, "num_train_epochs": 1,
    "output_dir": "saves/Opensir_Llama-3.2-3B-Instruct", "run_name": "Opensir_Llama-3.2-3B-Instruct",
    "overwrite_output_dir": True, "per_device_eval_batch_size": 8, "per_device_train_batch_size": 8,
    "push_to_hub": False, "report_to": ["wandb"], "wandb_project": "open-r1", "save_strategy": "steps",
    "save_steps": 25, "seed": 42, "warmup_steps": 25, "benchmarks": ["math_500_8k", "aime24_8k", "gsm8k_8k"],
    "solve_rate_lower_limit": 0.5, "solve_rate_upper_limit": 0.9, "diversity_score_weight": 1.0,
    "difficulty_score_weight": 1.0, "embedding_port_number": 8001, "num_teacher_generations_to_train": 8,
    "teacher_generation_upscale_ratio": 4, "num_teacher_generations": 8,
    "teacher_reward_funcs": ["solvability", "diversity", "format", "response_length"],
    "teacher_reward_weights": [1.0, 1.0, 0.1, 1.0], "initial_examples_path": "src/opensir/data/initial_data.jsonl",
    "example_pool_append_strategy": "all_legal", "teacher_advantage_global_mean": False,
    "num_student_generations": 8, "num_student_generations_to_train": 8,
    "student_reward_funcs": ["accuracy", "format"], "student_reward_weights": [1.0, 0.1],
    "student_train_sampling_strategy": "top",
}  # fmt: skip

# official key -> (how to read our value from (train_args, model_args)) for fields we hold to the official value
SAME = {
    "model_name_or_path": lambda t, m: m.model_name_or_path,
    "model_revision": lambda t, m: m.model_revision,
    "torch_dtype": lambda t, m: m.dtype,
    "gradient_checkpointing": lambda t, m: t.gradient_checkpointing,
    "gradient_checkpointing_kwargs": lambda t, m: t.gradient_checkpointing_kwargs,
    "beta": lambda t, m: t.beta,
    "learning_rate": lambda t, m: t.learning_rate,
    "logging_steps": lambda t, m: t.logging_steps,
    "logging_strategy": lambda t, m: str(t.logging_strategy.value),
    "lr_scheduler_type": lambda t, m: str(t.lr_scheduler_type.value),
    "max_prompt_length": lambda t, m: t.max_prompt_length,
    "max_completion_length": lambda t, m: t.max_completion_length,
    "max_grad_norm": lambda t, m: t.max_grad_norm,
    "max_steps": lambda t, m: t.max_steps,
    "num_generations": lambda t, m: t.num_generations,
    "temperature": lambda t, m: t.temperature,
    "num_iterations": lambda t, m: t.num_iterations,
    "push_to_hub": lambda t, m: t.push_to_hub,
    "save_strategy": lambda t, m: str(t.save_strategy.value),
    "save_steps": lambda t, m: t.save_steps,
    "seed": lambda t, m: t.seed,
    "warmup_steps": lambda t, m: t.warmup_steps,
    "do_eval": lambda t, m: t.do_eval,
    "solve_rate_lower_limit": lambda t, m: t.solve_rate_lower,
    "solve_rate_upper_limit": lambda t, m: t.solve_rate_upper,
    "diversity_score_weight": lambda t, m: t.diversity_score_weight,
    "difficulty_score_weight": lambda t, m: t.difficulty_score_weight,
    "teacher_generation_upscale_ratio": lambda t, m: t.teacher_upscale_ratio,
    "num_teacher_generations": lambda t, m: t.num_generations,
    "num_student_generations": lambda t, m: t.num_generations,
    "num_teacher_generations_to_train": lambda t, m: t.num_teacher_groups * t.num_generations,
    "num_student_generations_to_train": lambda t, m: t.num_student_groups * t.num_generations,
    "teacher_reward_weights": lambda t, m: t.teacher_reward_weights,
    "student_reward_weights": lambda t, m: t.student_reward_weights,
    "example_pool_append_strategy": lambda t, m: t.pool_append_strategy,
    "student_train_sampling_strategy": lambda t, m: t.student_selection,
    "teacher_reward_funcs": lambda t, m: ["solvability", "diversity", "format", "response_length"],
    "student_reward_funcs": lambda t, m: ["accuracy", "format"],
    "teacher_advantage_global_mean": lambda t, m: t.scale_rewards != "group",
}

# official key -> why our value differs or the field does not apply
DEPARTURES = {
    "attn_implementation": "sdpa: flash-attn is an extra install; the same attention",
    "bf16": "null picks bf16 on the Ampere-or-newer GPU the recipe needs (true fails to parse on a CPU)",
    "use_vllm": "generation runs in TRL's rollout_func with transformers (generation_backend: vllm is the vLLM backend)",
    "vllm_gpu_memory_utilization": "no vLLM server",
    "gradient_accumulation_steps": "16 on one GPU = the official 8 on each of 2 GPUs (16 rounds per step)",
    "per_device_train_batch_size": "16 = the rows one official round returns per micro-step (8 + 8)",
    "embedding_port_number": "a sentence-transformers embedder in the process instead of a 7B embedding server",
    "initial_examples_path": "the pool that scripts/seed_pool.py makes (512 problems, official filters)",
    "output_dir": "a path",
    "run_name": "a name",
    "overwrite_output_dir": "a new run refuses a folder holding another run (safety)",
    "hub_model_id": "push_to_hub is false in the official run",
    "hub_strategy": "push_to_hub is false in the official run",
    "report_to": "no tracker by default; set wandb to track",
    "wandb_project": "no tracker by default",
    "log_completions": "every problem is kept in pool.jsonl instead of a printed table",
    "log_level": "logging",
    "logging_first_step": "logging",
    "benchmarks": "evaluation runs separately (scripts/evaluate.py --protocol opensir)",
    "dataset_name": "the official dataset is a placeholder: prompts are built per round",
    "dataset_prompt_column": "the official dataset is a placeholder: prompts are built per round",
    "system_prompt": "unused by the official round (its prompts carry their own system message)",
    "num_train_epochs": "max_steps decides the length, as in the official run",
    "per_device_eval_batch_size": "no evaluation during training (do_eval false)",
}


def test_paper_recipe_matches_the_official_yaml(tmp_path):
    """Every field of the official YAML is either held to the official value or a listed departure."""
    train_args, model_args = parse_config(["--config", "paper-llama3.2-3b", "--output_dir", str(tmp_path)])
    assert set(SAME) | set(DEPARTURES) == set(OFFICIAL_YAML), "an official field is neither checked nor listed"
    assert not set(SAME) & set(DEPARTURES)
    for key, ours in SAME.items():
        assert ours(train_args, model_args) == pytest.approx(OFFICIAL_YAML[key]), key
    # what the official run did implicitly (TRL 0.16 and its own round), held explicitly here
    assert train_args.loss_type == "grpo" and train_args.scale_rewards == "group"
    assert train_args.top_p == 1.0 and train_args.top_k == 0 and train_args.repetition_penalty == 1.0
    assert train_args.answer_extraction == "latex" and train_args.answer_vote == "string"
    assert train_args.novelty_top_k == 5
    assert (train_args.response_length_cap, train_args.response_length_baseline) == (1000, 1000)
    # the batch: 16 rounds (128 teacher + 128 student rows) per optimiser step, one round per micro-step
    assert train_args.rows_per_round == 16 and train_args.steps_per_generation == 1
    assert train_args.rounds_per_step(num_processes=1) == 16
    official = OFFICIAL_YAML["gradient_accumulation_steps"] * 2  # 2 training GPUs, 16 rows per micro-step
    assert official == train_args.rounds_per_step(1)
    two_gpus, _ = parse_config(["--config", "paper-llama3.2-3b", "--output_dir", str(tmp_path),
                                "--gradient_accumulation_steps", "8"])  # fmt: skip
    assert two_gpus.rounds_per_step(num_processes=2) == 16  # the equivalent on 2 GPUs


@pytest.mark.parametrize(
    "args,message",
    [
        (["--teacher_temperature", "0.8"], "teacher_temperature"),  # rollouts sample at the scoring temperature
        (["--answer_extraction", "regex"], "answer_extraction"),  # unknown answer reading
        (["--answer_vote", "fuzzy"], "answer_vote"),  # unknown vote
        (["--per_device_train_batch_size", "3"], "must divide the rows of one round"),  # rounds split unevenly
    ],
)
def test_sampling_and_grading_errors(tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(["--config", "smoke", "--output_dir", str(tmp_path), *args])


def test_smoke_is_the_first_steps_of_learn_cpu():
    """make smoke runs learn-cpu's first steps: every field is the same but the run's length and place."""
    import yaml

    from opensir_lite.config import RECIPES_DIR

    smoke, learn = (yaml.safe_load((RECIPES_DIR / f"{n}.yaml").read_text()) for n in ("smoke", "learn-cpu"))
    own = {
        "output_dir",
        "overwrite_output_dir",
        "max_steps",
        "save_steps",
        "probe_every",
        "probe_rows",
        "probe_samples",
    }
    assert {k: v for k, v in smoke.items() if k not in own} == {k: v for k, v in learn.items() if k not in own}
    assert smoke["max_steps"] < learn["max_steps"]


# What makes grpo-gold a fair control of learn-cpu-qwen: every setting of the student's training and of the run's
# length is the same; only the reward's source (gold labels against majority votes) differs.
SHARED_WITH_THE_CONTROL = [
    "max_steps",  # the same number of updates
    "num_generations",  # G
    "num_student_groups",  # student rows per step
    "student_max_new_tokens",  # the student budget
    "mask_truncated_completions",  # hygiene
    "student_format_gate",  # no format-only advantage
    "temperature",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "beta",
    "stop_rule_metrics",  # the same pre-registered stop rule
    "stop_rule_ratio",
    "probe_every",  # the same checkpoint choice
    "probe_rows",
    "probe_samples",
    "seed",
    "rollout_model",
    "rollout_dtype",
]


def test_the_gold_control_shares_the_self_play_budget(tmp_path):
    selfplay, sp_model = parse_config(["--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / "a")])
    control, c_model = parse_config(["--config", "grpo-gold", "--output_dir", str(tmp_path / "b")])
    differ = [f for f in SHARED_WITH_THE_CONTROL if getattr(selfplay, f) != getattr(control, f)]
    assert differ == []
    for f in ["model_name_or_path", "load_in_4bit", "lora_r", "lora_alpha", "lora_target_modules"]:
        assert getattr(sp_model, f) == getattr(c_model, f), f


# What the GPU recipe may change from the registered CPU recipe: the budget and the hardware, nothing of the method.
GPU_BUDGET_FIELDS = {
    "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps", "save_steps",
    "probe_every", "max_generate_batch", "output_dir", "bf16_when_native", "use_cpu", "logging_dir",
    "steps_per_generation", "run_name", "dataloader_pin_memory", "bf16", "fp16", "recipe",
}  # fmt: skip


def test_the_gpu_recipe_is_the_registered_method_at_a_larger_budget(tmp_path):
    """gpu-qwen0.5b: every method field of learn-cpu-qwen kept; the same policy from the Hub instead of PyPI."""
    from dataclasses import fields

    cpu, cpu_model = parse_config(["--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / "a")])
    gpu, gpu_model = parse_config(["--config", "gpu-qwen0.5b", "--output_dir", str(tmp_path / "a")])
    differ = [
        f.name for f in fields(cpu) if f.name not in GPU_BUDGET_FIELDS and getattr(cpu, f.name) != getattr(gpu, f.name)
    ]
    # MiniLM from the Hub instead of its PyPI copy; the paper's start (a generated initial pool) instead of questions
    assert sorted(differ) == ["embedder_name_or_path", "initial_pool_path"]
    assert gpu.initial_pool_path == "runs/gpu-qwen0.5b-seed/pool.jsonl"
    assert gpu.max_steps == 200 and gpu.rounds_per_step() == 16  # the paper's budget
    variant, _ = parse_config(["--config", "gpu-qwen0.5b-gsm8k-pool", "--output_dir", str(tmp_path / "a")])
    differ = [f.name for f in fields(gpu) if getattr(gpu, f.name) != getattr(variant, f.name)]
    assert sorted(differ) == ["initial_pool_path", "recipe"] and variant.initial_pool_path == cpu.initial_pool_path
    assert gpu_model.model_name_or_path == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    for f in ["load_in_4bit", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"]:
        assert getattr(cpu_model, f) == getattr(gpu_model, f), f


@pytest.mark.parametrize(
    "flag, value, field_name",
    [
        ("--program_check", "true", "program_check"),  # the measurement
        ("--student_label", "program_confirmed", "student_label program_confirmed"),  # the label filter
        ("--student_label", "program_rule", "student_label program_rule"),  # a label rule with programs
    ],
)
def test_programs_refuse_without_isolation(flag, value, field_name, tmp_path, monkeypatch):
    """Rounds that run programs where the sandbox cannot isolate: one error naming the field before any model
    loads, unless opted in."""
    from opensir_lite import sandbox

    monkeypatch.setattr(sandbox, "isolation_unavailable_reason", lambda: "unshare: Operation not permitted")
    base = ["--config", "smoke", "--output_dir", str(tmp_path), flag, value]
    with pytest.raises(ConfigError, match=f"^{field_name}: the sandbox cannot isolate.*allow_unisolated_sandbox"):
        parse_config(base)
    train_args, _ = parse_config([*base, "--allow_unisolated_sandbox", "true"])
    assert train_args.runs_programs and train_args.allow_unisolated_sandbox
    off, _ = parse_config(["--config", "smoke", "--output_dir", str(tmp_path)])
    assert off.program_check is False and off.student_label == "majority"  # off by default: the paper's method
    assert not off.runs_programs


@pytest.mark.parametrize(
    "argv, message",
    [
        # a label rule that does not exist
        (["--student_label", "gold"],
         "student_label must be one of majority, program_confirmed, program_rule, got 'gold'"),
        # the gold control has gold labels: nothing to confirm
        (["--config", "grpo-gold", "--student_label", "program_confirmed"],
         "student_label program_confirmed applies to method selfplay"),
        (["--config", "grpo-gold", "--student_label", "program_rule"],
         "student_label program_rule applies to method selfplay"),
        # a rule name that is not in label_rules.RULES: the error lists them
        (["--student_label", "program_rule", "--label_rule", "confirm 5 of 4"],
         "label_rule 'confirm 5 of 4' is not a rule; choose from: majority, confirm 1 of 1"),
    ],
)  # fmt: skip
def test_student_label_refusals(argv, message, tmp_path):
    argv = argv if "--config" in argv else ["--config", "smoke", *argv]
    with pytest.raises(ConfigError, match=message):
        parse_config([*argv, "--output_dir", str(tmp_path), "--allow_unisolated_sandbox", "true"])


def test_batch_size_is_checked_with_the_program_check(tmp_path):
    """The per-device batch must divide a round's rows whether or not the program check is on."""
    for extra in ([], ["--program_check", "true", "--allow_unisolated_sandbox", "true"]):
        with pytest.raises(ConfigError, match="must divide the rows of one round"):
            parse_config(["--config", "smoke", "--output_dir", str(tmp_path), "--per_device_train_batch_size", "7",
                          *extra])  # fmt: skip


def test_the_colab_recipe_is_the_registered_method(tmp_path):
    """colab-t4: learn-cpu-qwen's method (the protections against collapse included) on a 1.5B model in 4 bits, with
    a T4's machinery (sampling from the 4-bit policy, gradient checkpointing, 8-bit paged AdamW) and a Colab budget."""
    from dataclasses import fields

    cpu, cpu_model = parse_config(["--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / "a")])
    t4, t4_model = parse_config(["--config", "colab-t4", "--output_dir", str(tmp_path / "a")])
    machinery = GPU_BUDGET_FIELDS | {"rollout_model", "rollout_dtype", "optim", "gradient_checkpointing",
                                     "gradient_checkpointing_kwargs", "embedder_name_or_path"}  # fmt: skip
    differ = [f.name for f in fields(cpu) if f.name not in machinery and getattr(cpu, f.name) != getattr(t4, f.name)]
    assert differ == []
    assert t4.mask_truncated_completions and t4.student_format_gate == "accuracy_variance" and t4.stop_rule_metrics
    assert t4.teacher_format_hint == "example" and t4.beta == 0.04 and t4.learning_rate == 2e-5
    assert t4_model.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct" and t4_model.load_in_4bit
    for f in ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"]:
        assert getattr(cpu_model, f) == getattr(t4_model, f), f
