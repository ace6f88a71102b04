"""A recipe's memory and time on a GPU, on paper (``benchmarks/gpu_plan.py`` prints it; notebooks quote it).

Everything printed is an ESTIMATE from the model's shape, the recipe's batch shapes and the assumptions listed with
it (token lengths from the CPU runs, decoding efficiency, update efficiency); no GPU measured it. The first GPU run
checks it: the console's per-step line gives the real step time, ``torch.cuda.max_memory_allocated`` the peak.

Memory (GiB), per component: weights (NF4 at 0.5 bytes per projection parameter plus 3% for the quantisation
constants, embeddings and head in 16-bit; or 16-bit), the LoRA adapter in fp32 with its gradient and AdamW's states
(8-bit paged AdamW: 2 bytes a parameter), the merged rollout copy (16-bit) when the recipe samples from one, the KV
cache of the largest generate call (``max_generate_batch`` sequences at prompt + budget tokens), the decoder's fp32
logits (3 copies of batch x vocabulary), the update's activations (``per_device_train_batch_size`` rows; layer
inputs only with gradient checkpointing, else about 34 x hidden bytes per token and layer) and its fp32 logits
(rows x completion x vocabulary, 3 copies), and 0.8 GiB of CUDA context.

Time per optimiser step: generated tokens (rounds per step x the round's sequences x assumed mean lengths) at a
decoding rate bounded by memory bandwidth (weights read once per step of the batch), by a per-step overhead, and by
compute; plus the update's FLOPs (LoRA: forward 2NT, backward 2NT, checkpointing +2NT, TRL's extra scoring passes
+2NT each) at an assumed share of the GPU's peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from opensir_lite.config import resolve_recipe
from opensir_lite.device import DEVICES
from opensir_lite.memory import GIB, Shape

# Public configs of the models the recipes name (config.json on the Hub).
MODELS: dict[str, Shape] = {
    "Qwen/Qwen2.5-1.5B-Instruct": Shape(28, 1536, 12, 2, 8960, 151936, tied_embeddings=True),
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": Shape(24, 896, 14, 2, 4864, 151936, tied_embeddings=True),
    "embedded-qwen0.5b": Shape(24, 896, 14, 2, 4864, 151936, tied_embeddings=False),
    "meta-llama/Llama-3.2-3B-Instruct": Shape(28, 3072, 24, 8, 8192, 128256, tied_embeddings=True),
    "embedded": Shape(30, 576, 9, 3, 1536, 49152, tied_embeddings=True),
}


@dataclass(frozen=True)
class GPUSpeed:
    peak_tflops: float  # dense fp16/bf16 tensor-core peak
    bandwidth_gbs: float  # HBM/GDDR bandwidth


# The speeds of the GPUs the plan knows; their name, memory and bf16 support are device.DEVICES' facts.
GPU_SPEEDS = {
    "t4": GPUSpeed(65.0, 320.0),
    "l4": GPUSpeed(121.0, 300.0),
    "a100": GPUSpeed(312.0, 2039.0),
    "h100": GPUSpeed(989.0, 3350.0),
}
GPUS = tuple(GPU_SPEEDS)


@dataclass
class Assumptions:
    """What the estimate assumes; every one is printed with the table."""

    teacher_fill: float = 0.5  # mean teacher completion / its budget (CPU runs: 0.4-0.6)
    student_fill: float = 0.5  # mean student completion / its budget (CPU runs: 0.4-0.6)
    legal_share: float = 0.5  # teacher outputs that parse (the 0.5B coder with the worked example: 9 of 16)
    prompt_tokens: int = 600  # a teacher prompt with the worked example (a student prompt is shorter)
    bandwidth_efficiency: float = 0.5  # share of peak bandwidth a decoding step reaches
    step_overhead_ms: float = 25.0  # per decoding step in Python (transformers); vLLM: 3
    update_mfu: float = 0.25  # share of peak FLOPs the update reaches (QLoRA de-quantisation included)
    nf4_decode_factor: float = 2.0  # decoding from a 4-bit policy: bitsandbytes de-quantises every weight each step


def recipe_values(name: str, overrides: dict | None = None) -> dict:
    """The recipe's fields (``overrides`` as ``--set field=value`` gives them, numbers read as YAML)."""
    import yaml

    values = yaml.safe_load(resolve_recipe(name).read_text())
    values.setdefault("max_generate_batch", 0)
    values.update(overrides or {})
    return values


