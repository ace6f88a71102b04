"""Run folders and checkpoints: what a self-play checkpoint holds besides TRL's files, which checkpoints are
complete, where a resume starts, and when an output folder may be written.

A checkpoint ``checkpoint-N`` is TRL's folder (adapter, optimizer, scheduler, RNG states, ``trainer_state.json``)
plus the pool (``pool.jsonl``, ``pool_embeddings.npz``) and ``selfplay_state.json`` (the self-play sampling RNG).
The self-play files are written, each atomically, *before* the trainer writes its files, and the trainer writes
``trainer_state.json`` last: a checkpoint is complete exactly when ``trainer_state.json`` parses and the self-play
files are present. A folder left half-written by a killed process is skipped on resume with a warning.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from opensir_lite.pool import POOL_FILE, ProblemPool, atomic_write_text, embeddings_path

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
STOP_RULE_FILE = "stop_rule.json"  # written when the pre-registered stop rule ends a run: its step and reason
EVIDENCE_FILE = "round_evidence.jsonl"  # per legal problem: its students' answers, vote classes and rewards
SELFPLAY_STATE_FILE = "selfplay_state.json"
RUN_CONFIG_FILE = "run_config.json"  # the resolved configuration, written when a run starts
REPORT_ARTEFACTS = ("training_curves.png", "explore")  # written at the end of a run (opensir_lite.curves)
TRAINER_STATE_FILE = "trainer_state.json"  # written last by the trainer: the completeness marker
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RESUME_LATEST = ("true", "latest", "last")  # --resume_from_checkpoint values meaning "the latest complete one"
RESUME_NONE = ("", "false", "none", "no")


class RunFolderError(RuntimeError):
    """An output folder or checkpoint that cannot be used as asked; the message names it and says why."""


# ---- writing ----------------------------------------------------------------------------------------------
def save_selfplay_checkpoint(folder: str | Path, pool: ProblemPool, state: dict[str, Any]) -> Path:
    """Write the pool and the self-play state into ``folder`` (each file atomically, the state file last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pool.save(folder)
    atomic_write_text(folder / SELFPLAY_STATE_FILE, json.dumps(state))
    return folder


# ---- reading ----------------------------------------------------------------------------------------------
def checkpoint_step(folder: str | Path) -> int | None:
    match = CHECKPOINT_RE.match(Path(folder).name)
    return int(match.group(1)) if match else None


def incomplete_reason(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete self-play checkpoint, or None when it is."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    for name in (TRAINER_STATE_FILE, SELFPLAY_STATE_FILE):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return f"{name} is truncated or not JSON"
    if not (folder / POOL_FILE).is_file():
        return f"{POOL_FILE} is missing"
    return None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of a run, by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are skipped with a warning."""
    for folder in reversed(list_checkpoints(output_dir)):
        reason = incomplete_reason(folder)
        if reason is None:
            return folder
        logger.warning("ignoring half-written checkpoint %s (%s)", folder, reason)
    return None


def resolve_resume(value: str | bool | None, output_dir: str | Path) -> Path | None:
    """``--resume_from_checkpoint``: None/false -> None; true/latest -> the latest complete checkpoint of
    ``output_dir``; a path -> that checkpoint, which must be complete."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in RESUME_NONE):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in RESUME_LATEST):
        latest = latest_complete_checkpoint(output_dir)
        if latest is None:
            raise RunFolderError(f"--resume_from_checkpoint {value}: no complete checkpoint in {output_dir}")
        return latest
    folder = Path(str(value))
    reason = incomplete_reason(folder)
    if reason is not None:
        raise RunFolderError(f"--resume_from_checkpoint {folder}: not a complete checkpoint ({reason})")
    return folder


def load_checkpoint_state(folder: str | Path, max_size: int | None = None) -> tuple[ProblemPool, dict[str, Any]]:
    """The pool (with its cached embeddings) and the self-play state saved in a checkpoint."""
    folder = Path(folder)
    pool = ProblemPool.from_jsonl(folder / POOL_FILE, max_size=max_size)
    state = json.loads((folder / SELFPLAY_STATE_FILE).read_text(encoding="utf-8"))
    return pool, state


def read_run_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a per-step run file (``metrics.jsonl``, ``round_evidence.jsonl``) that are JSON objects with a
    ``step``; other lines are skipped and counted in a warning (a run killed mid-write leaves at most one). The one
    reader of run files: curves, reports, cards, callbacks and benchmarks all read through it."""
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int | float):
                rows.append(row)
            else:
                bad += 1
    if bad:
        logger.warning("skipped %d unreadable line(s) in %s", bad, path)
    return rows


def truncate_steps(path: str | Path, last_step: int) -> int:
    """Keep the rows of a per-step JSONL file (``metrics.jsonl``, ``round_evidence.jsonl``) of steps up to
    ``last_step`` (dropping a line cut by a crash); returns the number of rows kept. Rewritten atomically."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(kept)


# ---- output folders ---------------------------------------------------------------------------------------
def run_artefacts(output_dir: str | Path) -> list[Path]:
    """Files and folders in ``output_dir`` that belong to a self-play run."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    names = (METRICS_FILE, EVIDENCE_FILE, POOL_FILE, SELFPLAY_STATE_FILE, RUN_CONFIG_FILE, *REPORT_ARTEFACTS)
    named = [output_dir / n for n in names]
    named.append(embeddings_path(output_dir / POOL_FILE))
    return [p for p in named if p.exists()] + list_checkpoints(output_dir)


def find_run_file(run_dir: str | Path, name: str, what: str) -> Path:
    """``RUN_DIR/name``, or ``run_dir`` itself when it is a ``.jsonl`` file; FileNotFoundError names what is missing."""
    path = Path(run_dir)
    found = path if path.suffix == ".jsonl" else path / name
    if not found.is_file():
        raise FileNotFoundError(f"no {what} at {found}")
    return found


def write_run_config(output_dir: str | Path, config: dict[str, Any]) -> Path:
    """``run_config.json``: what the run was configured with (the model card reads it)."""
    path = Path(output_dir) / RUN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config, indent=2, default=str) + "\n")
    return path


def prepare_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse to start a new run over an old one unless ``overwrite``; with it, remove the old run's files."""
    artefacts = run_artefacts(output_dir)
    if not artefacts:
        return
    if not overwrite:
        names = ", ".join(p.name for p in artefacts[:4]) + (", ..." if len(artefacts) > 4 else "")
        raise RunFolderError(
            f"output_dir {output_dir} holds another run ({names}): pass --resume_from_checkpoint true to continue "
            "it, --overwrite_output_dir true to replace it, or choose another --output_dir"
        )
    for path in artefacts:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    logger.warning("--overwrite_output_dir: removed the previous run in %s", output_dir)


_INDEXED_CPU_REGISTERED = False


def _indexed_cpu_storage(storage, location: str):
    """torch.load deserializer for the location "cpu:N" (None for every other location)."""
    return storage if location.startswith("cpu:") else None


def allow_indexed_cpu_locations() -> None:
    """Let ``torch.load`` accept ``map_location="cpu:0"``: with several CPU processes transformers resumes the
    optimizer state onto ``args.device``, which accelerate names ``cpu:0``, and torch only knows ``cpu``. Registered
    through torch's public ``register_package`` (idempotent)."""
    global _INDEXED_CPU_REGISTERED
    import torch.serialization as serialization

    if not _INDEXED_CPU_REGISTERED:
        serialization.register_package(30, lambda obj: None, _indexed_cpu_storage)
        _INDEXED_CPU_REGISTERED = True
