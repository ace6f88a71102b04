"""vLLM sampling through TRL's real GRPOTrainer, with its importance-sampling correction on, on the CPU without
starting an engine: TRL's own integration (``generation_backend: vllm``) with a stand-in for its
``vllm_generation`` that samples with the policy and returns log-probabilities as vLLM does, and the adapter-serving
backend (``vllm_lora``) with a scripted engine. The real engine runs in tests/test_vllm_e2e.py."""

from __future__ import annotations

import pytest
import torch
from test_training import lora_model_args, read_jsonl, tiny_run_args
from test_vllm_engine import ScriptedLLM

from opensir_lite.generation import SamplingSettings, generate
from opensir_lite.rollout import policy_logprobs
from opensir_lite.training import METRICS_FILE, build_trainer, run_training


class PolicyAsVLLM:
    """What TRL's ``VLLMGeneration`` is to the rollout (colocate mode): ``generate(prompt_ids, images, n)`` ->
    (prompt ids, completion ids, per-token [logprob] lists, None), sampling settings as attributes, and
    ``sync_weights``. It samples with the policy and returns the policy's log-probabilities plus ``noise``, as a
    vLLM copy of the policy would (its rounding)."""

    mode = "colocate"

    def __init__(self, trainer, noise: float = 0.01):
        self.trainer, self.noise, self.syncs = trainer, noise, 0
        self.temperature, self.top_p, self.top_k, self.min_p = 1.0, 1.0, 0, 0.0
        self.repetition_penalty, self.max_completion_length = 1.0, 16

    def sync_weights(self):
        self.syncs += 1

    def generate(self, prompts, images, num_generations):
        tok = self.trainer.processing_class
        policy = self.trainer.accelerator.unwrap_model(self.trainer.model)
        texts = [tok.decode(p) for p in prompts[::num_generations]]
        sampling = SamplingSettings(self.max_completion_length, self.temperature, self.top_p)
        outs = generate(policy, tok, texts, num_generations, sampling)
        lps = policy_logprobs(policy, [c.prompt_ids for c in outs], [c.completion_ids for c in outs], self.temperature,
                              tok.pad_token_id)  # fmt: skip
        noisy = [[[lp + self.noise * (-1) ** i] for i, lp in enumerate(row)] for row in lps]
        return [c.prompt_ids for c in outs], [c.completion_ids for c in outs], noisy, None


def test_trl_vllm_integration_trains_with_the_importance_sampling_correction(tmp_path, fitted_model_dir, embedder):
    """generation_backend vllm: the rounds' completions carry vLLM's log-probabilities to TRL, which weighs the loss
    by its importance-sampling ratio (on by default) and logs the gap; before, the rollout returned None and TRL's
    ``old_per_token_logps - sampling_per_token_logps`` raised a TypeError at the first step."""
    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", temperature=0.9)
    trainer, rollout = build_trainer(args, lora_model_args(fitted_model_dir), embedder=embedder, quiet=True)
    args.generation_backend = "vllm"  # what use_vllm turns on; TRL's engine replaced by the stand-in below
    trainer.use_vllm = True
    trainer.vllm_generation = PolicyAsVLLM(trainer)
    trainer._last_loaded_step = -1
    assert trainer.args.vllm_importance_sampling_correction  # TRL's default
    run_training(trainer, rollout, args)
    metrics = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        gap = m["sampling/sampling_logp_difference/mean"]
        assert 0.005 < gap < 0.05  # the stand-in's 0.01 (up to scoring in training mode)
        assert m["sampling/logp_gap_mean"] == pytest.approx(gap, abs=0.01)  # ours agrees with TRL's
        assert 0.5 < m["sampling/importance_sampling_ratio/mean"] < 2.0
    assert trainer.vllm_generation.syncs == 2  # TRL synced before each step's rounds


def test_vllm_lora_backend_serves_the_adapter_of_every_step(tmp_path, fitted_model_dir, tokenizer, embedder):
    """generation_backend vllm_lora with a 4-bit trainer: TRL's loop sees the backend as its vLLM integration
    (use_vllm on, so the correction weighs every step; its sync_weights hook publishes the adapter), the trainer was
    built without an engine of its own, every step's rounds sample from that step's adapter, and the run writes its
    files."""
    from opensir_lite.vllm_backend import VLLMLoRABackend
    from opensir_lite.vllm_engine import AdapterServer

    torch.manual_seed(0)
    args = tiny_run_args(tmp_path / "run", generation_backend="vllm_lora", temperature=0.9)
    assert args.use_vllm is False  # TRL must not start its own engine
    llm = ScriptedLLM(eos=tokenizer.eos_token_id)
    backend = VLLMLoRABackend(AdapterServer(llm, tmp_path / "adapters"), tokenizer, args, [tokenizer.eos_token_id])
    model_args = lora_model_args(fitted_model_dir)
    model_args.load_in_4bit = True
    trainer, rollout = build_trainer(args, model_args, embedder=embedder, quiet=True, vllm_lora=backend)
    assert trainer.use_vllm and trainer.vllm_generation is backend
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    run_training(trainer, rollout, args)
    assert backend.server.publishes == 2 and backend.server.published_step == 1  # the adapter after step 1 served
    used = {c["lora"].lora_int_id for c in llm.calls}
    assert used == {1, 2}  # step 1's rounds from adapter 1, step 2's from adapter 2
    metrics = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert all("sampling/sampling_logp_difference/mean" in m and "time/vllm_sync" in m for m in metrics)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapters").exists()  # the engine's adapters went with it
