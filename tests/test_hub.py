"""Publishing: the dry run writes the upload folder, the card carries every field, the adapter reloads with PEFT,
the pool loads with datasets, and bad runs fail with one line before anything is uploaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opensir_lite.checkpointing import METRICS_FILE, RUN_CONFIG_FILE
from opensir_lite.hub import EMBEDDED_HUB_ID, OPENSIR_BIBTEX, PublishError, hub_base_model, stage_run
from tests.test_exploration import synthetic_pool

ROOT = Path(__file__).resolve().parents[1]
REPO = "someone/tiny-opensir"
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"


@pytest.fixture()
def trained_run(tmp_path, tiny_model_dir) -> Path:
    """A run folder as training leaves it: a LoRA adapter (random, non-zero B), tokenizer, pool, metrics, config,
    and an evaluation results.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear")
    )
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a trained adapter is not the identity
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run)
    synthetic_pool().save(run)
    rows = [{"step": s, "legal_ratio": 0.5, "rewards/solvability/mean": 0.1 * s, "pool_size": s + 1} for s in (1, 2, 3)]
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "recipe": "smoke",
        "model": {"model_name_or_path": "embedded", "load_in_4bit": True, "lora_r": 4, "lora_alpha": 8},
        "training": {"num_generations": 4, "learning_rate": 1e-5, "solve_rate_lower": 0.5, "solve_rate_upper": 0.9},
    }
    (run / RUN_CONFIG_FILE).write_text(json.dumps(config))
    (run / "eval").mkdir()
    result = {"gsm8k": {"metrics": {"avg@1": 0.25, "avg@1_se": 0.05}, "rows": 100, "model": "embedded",
                        "adapter": str(run)}}  # fmt: skip
    (run / "eval" / "results.json").write_text(json.dumps(result))
    return run


def test_dry_run_files_and_card(trained_run, tmp_path):
    staged = stage_run(trained_run, tmp_path / "out", REPO, with_pool=True)
    model_dir = staged["model"]
    names = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", RUN_CONFIG_FILE} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    assert "plots/training_curves.png" in names and "plots/embedding_map.png" in names
    assert "explorer.html" in names  # the self-contained pool explorer
    assert not any(n.endswith((".pt", ".bin", ".pkl")) for n in names)  # no optimizer state or pickles
    # the run itself rides along under run/: the embeddings are plain arrays (Pool.load refuses pickles)
    assert {"run/pool.jsonl", "run/pool_embeddings.npz", "run/metrics.jsonl"} <= names
    assert not any(n.startswith(("checkpoint-", "run/checkpoint-")) for n in names)
    card = (model_dir / "README.md").read_text()
    for expected in (
        f"base_model: {EMBEDDED_HUB_ID}",  # the embedded cache folder is named by its Hub id
        "library_name: peft",
        "| recipe | `smoke` |",
        "| training steps | 3 |",
        "QLoRA",
        "teacher outputs: 9, legal: 6 (66.7%), pool size: 7",
        "algebra (4)",
        "| gsm8k | 100 | - | avg@1 | 25.0% ± 5.0 |",  # an older results.json: no protocol recorded
        "[`explorer.html`](explorer.html)",
        "![Training curves](plots/training_curves.png)",
        f"- {REPO}-pool",  # the dataset is linked in the metadata
        OPENSIR_BIBTEX,
    ):
        assert expected in card, expected
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == EMBEDDED_HUB_ID


def test_dry_run_adapter_reloads_with_peft(trained_run, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model_dir = stage_run(trained_run, tmp_path / "out", REPO)["model"]
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), model_dir)
    saved = load_file(trained_run / "adapter_model.safetensors")
    state = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved) > 0
    for key, value in saved.items():
        match = [v for k, v in state.items() if k.replace(".default", "") == key]
        assert match and torch.equal(match[0], value), key


