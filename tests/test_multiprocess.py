"""Self-play on two processes (gloo on the CPU): one pool for all ranks, gathered metrics, and resume after SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "fixtures" / "ranks_harness.py"


def recipe(tmp_path, model_dir, **extra) -> Path:
    fields = dict(
        model_name_or_path=str(model_dir), load_in_4bit="false", use_bnb_nested_quant="false", lora_r=8, lora_alpha=16,
        lora_dropout=0.0, num_generations=4, num_teacher_groups=1, num_student_groups=1, teacher_upscale_ratio=2,
        per_device_train_batch_size=4, gradient_accumulation_steps=2, teacher_max_new_tokens=40,
        student_max_new_tokens=40, learning_rate=5.0e-3, beta=0.0, save_steps=2, report_to="none", seed=0,
        lr_scheduler_type="constant", write_plots="false", max_steps=4, disable_tqdm="true",
    )  # fmt: skip
    fields.update(extra)
    path = tmp_path / "recipe.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    return path


def free_port() -> int:
    with socket.socket() as s:  # torchrun's --master_port 0 leaves the workers waiting on port 0
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(dump: Path, config: Path, output_dir: Path, *args: str, wait: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    port = str(free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, str(HARNESS),
           str(dump), "--config", str(config), "--output_dir", str(output_dir), *args]  # fmt: skip
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def pools(dump: Path) -> tuple[bytes, bytes]:
    return tuple((dump / f"rank{r}" / "pool.jsonl").read_bytes() for r in (0, 1))


@pytest.mark.slow
def test_two_ranks_share_one_pool_and_resume_after_sigkill(tmp_path, fitted_model_dir):
    config = recipe(tmp_path, fitted_model_dir)
    straight = tmp_path / "straight"
    launch(tmp_path / "dump_straight", config, straight)
    rank0, rank1 = pools(tmp_path / "dump_straight")
    assert rank0 == rank1  # byte for byte: every rank holds the same pool
    assert (straight / "pool.jsonl").read_bytes() == rank0  # and rank 0 wrote it
    rows = [json.loads(line) for line in rank0.decode().splitlines()]
    teacher = [r for r in rows if r["source"] == "teacher"]
    assert len(teacher) == 4 * 2 * 8  # 4 steps x 2 ranks x (2 groups x G=4) teacher outputs
    assert len({r["id"] for r in rows}) == len(rows)  # ids from disjoint per-rank ranges
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:  # the metrics describe the gathered round of both ranks
        step_rows = [r for r in teacher if r["step"] == m["step"]]
        assert m["teacher_outputs"] == len(step_rows) == 16
        assert m["legal_problems"] == sum(r["legal"] for r in step_rows)

    # The same run, killed (SIGKILL) once checkpoint-2 is complete, then resumed: the same pool at the end.
    killed = tmp_path / "killed"
    proc = launch(tmp_path / "dump_killed", config, killed, wait=False)
    deadline = time.time() + 900
    while not (killed / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    launch(tmp_path / "dump_resumed", config, killed, "--resume_from_checkpoint", "true")
    resumed = pools(tmp_path / "dump_resumed")
    assert resumed[0] == resumed[1] == rank0


@pytest.mark.slow
def test_server_mode_hands_each_rank_its_own_completions(tmp_path):
    """TRL's vLLM server mode slices the broadcast answers by rank x prompt count: with unequal counts (1 and 3
    legal problems) rank 1 would get rank 0's completions and the padding's. VLLMSampler pads every rank to the
    largest count, so each rank gets exactly the completions of its own prompts (with their log-probabilities)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "fixtures" / "server_mode_harness.py"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank, expected in ((0, 4), (1, 12)):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["count"] == result["expected"] == expected, (rank, result)
        assert result["own"], (rank, result)
        assert result["logprobs"] == [[-0.1, -0.2]]
