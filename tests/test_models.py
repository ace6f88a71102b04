"""Model resolution and dtype selection by hardware."""

import pytest
import torch

from opensir_lite.models import embedded_gguf_path, pick_dtype


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