def test_pool_dataset_loads_with_datasets(trained_run, tmp_path):
    from datasets import load_dataset

    pool_dir = stage_run(trained_run, tmp_path / "out", REPO, with_pool=True, pool_repo_id="someone/pool")["pool"]
    ds = load_dataset("json", data_files=str(pool_dir / "data" / "train.jsonl"), split="train")
    assert len(ds) == 10  # seed + 6 legal + 3 illegal: every generated problem
    assert sum(ds["legal"]) == 7 and sum(ds["in_pool"]) == 7
    assert "reward_solvability" in ds.column_names
    card = (pool_dir / "README.md").read_text()
    assert "path: data/train.jsonl" in card and 'load_dataset("someone/pool"' in card


@pytest.mark.parametrize(
    "mutate,repo,message",
    [
        (lambda run: (run / "adapter_model.safetensors").unlink(), REPO, "holds no trained adapter"),  # full FT
        (lambda run: None, "not-a-repo-id", "repo_id must look like USER/NAME"),  # no namespace
        (lambda run: (run / "adapter_config.json").write_text("{"), REPO, "cannot read"),  # damaged config
        (lambda run: (run / "pool.jsonl").unlink(), REPO, "cannot read the pool"),  # no pool
    ],
)
def test_bad_runs_fail_before_upload(trained_run, tmp_path, mutate, repo, message):
    mutate(trained_run)
    with pytest.raises(PublishError, match=message):
        stage_run(trained_run, tmp_path / "out", repo)


def test_dry_run_refuses_a_non_empty_folder(trained_run, tmp_path):
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "keep.txt").write_text("mine")
    with pytest.raises(PublishError, match="not empty"):
        stage_run(trained_run, tmp_path / "out", REPO)
    assert (tmp_path / "out" / "model" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("embedded", EMBEDDED_HUB_ID),  # the embedded default
        ("/home/u/.cache/opensir_lite/smollm2-135m-instruct", EMBEDDED_HUB_ID),  # its converted cache folder
        ("embedded-qwen0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),  # the second embedded model
        ("/tmp/c/qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),  # and its cache folder
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),  # a Hub id is kept
    ],
)
def test_hub_base_model(name, expected):
    assert hub_base_model(name) == expected


