"""Checkpoints and run folders: completeness, resume resolution, metrics truncation, output-folder refusal, and the
real guarantees end to end: resume equivalence after SIGKILL, crash-safe pool writes, no token in the outputs."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from opensir_lite.checkpointing import (
    METRICS_FILE,
    SELFPLAY_STATE_FILE,
    TRAINER_STATE_FILE,
    RunFolderError,
    incomplete_reason,
    latest_complete_checkpoint,
    load_checkpoint_state,
    prepare_output_dir,
    resolve_resume,
    save_selfplay_checkpoint,
    truncate_steps,
)
from opensir_lite.pool import POOL_FILE, ProblemPool, ProblemRecord

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(folder: Path, pool: ProblemPool | None = None, trainer_state: str = '{"global_step": 1}'):
    pool = pool or ProblemPool.from_seed()
    save_selfplay_checkpoint(folder, pool, {"rng": {"state": 1}})
    (folder / TRAINER_STATE_FILE).write_text(trainer_state)
    return folder


# ---- completeness ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage,reason",
    [
        (None, None),  # everything present: complete
        ("rm trainer", "trainer_state.json is missing"),  # killed before the trainer's last file
        ("cut trainer", "trainer_state.json is truncated"),  # killed while writing it
        ("rm state", "selfplay_state.json is missing"),  # self-play files not written
        ("rm pool", "pool.jsonl is missing"),
    ],
)
def test_incomplete_reason(tmp_path, damage, reason):
    folder = make_checkpoint(tmp_path / "checkpoint-3")
    if damage == "rm trainer":
        (folder / TRAINER_STATE_FILE).unlink()
    elif damage == "cut trainer":
        (folder / TRAINER_STATE_FILE).write_text('{"global_st')
    elif damage == "rm state":
        (folder / SELFPLAY_STATE_FILE).unlink()
    elif damage == "rm pool":
        (folder / POOL_FILE).unlink()
    got = incomplete_reason(folder)
    assert got == reason if reason is None else got.startswith(reason)


def test_latest_complete_checkpoint_skips_half_written(tmp_path, caplog):
    make_checkpoint(tmp_path / "checkpoint-2")
    make_checkpoint(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-12").mkdir()  # a killed save: nothing in it yet
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    with caplog.at_level("WARNING"):
        assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # by step, not by name
    assert "checkpoint-12" in caplog.text and "ignoring half-written" in caplog.text


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, None),  # a new run
        ("false", None),
        ("true", "checkpoint-4"),  # the latest complete one
        ("latest", "checkpoint-4"),
        ("checkpoint-2", "checkpoint-2"),  # an explicit folder
    ],
)
def test_resolve_resume(tmp_path, value, expected):
    make_checkpoint(tmp_path / "checkpoint-2")
    make_checkpoint(tmp_path / "checkpoint-4")
    if value == "checkpoint-2":
        value = str(tmp_path / value)
    got = resolve_resume(value, tmp_path)
    assert (got.name if got else None) == expected


@pytest.mark.parametrize(
    "setup,value,message",
    [
        ("empty", "true", "no complete checkpoint"),  # nothing to resume
        ("half", "true", "no complete checkpoint"),  # only a half-written one
        ("half", "checkpoint-2", "not a complete checkpoint (trainer_state.json is missing)"),
        ("empty", "missing-folder", "not a complete checkpoint (not a folder)"),
    ],
)
def test_resolve_resume_errors(tmp_path, setup, value, message):
    if setup == "half":
        (tmp_path / "checkpoint-2").mkdir()
        save_selfplay_checkpoint(tmp_path / "checkpoint-2", ProblemPool.from_seed(), {})
    if value != "true":
        value = str(tmp_path / value)
    with pytest.raises(RunFolderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_resume(value, tmp_path)


def test_checkpoint_state_round_trip(tmp_path):
    pool = ProblemPool.from_seed()
    pool.add([ProblemRecord(id=1, problem="What is 2 + 2 * 3?", in_pool=True, step=1)], {1: np.ones(4)})
    pool.embeddings[0] = np.zeros(4, dtype=np.float32)
    rng = np.random.default_rng(7)
    rng.integers(0, 10, size=5)
    save_selfplay_checkpoint(tmp_path / "checkpoint-1", pool, {"rng": rng.bit_generator.state})
    (tmp_path / "checkpoint-1" / TRAINER_STATE_FILE).write_text("{}")
    loaded, state = load_checkpoint_state(tmp_path / "checkpoint-1")
    assert [r.problem for r in loaded.entries] == [r.problem for r in pool.entries]
    assert sorted(loaded.embeddings) == [0, 1]
    again = np.random.default_rng(0)
    again.bit_generator.state = state["rng"]
    assert again.integers(0, 1000, size=8).tolist() == rng.integers(0, 1000, size=8).tolist()  # same stream


def test_truncate_steps(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1, "a": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "cut by a cr')
    assert truncate_steps(path, 2) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert truncate_steps(tmp_path / "absent.jsonl", 2) == 0


@pytest.mark.parametrize(
    "existing",
    [METRICS_FILE, POOL_FILE, "checkpoint-5"],  # any trace of a run makes the folder taken
)
def test_prepare_output_dir_refuses_and_overwrites(tmp_path, existing):
    target = tmp_path / existing
    target.mkdir() if existing.startswith("checkpoint") else target.write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds another run"):
        prepare_output_dir(tmp_path, overwrite=False)
    assert target.exists()  # nothing touched
    prepare_output_dir(tmp_path, overwrite=True)
    assert not target.exists() and (tmp_path / "notes.txt").read_text() == "mine"  # only run files go
    prepare_output_dir(tmp_path / "new", overwrite=False)  # a new folder is fine


def test_embeddings_from_another_state_are_not_trusted(tmp_path):
    """A crash between the two renames can leave pool_embeddings.npz from a later state: ids whose problem text
    differs are dropped (recomputed later), matching ones kept."""
    pool = ProblemPool.from_seed()
    pool.add([ProblemRecord(id=1, problem="first version", in_pool=True)], {1: np.ones(3)})
    pool.embeddings[0] = np.zeros(3, dtype=np.float32)
    pool.save(tmp_path)
    npz = (tmp_path / "pool_embeddings.npz").read_bytes()
    other = ProblemPool.from_seed()
    other.add([ProblemRecord(id=1, problem="another problem with id 1", in_pool=True)])
    other.save(tmp_path)
    (tmp_path / "pool_embeddings.npz").write_bytes(npz)  # stale cache beside the newer pool.jsonl
    loaded = ProblemPool.from_jsonl(tmp_path / POOL_FILE)
    assert sorted(loaded.embeddings) == [0]


# ---- crash safety of pool writes ------------------------------------------------------------------------------
WRITER = """
import sys, numpy as np
from opensir_lite.pool import ProblemPool, ProblemRecord
pool = ProblemPool.from_seed()
target = sys.argv[1]
for i in range(1, 100000):
    pool.add([ProblemRecord(id=i, problem="problem %d " % i + "x" * 2000, in_pool=True, step=i)], {i: np.ones(384)})
    pool.embeddings.setdefault(0, np.ones(384, dtype=np.float32))
    pool.save(target)
