"""Self-play rounds sampled by vLLM against the package's compacting decoder, on this machine:
python benchmarks/vllm_sampler.py --config smoke [--rounds 2] [--samplers transformers,vllm-merged,vllm-adapter]
    [--json docs/benchmark_vllm_smoke.json]

For a recipe's policy as its trainer holds it (QLoRA or LoRA, with a trained-looking adapter: LoRA B drawn at 0.02,
so every sampler computes the adapter), plays ``rounds`` self-play rounds from the recipe's initial pool with each
sampler, every sampler from the same pool and random streams:
  transformers  - the recipe's transformers sampler (rollout_model merged: the merged copy, compacting decoder)
  vllm-merged   - generation_backend vllm_lora, vllm_sync merged: the adapter merged into vLLM's weights each step
  vllm-adapter  - generation_backend vllm_lora, vllm_sync adapter: the adapter served with vLLM's LoRA kernels
Prints seconds per round, generated tokens and tokens/s of teacher and student sampling per sampler, the engine's
start-up apart (and the seconds to publish the policy, once per optimiser step), and the mean |log p| gap of vLLM's
samples to the trained policy; --json writes it all.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from opensir_lite.config import ConfigError
from opensir_lite.embedding import Embedder
from opensir_lite.models import ModelLoadError, attention_for, cpu_model_name, current_device_dtype
from opensir_lite.rollout import sampling_gap
from opensir_lite.runtime import parse_config
from opensir_lite.sampling import TransformersSampler, VLLMLoRASampler
from opensir_lite.training import MergedRolloutModel, TrainingSetupError, build_source, load_policy, rollout_dtype


@dataclass
class SamplerArguments:
    rounds: int = field(default=2, metadata={"help": "Self-play rounds per sampler."})
    samplers: str = field(default="transformers,vllm-merged,vllm-adapter", metadata={"help": "Samplers, in order."})
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})


def with_adapter(model, peft_config, scale: float = 0.02):
    """The policy as the trainer wraps it, its LoRA B drawn at ``scale`` (an adapter that has trained)."""
    from peft import get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(model, peft_config)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
            if param.requires_grad:
                param.data = param.data.float()
    return policy


def play(source, sample, rounds: int, gap_policy=None) -> list[dict]:
    """``rounds`` rounds of ``source`` with ``sample``; per round its times, tokens and (vLLM) log-probability gap."""
    rows = []
    for step in range(1, rounds + 1):
        rnd = source.play(sample, step, True)
        t, s = rnd.stats["time/teacher_generation"], rnd.stats["time/student_generation"]
        row = {"round": step, "seconds": round(rnd.stats["time/rollout"], 2), "teacher_s": round(t, 2),
               "student_s": round(s, 2), "tokens": int(rnd.stats["tokens_generated"]),
               "legal": int(rnd.stats["legal_problems"]),
               "tokens_per_s": round(rnd.stats["tokens_generated"] / (t + s), 1) if t + s else None}  # fmt: skip
        if gap_policy is not None and rnd.logprobs is not None:
            row["logp_gap"] = sampling_gap(gap_policy, rnd.rows, rnd.logprobs, source.args, sample.tokenizer).get(
                "sampling/logp_gap_mean"
            )
        rows.append(row)
    return rows


def main() -> int:
    try:
        train_args, model_args, bench = parse_config(extra=(SamplerArguments,))
        model, tokenizer, peft_config = load_policy(model_args, train_args)
        embedder = Embedder(train_args.embedder_name_or_path)
        start_source = build_source(train_args, embedder=embedder)
        start_source.embedder = None  # copied per sampler without it
        results: dict = {"recipe": train_args.recipe, "model": model_args.model_name_or_path, "cpu": cpu_model_name(),
                         "threads": torch.get_num_threads(), "rounds": bench.rounds, "samplers": {}}  # fmt: skip
        samplers = [s.strip() for s in bench.samplers.split(",") if s.strip()]
        engines = {}
        from opensir_lite.vllm_backend import VLLMLoRABackend

        for name in samplers:  # engines take the base before the adapter wraps it (as training does)
            if name.startswith("vllm-"):
                args = copy.deepcopy(train_args)
                args.generation_backend, args.vllm_sync = "vllm_lora", name.split("-", 1)[1]
                t0 = time.perf_counter()
                engines[name] = (VLLMLoRABackend.for_run(args, model_args, model, tokenizer), args)
                results["samplers"][name] = {"engine_start_s": round(time.perf_counter() - t0, 1)}
        policy = with_adapter(model, peft_config)
        for name in samplers:
            source = copy.deepcopy(start_source)
            source.embedder = embedder
            if name == "transformers":
                device, _ = current_device_dtype()
                merged = MergedRolloutModel(policy, attention_for(device, model_args.attn_implementation),
                                            rollout_dtype(train_args.rollout_dtype))  # fmt: skip
                merged.sync()
                rows = play(source, TransformersSampler(merged.model, tokenizer, train_args), bench.rounds)
                results["samplers"][name] = {"rounds": rows}
                del merged
            else:
                backend, args = engines[name]
                t0 = time.perf_counter()
                backend.server.publish(policy, 1)
                publish = time.perf_counter() - t0
                source.args = args
                sample = VLLMLoRASampler(backend.server, tokenizer, args, backend.stop_ids)
                rows = play(source, sample, bench.rounds, gap_policy=policy)
                results["samplers"][name].update(publish_s=round(publish, 2), rounds=rows)
                backend.close()
            print(format_row(name, results["samplers"][name]), flush=True)
    except (ConfigError, ModelLoadError, TrainingSetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for entry in results["samplers"].values():
        rows = entry["rounds"]
        entry["mean_round_s"] = round(float(np.mean([r["seconds"] for r in rows])), 1)
        seconds = sum(r["teacher_s"] + r["student_s"] for r in rows)
        entry["tokens_per_s"] = round(sum(r["tokens"] for r in rows) / seconds, 1) if seconds else None
    print(format_table(results))
    if bench.json:
        Path(bench.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {bench.json}")
    return 0


def format_row(name: str, entry: dict) -> str:
    rows = " ".join(f"[{r['seconds']}s {r['tokens']} tok {r['legal']} legal]" for r in entry["rounds"])
    return f"{name}: {rows}"


def format_table(results: dict) -> str:
    lines = [f"{results['recipe']} on {results['cpu']} ({results['threads']} threads), {results['rounds']} rounds",
             "| sampler | engine start s | publish s | s per round | tokens/s | mean logp gap |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, e in results["samplers"].items():
        gaps = [r["logp_gap"] for r in e["rounds"] if r.get("logp_gap") is not None]
        lines.append(f"| {name} | {e.get('engine_start_s', '-')} | {e.get('publish_s', '-')} | {e['mean_round_s']} | "
                     f"{e['tokens_per_s']} | {round(float(np.mean(gaps)), 3) if gaps else '-'} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