def test_push_to_hub_cli(trained_run, tmp_path):
    script = str(ROOT / "scripts" / "push_to_hub.py")
    ok = subprocess.run(
        [sys.executable, script, "--run_dir", str(trained_run), "--repo_id", REPO, "--with_pool",
         "--dry_run", str(tmp_path / "dry")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "README.md" in ok.stdout and "data/train.jsonl" in ok.stdout
    bad = subprocess.run(
        [sys.executable, script, "--run_dir", str(tmp_path / "missing"), "--repo_id", REPO, "--dry_run", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: run folder not found: {tmp_path / 'missing'}"]


def _hub_cache(tmp_path: Path, repo_id: str, folder: Path) -> Path:
    """A Hugging Face cache holding ``folder`` as the newest snapshot of model repo ``repo_id``: what a download
    leaves behind, so that loading by Hub id can run offline."""
    cache = tmp_path / "hf_cache"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_adapter_by_hub_id_in_evaluation(trained_run, tmp_path, tiny_model_dir):
    """The pushed adapter, named by its Hub id, loads in load_for_inference and in scripts/evaluate.py."""
    staged = stage_run(trained_run, tmp_path / "out", REPO)["model"]
    env = {**os.environ, "HF_HUB_CACHE": str(_hub_cache(tmp_path, REPO, staged)), "HF_HUB_OFFLINE": "1"}
    check = f"""
from safetensors.torch import load_file
import torch
from opensir_lite.models import load_for_inference
model, _ = load_for_inference({str(tiny_model_dir)!r}, adapter={REPO!r}, merge_adapter=False)
saved = load_file({str(trained_run / "adapter_model.safetensors")!r})
state = {{k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}}
assert set(state) == set(saved) and all(torch.equal(state[k], v) for k, v in saved.items())
merged, _ = load_for_inference({str(tiny_model_dir)!r}, adapter={REPO!r})  # evaluation folds LoRA in
ids = torch.tensor([[1, 2, 3, 4, 5]])
with torch.no_grad():
    assert (merged(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() < 1e-4
print(type(model).__name__, len(saved), type(merged).__name__)
"""
    loaded = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[0].startswith("PeftModel")  # the Hub adapter, weight for weight
    assert loaded.stdout.split()[2] == "LlamaForCausalLM"  # merged for evaluation

    def evaluate(adapter: str, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "scripts/evaluate.py", "--model", str(tiny_model_dir), "--adapter", adapter,
             "--benchmarks", "gsm8k", "--data_dir", str(FIXTURES), "--limit", "2", "--max_new_tokens", "4",
             "--output_dir", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    ok = evaluate(REPO, tmp_path / "eval")
    assert ok.returncode == 0, ok.stderr
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["gsm8k"]
    assert result["adapter"] == REPO and result["rows"] == 2
    missing = evaluate("someone/not-cached", tmp_path / "eval-missing")  # offline and not in the cache
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: cannot load adapter 'someone/not-cached'")


def _with_results(run: Path) -> Path:
    """The run's evaluation as scripts/evaluate.py writes it today: both protocols, settings, greedy."""
    metrics = {"avg@1": 0.31, "avg@1_se": 0.03, "pass@1": 0.31, "pass@1_se": 0.03, "maj@1": 0.31, "maj@1_se": 0.03}
    strict = {k: v / 2 for k, v in metrics.items()}
    entry = {"protocol": "opensir", "metrics": metrics, "protocols": {"opensir": metrics, "strict": strict}, "n": 1,
             "rows": 250, "model": "embedded-qwen0.5b", "adapter": str(run),
             "settings": {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 512, "limit": 250, "seed": 0,
                          "dtype": "bfloat16"}}  # fmt: skip
    payload = {"gsm8k": entry, "asdiv": dict(entry, rows=200), "macro_average": {"metrics": metrics, "rows": 450}}
    (run / "eval" / "results.json").write_text(json.dumps(payload))
    config = json.loads((run / RUN_CONFIG_FILE).read_text())
    config["model"]["model_name_or_path"] = "embedded-qwen0.5b"
    config["recipe"] = 'my "best": recipe\nsecond line'  # quotes, a colon and a newline
    config["training"]["seed_problem"] = 'Compute: "1+1"?\n# not a comment'
    (run / RUN_CONFIG_FILE).write_text(json.dumps(config))
    return run


def test_model_card_parses_back_with_the_evaluation_results(trained_run, tmp_path):
    from huggingface_hub import ModelCard

    run = _with_results(trained_run)
    model_dir = stage_run(run, tmp_path / "out", REPO, with_pool=True)["model"]
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # the embedded Qwen's Hub id
    assert card.data.license == "apache-2.0" and card.data.library_name == "peft"
    assert card.data.pipeline_tag == "text-generation" and card.data.datasets == [f"{REPO}-pool"]
    assert {"trl", "grpo", "opensir", "self-play", "qlora"} <= set(card.data.tags)
    found = {(e.dataset_type, e.dataset_split, e.metric_config, e.metric_type, e.metric_value)
             for e in card.data.eval_results}  # fmt: skip
    assert found == {  # two benchmarks x two protocols; with n = 1, pass@1 and maj@1 repeat avg@1 and are left out
        ("openai/gsm8k", "test", "opensir", "accuracy", 31.0), ("openai/gsm8k", "test", "strict", "accuracy", 15.5),
        ("EleutherAI/asdiv", "validation", "opensir", "accuracy", 31.0),
        ("EleutherAI/asdiv", "validation", "strict", "accuracy", 15.5),
    }  # fmt: skip
    assert all(e.task_type == "text-generation" for e in card.data.eval_results)
    recorded = card.data.to_dict()["opensir_lite"]
    assert recorded["recipe"] == 'my "best": recipe\nsecond line'  # survives the YAML round trip
    assert recorded["seed_problem"] == 'Compute: "1+1"?\n# not a comment'
    assert "model-index" in (model_dir / "README.md").read_text()
    assert (
        "- gsm8k: n 1, temperature 0.0, top_p 1.0, max_new_tokens 512, limit 250, seed 0, dtype bfloat16" in card.text
    )
    assert '| recipe | `my "best": recipe second line` |' in card.text  # one table row


def test_model_card_without_results_has_no_model_index(trained_run, tmp_path):
    from huggingface_hub import ModelCard

    (trained_run / "eval" / "results.json").unlink()
    model_dir = stage_run(trained_run, tmp_path / "out", REPO)["model"]
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.eval_results is None and "model-index" not in (model_dir / "README.md").read_text()
    assert card.data.base_model == EMBEDDED_HUB_ID and card.data.license == "apache-2.0"
    assert "No evaluation results were found" in card.text


def test_pool_dataset_card_documents_every_field(trained_run, tmp_path):
    from huggingface_hub import DatasetCard

    from opensir_lite.hub import POOL_FIELDS

    pool_dir = stage_run(_with_results(trained_run), tmp_path / "out", REPO, with_pool=True)["pool"]
    card = DatasetCard.load(pool_dir / "README.md")
    data = card.data.to_dict()
    assert data["size_categories"] == ["n<1K"] and data["task_categories"] == ["text-generation"]
    assert data["configs"][0]["data_files"][0]["path"] == "data/train.jsonl"
    assert data["source_run"]["model"] == REPO and data["source_run"]["recipe"] == 'my "best": recipe\nsecond line'
    assert data["dataset_info"]["splits"][0]["num_examples"] == 10
    row = json.loads((pool_dir / "data" / "train.jsonl").read_text().splitlines()[0])
    assert set(row) == set(POOL_FIELDS)  # every column of the file is documented, and only those
    assert [f["name"] for f in data["dataset_info"]["features"]] == list(POOL_FIELDS)
    for name in POOL_FIELDS:
        assert f"| `{name}` |" in card.text


def test_dry_run_uploads_nothing(trained_run, tmp_path, monkeypatch, capsys):
    """push_to_hub.py --dry_run never creates an HfApi client (no upload can happen)."""
    import runpy

    import huggingface_hub

    def no_client(*args, **kwargs):
        raise AssertionError("the dry run created an HfApi client")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_client)
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", "--run_dir", str(trained_run), "--repo_id", REPO,
                                      "--with_pool", "--dry_run", str(tmp_path / "dry")])  # fmt: skip
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "scripts" / "push_to_hub.py"), run_name="__main__")
    assert info.value.code == 0
    assert (tmp_path / "dry" / "model" / "README.md").is_file() and (tmp_path / "dry" / "pool" / "README.md").is_file()


def test_export_adapter_in_bf16_reloads(trained_run, tmp_path, tiny_model_dir):
    """A bf16 copy of the adapter: half the file, the same tensors up to bf16 rounding, loadable with PEFT, and a
    folder without an adapter is refused in one line."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from opensir_lite.hub import export_adapter

    path = export_adapter(trained_run, tmp_path / "bf16")
    saved, copied = load_file(trained_run / "adapter_model.safetensors"), load_file(path)
    assert set(saved) == set(copied) and all(v.dtype == torch.bfloat16 for v in copied.values())
    assert all(torch.allclose(saved[k], copied[k].float(), rtol=1e-2, atol=1e-3) for k in saved)
    assert path.stat().st_size < 0.6 * (trained_run / "adapter_model.safetensors").stat().st_size
    config = json.loads((tmp_path / "bf16" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == hub_base_model(config["base_model_name_or_path"])
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "bf16")
    with pytest.raises(PublishError, match="holds no adapter"):
        export_adapter(tmp_path, tmp_path / "none")