"""


def test_sigkill_never_leaves_a_corrupt_pool(tmp_path):
    """A process saving a growing pool over and over is SIGKILLed at different moments: the pool file always
    loads, complete, with consistent embeddings."""
    for delay in (0.6, 0.9, 1.3, 1.7):
        out = tmp_path / f"run-{delay}"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], cwd=ROOT)
        deadline = time.time() + 60
        while not (out / POOL_FILE).exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pool = ProblemPool.from_jsonl(out / POOL_FILE)
        n = len(pool.history)
        assert n >= 2 and [r.id for r in pool.history] == list(range(n))  # a whole state, not a torn one
        assert all(r.problem.startswith(f"problem {r.id} ") for r in pool.history[1:])
        assert set(pool.embeddings) <= {r.id for r in pool.entries}


# ---- end to end through the real CLI --------------------------------------------------------------------------
FAKE_TOKEN = "hf_opensirFAKEtoken0123456789abcdef"


def write_recipe(path: Path, model_dir: Path) -> Path:
    path.write_text(
        f"""model_name_or_path: {model_dir}
load_in_4bit: false
use_bnb_nested_quant: false
lora_r: 8
lora_alpha: 16
embedder_name_or_path: embedded
max_steps: 4
save_steps: 2
num_generations: 4
num_teacher_groups: 1
num_student_groups: 1
teacher_upscale_ratio: 2
per_device_train_batch_size: 8
teacher_max_new_tokens: 48
student_max_new_tokens: 48
learning_rate: 5.0e-3
lr_scheduler_type: constant
beta: 0.0
gradient_checkpointing: false
report_to: none
disable_tqdm: true
seed: 0
"""
    )
    return path


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "scripts/train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **kwargs,
    )  # fmt: skip


def comparable_metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def timing(key: str) -> bool:  # wall-clock values differ between any two runs
        return key.startswith("time/") or "time" in key or "runtime" in key or "per_second" in key

    return [{k: v for k, v in r.items() if not timing(k)} for r in rows]


def pool_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_close(a, b, where):
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, fitted_model_dir):
    recipe = write_recipe(tmp_path / "recipe.yaml", fitted_model_dir)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    # A: four steps in one go.
    proc = run_cli(["--config", str(recipe), "--output_dir", str(straight)])
    log_a, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log_a[-3000:]

    # B: the same run, SIGKILLed as soon as checkpoint-2 is complete ...
    proc = run_cli(["--config", str(recipe), "--output_dir", str(resumed)])
    deadline = time.time() + 600
    while incomplete_reason(resumed / "checkpoint-2") is not None:
        assert proc.poll() is None and time.time() < deadline, "run B ended before checkpoint-2"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    log_b, _ = proc.communicate()
    assert incomplete_reason(resumed / "checkpoint-4") is not None, "killed before the end of the run"
    ProblemPool.from_jsonl(resumed / POOL_FILE)  # the live pool survived the kill
    # ... with a half-written checkpoint left beside it (a kill in the middle of a save),
    half = resumed / "checkpoint-3"
    shutil.copytree(resumed / "checkpoint-2", half, dirs_exist_ok=True)
    (half / TRAINER_STATE_FILE).write_text('{"global_step": 3, "log_hi')

    # ... then resumed from the latest complete checkpoint for the remaining two steps.
    proc = run_cli(["--config", str(recipe), "--output_dir", str(resumed), "--resume_from_checkpoint", "true"])
    log_c, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log_c[-3000:]
    assert "ignoring half-written checkpoint" in log_c and "checkpoint-3" in log_c

    a_pool, b_pool = pool_rows(straight / POOL_FILE), pool_rows(resumed / POOL_FILE)
    assert len(a_pool) > 1 + 8 * 3, "every step recorded its teacher outputs"
    assert [r["problem"] for r in a_pool] == [r["problem"] for r in b_pool]  # same entries, same order
    assert_close(a_pool, b_pool, "pool")
    a_metrics, b_metrics = comparable_metrics(straight / METRICS_FILE), comparable_metrics(resumed / METRICS_FILE)
    assert [m["step"] for m in b_metrics] == [1, 2, 3, 4]  # no duplicate rows from the killed step
    assert_close(a_metrics, b_metrics, "metrics")

    # Security: the token from the environment is nowhere in the outputs or the logs.
    for log in (log_a, log_b, log_c):
        assert FAKE_TOKEN not in log
    for path in [*straight.rglob("*"), *resumed.rglob("*")]:
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), f"token written to {path}"


def test_checkpoint_pool_is_written_before_the_trainer_files(tmp_path, fitted_model_dir, embedder):
    """hub_strategy pushes a checkpoint right after trainer_state.json: the pool must already be inside."""
    import torch

    from opensir_lite.config import PolicyModelConfig, SelfPlayConfig
    from opensir_lite.training import build_trainer, run_training

    torch.manual_seed(0)
    args = SelfPlayConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, num_generations=4, teacher_upscale_ratio=1,
        per_device_train_batch_size=8, teacher_max_new_tokens=32, student_max_new_tokens=32, beta=0.0,
        save_steps=1, report_to="none", disable_tqdm=True,
    )  # fmt: skip
    model_args = PolicyModelConfig(model_name_or_path=str(fitted_model_dir), load_in_4bit=False, lora_r=4)
    trainer, selfplay = build_trainer(args, model_args, embedder=embedder, quiet=True)
    run_training(trainer, selfplay, args)
    ckpt = tmp_path / "run" / "checkpoint-1"
    assert incomplete_reason(ckpt) is None
    written_last = (ckpt / TRAINER_STATE_FILE).stat().st_mtime_ns
    for name in (POOL_FILE, SELFPLAY_STATE_FILE, "pool_embeddings.npz"):
        assert (ckpt / name).stat().st_mtime_ns <= written_last, name
    assert "rng" in json.loads((ckpt / SELFPLAY_STATE_FILE).read_text())
