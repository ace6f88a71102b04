"""Publishing a run: :func:`stage_model` / :func:`stage_pool_dataset` write exactly the files that would be uploaded
into a folder (the ``--dry_run`` of ``scripts/push_to_hub.py``); :func:`push_run` stages into a temporary folder and
uploads it with ``huggingface_hub``. The token comes from ``HF_TOKEN`` or ``hf auth login``, never from the command
line. The model repo also carries the run's own files under ``run/`` (pool, embeddings, metrics, round evidence), so
a notebook on another machine opens the whole run from its Hub id (:func:`fetch_run`).

``OPENSIR_LITE_HUB_DIR`` names a folder that stands in for the Hub (an air-gapped machine, the tests): pushes copy
the staged repos into ``<folder>/<repo_id>`` and fetches read from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from opensir_lite.checkpointing import RUN_CONFIG_FILE
from opensir_lite.curves import CURVES_FILE
from opensir_lite.exploration import (
    EXPLORE_DIRNAME,
    EXPLORER_FILE,
    FIGURES,
    write_explorer_html,
    write_run_plots,
)
from opensir_lite.hub.cards import (
    ADAPTER_FILES,
    POOL_DATA_FILE,
    PublishError,
    dataset_card,
    hub_base_model,
    model_card,
    pool_rows,
    read_json,
    read_run,
)
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


PLOTS_DIRNAME = "plots"
RUN_DIRNAME = "run"  # the run's files inside the model repo
RUN_FILES = ("pool.jsonl", "pool_embeddings.npz", "metrics.jsonl", "round_evidence.jsonl", RUN_CONFIG_FILE)
HUB_DIR_ENV = "OPENSIR_LITE_HUB_DIR"


def local_hub() -> Path | None:
    """The folder standing in for the Hub (``OPENSIR_LITE_HUB_DIR``), or None."""
    import os

    folder = os.environ.get(HUB_DIR_ENV)
    return Path(folder) if folder else None


def _require_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"{out} is not empty; give an empty or new folder")


def stage_model(
    run_dir: str | Path,
    out_dir: str | Path,
    repo_id: str,
    eval_results: list[str | Path] = (),
    pool_repo_id: str | None = None,
) -> Path:
    """Write the adapter repo into ``out_dir``: adapter files (base model named by its Hub id), tokenizer files,
    ``README.md`` (the card), ``plots/`` and ``run_config.json``. Returns ``out_dir``."""
    info = read_run(run_dir, eval_results)
    run_dir, out = Path(run_dir), Path(out_dir)
    _require_empty(out)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(info.adapter_config, base_model_name_or_path=info.base_model)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shutil.copy2(run_dir / "adapter_model.safetensors", out / "adapter_model.safetensors")
    for name in TOKENIZER_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    if info.run_config:
        (out / RUN_CONFIG_FILE).write_text(json.dumps(info.run_config, indent=2) + "\n", encoding="utf-8")
    if not (run_dir / CURVES_FILE).is_file() or not (run_dir / EXPLORE_DIRNAME).is_dir():
        lower = info.run_config.get("training", {}).get("solve_rate_lower", GATE_LOWER)
        upper = info.run_config.get("training", {}).get("solve_rate_upper", GATE_UPPER)
        write_run_plots(run_dir, lower, upper)
    plots = []
    sources = [run_dir / CURVES_FILE] + [run_dir / EXPLORE_DIRNAME / f"{k}.png" for k in FIGURES]
    for src in sources:
        if src.is_file():
            (out / PLOTS_DIRNAME).mkdir(exist_ok=True)
            shutil.copy2(src, out / PLOTS_DIRNAME / src.name)
            plots.append(f"{PLOTS_DIRNAME}/{src.name}")
    write_explorer_html(run_dir, out / EXPLORER_FILE)
    for name in RUN_FILES:  # the run itself, for notebooks and tools on another machine
        if (run_dir / name).is_file():
            (out / RUN_DIRNAME).mkdir(exist_ok=True)
            shutil.copy2(run_dir / name, out / RUN_DIRNAME / name)
    model_card(info, repo_id, plots, pool_repo_id, explorer=EXPLORER_FILE).save(out / "README.md")
    return out


def export_adapter(source: str | Path, out_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """Copy a LoRA adapter (a run folder or one of its ``checkpoint-N`` folders) into ``out_dir`` with its weights
    cast to ``dtype`` (bf16 halves the fp32 file; LoRA deltas lose nothing that matters at inference), the base
    model named by its Hub id. Returns the written weights file."""
    import torch
    from safetensors.torch import load_file, save_file

    source, out = Path(source), Path(out_dir)
    missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
    if missing:
        raise PublishError(f"{source} holds no adapter (missing {', '.join(missing)})")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise PublishError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
    config = read_json(source / "adapter_config.json")
    config["base_model_name_or_path"] = hub_base_model(str(config.get("base_model_name_or_path", "")))
    weights = {k: v.to(getattr(torch, dtype)) for k, v in load_file(source / "adapter_model.safetensors").items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(weights, out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out / "adapter_model.safetensors"


def stage_pool_dataset(run_dir: str | Path, out_dir: str | Path, repo_id: str, model_repo_id: str) -> Path:
    """Write the pool dataset repo into ``out_dir``: ``data/train.jsonl`` and ``README.md``."""
    info = read_run(run_dir)
    out = Path(out_dir)
    _require_empty(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows = pool_rows(run_dir)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (out / POOL_DATA_FILE).write_text(lines, encoding="utf-8")
    dataset_card(repo_id, model_repo_id, info, len(rows)).save(out / "README.md")
    return out


def default_pool_repo_id(repo_id: str) -> str:
    return f"{repo_id}-pool"


def stage_run(
    run_dir: str | Path,
    out_dir: str | Path,
    repo_id: str,
    with_pool: bool = False,
    pool_repo_id: str | None = None,
    eval_results: list[str | Path] = (),
) -> dict[str, Path]:
    """The dry run: ``out_dir/model`` (and ``out_dir/pool`` with ``with_pool``) hold exactly what would be uploaded."""
    validate_repo_id(repo_id)
    out = Path(out_dir)
    staged = {}
    pool_repo = (pool_repo_id or default_pool_repo_id(repo_id)) if with_pool else None
    if pool_repo:
        validate_repo_id(pool_repo)
    staged["model"] = stage_model(run_dir, out / "model", repo_id, eval_results, pool_repo)
    if pool_repo:
        staged["pool"] = stage_pool_dataset(run_dir, out / "pool", pool_repo, repo_id)
    return staged


def validate_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise PublishError(f"repo_id must look like USER/NAME, got {repo_id!r}")


def push_run(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    with_pool: bool = False,
    pool_repo_id: str | None = None,
    eval_results: list[str | Path] = (),
) -> dict[str, str]:
    """Stage and upload; returns {"model": url, "pool": url}. Raises PublishError before any upload when the run
    cannot be staged."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        staged = stage_run(run_dir, tmp, repo_id, with_pool, pool_repo_id, eval_results)
        repos = {"model": repo_id, "pool": pool_repo_id or default_pool_repo_id(repo_id)}
        hub = local_hub()
        if hub is not None:  # the stand-in Hub: the staged repos, copied
            urls = {}
            for kind, folder in staged.items():
                target = hub / repos[kind]
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder, target)
                urls[kind] = str(target)
            return urls
        api = HfApi()
        urls = {}
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=staged["model"], repo_id=repo_id, repo_type="model",
                          commit_message="opensir_lite: adapter and model card")  # fmt: skip
        urls["model"] = f"https://huggingface.co/{repo_id}"
        if "pool" in staged:
            pool_repo = repos["pool"]
            api.create_repo(pool_repo, private=private, exist_ok=True, repo_type="dataset")
            api.upload_folder(folder_path=staged["pool"], repo_id=pool_repo, repo_type="dataset",
                              commit_message="opensir_lite: generated problem pool")  # fmt: skip
            urls["pool"] = f"https://huggingface.co/datasets/{pool_repo}"
    return urls


def fetch_run(repo_id: str) -> Path:
    """A model repo pushed by :func:`push_run`, downloaded (or read from the stand-in Hub): its local folder, with
    the adapter at the top and the run's files in ``run/``. PublishError (one line) when it cannot be fetched."""
    validate_repo_id(repo_id)
    hub = local_hub()
    if hub is not None:
        if not (hub / repo_id).is_dir():
            raise PublishError(f"{repo_id} is not on the Hub ({hub})")
        return hub / repo_id
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, no access: one line
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise PublishError(f"cannot fetch {repo_id} from the Hub: {lines[0] if lines else type(e).__name__}") from None