def plan(recipe: str, gpu_key: str, backend: str = "transformers", a: Assumptions | None = None,
         overrides: dict | None = None) -> dict:  # fmt: skip
    """The memory table and the time per step and per run of ``recipe`` on ``gpu_key``."""
    a = a or Assumptions()
    r, gpu, speed = recipe_values(recipe, overrides), DEVICES[gpu_key], GPU_SPEEDS[gpu_key]
    shape = MODELS[r["model_name_or_path"]]
    half = 2  # bytes of a 16-bit value
    four_bit, peft = bool(r.get("load_in_4bit", True)), bool(r.get("use_peft", True))
    G = r["num_generations"]
    teacher_seqs = r.get("num_teacher_groups", 1) * r.get("teacher_upscale_ratio", 4) * G
    student_seqs = int(teacher_seqs * a.legal_share) * G
    t_budget, s_budget = r.get("teacher_max_new_tokens", 1024), r.get("student_max_new_tokens", 1024)
    batch = r["max_generate_batch"] or max(teacher_seqs, student_seqs)
    seq_tokens = a.prompt_tokens + max(t_budget, s_budget)
    embed = shape.embedding_parameters
    weights = shape.linear_parameters * (0.5 * 1.03 if four_bit else half) + embed * half
    optim_bytes = 2 if "8bit" in str(r.get("optim", "")) else 8
    if peft:  # the adapter in fp32: weights, gradients, AdamW's two states
        adapter = shape.lora_parameters(r.get("lora_r", 16)) * (4 + 4 + optim_bytes)
    else:  # full fine-tuning in 16-bit: gradients and AdamW's fp32 states (the weights are counted above)
        adapter = shape.parameters * (half + optim_bytes)
    merged = shape.parameters * half if r.get("rollout_model") == "merged" else 0
    kv = batch * seq_tokens * shape.kv_bytes_per_token("bfloat16")
    decode_logits = 3 * batch * shape.vocab * 4
    rows, rows_step = (
        r["per_device_train_batch_size"],
        r["per_device_train_batch_size"] * r["gradient_accumulation_steps"],
    )
    row_tokens = a.prompt_tokens + max(t_budget, s_budget) * max(a.teacher_fill, a.student_fill)  # a trained row
    train_tokens = rows * row_tokens
    per_token_layer = shape.hidden * half * (1 if r.get("gradient_checkpointing") else 34)
    activations = train_tokens * shape.layers * per_token_layer + (train_tokens * shape.hidden * 34 * half
                                                                    if r.get("gradient_checkpointing") else 0)  # fmt: skip
    train_logits = 3 * rows * max(t_budget, s_budget) * a.student_fill * shape.vocab * 4
    vllm = 0.0
    if backend == "vllm_lora":
        vllm = r.get("vllm_gpu_memory_utilization", 0.3) * gpu.memory_gib * GIB
        merged, kv, decode_logits = 0, 0, 0  # sampling happens inside vLLM's share
    memory = {"weights": weights, "trained weights' grads and optimiser": adapter, "merged rollout copy": merged,
              "KV cache (largest generate call)": kv, "decoding logits": decode_logits, "vLLM's share": vllm,
              "update activations": activations, "update logits": train_logits, "CUDA context": 0.8 * GIB}  # fmt: skip
    total = sum(memory.values())
    # time per optimiser step
    rounds = rows_step // ((r.get("num_teacher_groups", 1) + r.get("num_student_groups", 1)) * G)
    tokens_round = teacher_seqs * t_budget * a.teacher_fill + student_seqs * s_budget * a.student_fill
    weight_bytes = shape.parameters * half
    mean_batch = max(1.0, batch / 2)  # the compacting decoder's batch shrinks as rows finish
    kv_read = mean_batch * seq_tokens / 2 * shape.kv_bytes_per_token("bfloat16")
    overhead = (3.0 if backend == "vllm_lora" else a.step_overhead_ms) / 1000
    step_s = max((weight_bytes + kv_read) / (speed.bandwidth_gbs * 1e9 * a.bandwidth_efficiency), overhead,
                 2 * shape.parameters * mean_batch / (speed.peak_tflops * 1e12 * a.update_mfu))  # fmt: skip
    if four_bit and r.get("rollout_model", "policy") != "merged" and backend != "vllm_lora":
        step_s *= a.nf4_decode_factor
    decode_rate = mean_batch / step_s
    generation_s = rounds * tokens_round / decode_rate
    trained = rows_step * row_tokens
    passes = 4 + (2 if r.get("gradient_checkpointing") else 0) + (2 if r.get("beta", 0.0) else 0)
    passes += 2 if backend == "vllm_lora" else 0  # TRL's scoring pass for the importance-sampling correction
    update_s = (
        passes * shape.parameters * trained / (speed.peak_tflops * 1e12 * a.update_mfu) * (1.3 if four_bit else 1)
    )
    steps = r.get("max_steps", 200)
    return {
        "recipe": recipe, "gpu": gpu.name, "backend": backend, "model": r["model_name_or_path"],
        "memory_gib": {k: round(v / GIB, 2) for k, v in memory.items()}, "total_gib": round(total / GIB, 2),
        "fits": total <= gpu.memory_gib * GIB, "gpu_memory_gib": gpu.memory_gib,
        "precision": "bf16" if gpu.native_bf16 else "fp16", "rounds_per_step": rounds,
        "generated_tokens_per_step": round(rounds * tokens_round), "decode_tokens_per_s": round(decode_rate),
        "generation_s_per_step": round(generation_s, 1), "update_s_per_step": round(update_s, 1),
        "step_s": round(generation_s + update_s, 1), "steps": steps,
        "run_hours": round(steps * (generation_s + update_s) / 3600, 2),
        "assumptions": asdict(a), "estimate": True,
    }  # fmt: skip


