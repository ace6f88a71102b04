"""Recipes and configuration errors."""

import pytest

from opensir_lite.config import ConfigError, list_recipes, parse_config, resolve_recipe


def test_packaged_recipes():
    assert {"smoke", "colab-t4", "paper-llama3.2-3b"} <= set(list_recipes())


@pytest.mark.parametrize("name", ["smoke", "colab-t4", "paper-llama3.2-3b"])
def test_recipes_parse(name, tmp_path):
    train_args, model_args = parse_config(["--config", name, "--output_dir", str(tmp_path)])
    assert train_args.reward_weights == [*train_args.teacher_reward_weights, *train_args.student_reward_weights]
    assert train_args.generation_batch_size == train_args.rows_per_round
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
