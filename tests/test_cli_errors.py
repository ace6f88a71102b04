"""Bad input through the real command lines: one line naming the problem, a non-zero exit, no traceback, and
nothing written over existing results."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--config", "smoke"]


def setup_files(tmp: Path) -> dict[str, str]:
    (tmp / "unknown_key.yaml").write_text("max_steps: 2\nlearnin_rate: 0.1\n")
    (tmp / "bad_type.yaml").write_text("max_steps: two\n")
    (tmp / "not_yaml.yaml").write_text("max_steps: [1, 2\n")
    (tmp / "bad_pool.jsonl").write_text('{"problem": "What is 2 + 2?"}\n{"problem": "broken\n')
    taken = tmp / "taken"
    taken.mkdir()
    (taken / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (tmp / "no_bnb" / "bitsandbytes").mkdir(parents=True)
    (tmp / "no_bnb" / "bitsandbytes" / "__init__.py").write_text(
        "raise ImportError('no bitsandbytes backend for this hardware')\n"
    )
    (tmp / "bench").mkdir()
    (tmp / "bench" / "gsm8k.jsonl").write_text('{"question": "What is 1+1?", "answer": "#### 2"}\n')
    (tmp / "bench" / "bad.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n{"question": "x"}\n')
    return {"tmp": str(tmp), "taken": str(taken), "out": str(tmp / "out")}


CASES = [
    # (id, script, arguments, expected words in the error line)
    ("unknown recipe", "train", ["--config", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    ("unknown key", "train", ["--config", "{tmp}/unknown_key.yaml"], "unknown config key(s): learnin_rate"),
    ("YAML type", "train", ["--config", "{tmp}/bad_type.yaml"], "max_steps: expected an integer, got 'two'"),
    ("not YAML", "train", ["--config", "{tmp}/not_yaml.yaml"], "not valid YAML"),
    ("CLI type", "train", [*SMOKE, "--max_steps", "x"], "argument --max_steps"),
    ("unknown argument", "train", [*SMOKE, "--max_stepz", "3"], "unknown command-line argument(s)"),
    ("run in output_dir", "train", [*SMOKE, "--output_dir", "{taken}", "--overwrite_output_dir", "false"],
     "holds another run"),
    ("nothing to resume", "train", [*SMOKE, "--output_dir", "{out}", "--resume_from_checkpoint", "true"],
     "no complete checkpoint"),
    ("missing pool", "train", [*SMOKE, "--output_dir", "{out}", "--initial_pool_path", "{tmp}/none.jsonl"],
     "none.jsonl does not exist: make it first"),
    ("malformed pool", "train", [*SMOKE, "--output_dir", "{out}", "--initial_pool_path", "{tmp}/bad_pool.jsonl"],
     "bad_pool.jsonl:2: not valid JSON"),
    ("unknown model offline", "train",
     [*SMOKE, "--output_dir", "{out}", "--model_name_or_path", "no-such-org/no-such-model"],
     "cannot load model 'no-such-org/no-such-model'"),
    ("4-bit without bitsandbytes", "train", [*SMOKE, "--output_dir", "{out}"], "needs bitsandbytes"),
    ("token in config", "train", [*SMOKE, "--hub_token", "hf_secret"], "hub_token must not be set"),
    ("vLLM with a 4-bit base", "train", [*SMOKE, "--generation_backend", "vllm"], "cannot sync QLoRA weights to vLLM"),
    ("use_vllm means the vllm backend", "train", [*SMOKE, "--use_vllm", "true"], "use generation_backend vllm_lora"),
    ("vLLM weight sync on a CPU", "train", [*SMOKE, "--generation_backend", "vllm", "--load_in_4bit", "false"],
     "does not run on vLLM's CPU backend"),
    ("vLLM not installed", "train", [*SMOKE, "--generation_backend", "vllm_lora"],
     "vLLM is not installed here: make setup-vllm"),
    ("vLLM LoRA rank too small", "train", [*SMOKE, "--generation_backend", "vllm_lora", "--vllm_max_lora_rank", "8"],
     "vllm_max_lora_rank 8 is below lora_r 16"),
    ("vLLM cannot serve the modules", "train",
     [*SMOKE, "--generation_backend", "vllm_lora", "--lora_target_modules", "q_proj", "lm_head"],
     "vLLM cannot serve a LoRA on lm_head"),
    ("vLLM LoRA without an adapter", "train",
     [*SMOKE, "--generation_backend", "vllm_lora", "--use_peft", "false", "--load_in_4bit", "false"],
     "serves a LoRA adapter: set use_peft true"),
    ("unknown backend", "train", [*SMOKE, "--generation_backend", "sglang"], "generation_backend must be one of"),
    ("unknown benchmark", "evaluate", ["--benchmarks", "gsm9k", "--data_dir", "{tmp}/bench"], "unknown benchmark"),
    ("missing benchmark file", "evaluate", ["--benchmarks", "math500", "--data_dir", "{tmp}/bench"], "math500"),
    ("row without gold", "evaluate",
     ["--benchmarks", "{tmp}/bench/bad.jsonl", "--question_field", "question", "--answer_field", "answer"],
     "bad.jsonl:2: missing answer field"),
    ("evaluate model offline", "evaluate",
     ["--model", "no-such-org/no-such-model", "--benchmarks", "gsm8k", "--data_dir", "{tmp}/bench", "--limit", "1"],
     "cannot load model"),
    ("evaluate 4-bit without bitsandbytes", "evaluate",
     ["--benchmarks", "gsm8k", "--data_dir", "{tmp}/bench", "--load_in_4bit"], "needs bitsandbytes"),
    ("seed: unknown key", "seed_pool", ["--config", "{tmp}/unknown_key.yaml"], "unknown config key(s)"),
    ("seed: malformed output pool", "seed_pool", [*SMOKE, "--output", "{tmp}/bad_pool.jsonl"],
     "bad_pool.jsonl:2: not valid JSON"),
    ("unknown student label", "train", [*SMOKE, "--student_label", "gold"], "student_label must be one of"),
    ("label quality: unknown stage", "label_quality", [*SMOKE, "--stage", "everything", "--results_dir", "{out}"],
     "--stage must be all or some of samples, programs, votes, table, rules, testtime"),
    ("label quality: unknown source", "label_quality", [*SMOKE, "--source", "math", "--results_dir", "{out}"],
     "--source must be pool or asdiv"),
    ("label quality: unknown backend", "label_quality", [*SMOKE, "--backend", "sglang", "--results_dir", "{out}"],
     "--backend must be transformers or vllm"),
    ("label quality: test time without measured rows", "label_quality",
     ["--config", "learn-cpu-qwen", "--stage", "testtime", "--results_dir", "{out}"], "testtime: no measured row"),
    ("label quality: no initial pool", "label_quality", [*SMOKE, "--results_dir", "{out}"], "initial_pool_path"),
    ("label quality: pool checks missing", "label_quality",
     ["--config", "learn-cpu-qwen", "--pool_run", "{tmp}", "--pool_checks", "{tmp}/none.jsonl", "--results_dir", "{out}"],
     "--pool_checks: file not found"),
    ("label quality: no benchmark file", "label_quality",
     ["--config", "learn-cpu-qwen", "--data_dir", "{tmp}/none", "--results_dir", "{out}"], "gsm8k"),
    ("peer: merge without adapter", "peer_eval", ["--merge", "--output_dir", "{out}"], "--merge needs --adapter"),
    ("peer: repeats without sampling", "peer_eval", ["--repeats", "4", "--output_dir", "{out}"],
     "--repeats > 1 needs --temperature > 0"),
    ("peer: sampling with top_p out of range", "peer_eval",
     ["--repeats", "4", "--temperature", "0.7", "--top_p", "1.5", "--output_dir", "{out}"], "0 < top_p <= 1"),
    ("peer: adapter to merge missing", "peer_eval",
     ["--model", "embedded", "--adapter", "{tmp}/no_adapter", "--merge", "--output_dir", "{out}"],
     "cannot load adapter"),
]  # fmt: skip


# cases that need a fresh interpreter: a package hidden by PYTHONPATH, or the Hub's offline switch (read when
# huggingface_hub is first imported); the rest run the script as __main__ in this process (the same argv, exit code
# and stderr, without 5-7 s of imports each)
FRESH = ("bitsandbytes", "not installed", "offline")


def run_in_process(script: str, args: list[str], capsys, monkeypatch) -> tuple[int | None, str, str]:
    monkeypatch.setattr(sys, "argv", [f"scripts/{script}.py", *args])
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / f"{script}.py"), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_error(tmp_path, case, embedded_dir, capsys, monkeypatch):
    name, script, args, expected = case
    paths = setup_files(tmp_path)
    args = [a.format(**paths) for a in args]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    if any(word in name for word in FRESH):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if "bitsandbytes" in name:
            env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "no_bnb"), env.get("PYTHONPATH", "")])
        if "not installed" in name:  # whether or not this environment has vLLM (make setup-vllm installs it)
            hidden = str(ROOT / "tests" / "fixtures" / "no_vllm")
            env["PYTHONPATH"] = os.pathsep.join([hidden, env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, f"scripts/{script}.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        code, stdout, stderr = run_in_process(script, args, capsys, monkeypatch)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code not in (0, None), stdout[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert expected in errors[0], errors[0]
    assert "usage:" not in stderr  # one line, not argparse's usage text
    for path, content in before.items():  # nothing existing was written over
        assert path.read_bytes() == content, f"{path} changed"