def claim_protocol(gpu_key: str, backend: str = "transformers") -> dict:
    """GPU hours of the claim's whole test (docs/learning.md): the seeded pool, gpu-qwen0.5b in two seeds, the
    gold control at the same budget, and the evaluations (base and three checkpoints: avg@4 on 250 GSM8K rows,
    greedy on 500, ASDiv and College Math greedy on 250 each)."""
    run = plan("gpu-qwen0.5b", gpu_key, backend)
    rate = run["decode_tokens_per_s"]
    seeding_tokens = 49_000 * (256 * 0.5 + 0.15 * 8 * 512 * 0.5)  # 1 accepted of 96 candidates on the CPU
    control_tokens = 200 * 16 * 4 * 8 * 512 * 0.5  # 16 rounds of 4 labelled problems x G per step
    eval_tokens = 4 * (250 * 4 * 300 + 500 * 300 + 250 * 300 + 250 * 700)
    parts = {
        "seeding (512 problems)": seeding_tokens / rate / 3600,
        "two self-play runs": 2 * run["run_hours"],
        "gold control": control_tokens / rate / 3600 + run["update_s_per_step"] * 200 / 3600 * 16 / 24,
        "evaluations": eval_tokens / rate / 3600,
    }
    return {"gpu": DEVICES[gpu_key].name, "backend": backend, "hours": {k: round(v, 1) for k, v in parts.items()},
            "total_hours": round(sum(parts.values()), 1), "estimate": True}  # fmt: skip


def format_plan(p: dict) -> str:
    lines = [f"ESTIMATE (not measured): {p['recipe']} on {p['gpu']} ({p['precision']}), {p['model']}, "
             f"sampling with {p['backend']}", "| memory | GiB |", "|---|---:|"]  # fmt: skip
    lines += [f"| {k} | {v:.2f} |" for k, v in p["memory_gib"].items() if v]
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    lines += [f"| **total** | **{p['total_gib']:.2f}** ({verdict} in {p['gpu_memory_gib']} GiB) |", "",
              "| time | value |", "|---|---:|", f"| rounds per optimiser step | {p['rounds_per_step']} |",
              f"| generated tokens per step | {p['generated_tokens_per_step']:,} |",
              f"| decoding rate, tokens/s | {p['decode_tokens_per_s']:,} |",
              f"| generation per step, s | {p['generation_s_per_step']} |",
              f"| update per step, s | {p['update_s_per_step']} |", f"| **step, s** | **{p['step_s']}** |",
              f"| run of {p['steps']} steps, hours | {p['run_hours']} |", "",
              "assumptions: " + ", ".join(f"{k} {v}" for k, v in p["assumptions"].items())]  # fmt: skip
    return "\n".join(lines)
